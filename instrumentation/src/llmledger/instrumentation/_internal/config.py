"""The instrumentation's settings: one typed object read from the environment at ``instrument()``.

Every variable is documented in ``docs/configuration.md``. Invalid values are reported
together, as one warning, and the default is used: instrumentation never refuses to start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

logger = logging.getLogger("llmledger.instrumentation")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class InstrumentationConfig:
    capture_content: bool = False
    """Record prompts and completions (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``)."""
    stream_usage: bool = True
    """Ask chat/completions streams for a usage chunk (``LLMLEDGER_STREAM_USAGE``)."""
    estimate_tokens: bool = True
    """Count tokens with tiktoken when the API reports none (``LLMLEDGER_ESTIMATE_TOKENS``)."""
    metrics_tenant: bool = False
    """Add ``tenant.id`` to metric attributes (``LLMLEDGER_METRICS_TENANT``); off: cardinality."""
    console: bool = False
    """Print one line per call to stderr (``LLMLEDGER_CONSOLE``), for local development."""
    price_file: str | None = None
    """A TOML file of extra or overriding prices (``LLMLEDGER_PRICE_FILE``)."""
    azure_deployments: Mapping[str, str] = field(default_factory=dict[str, str])
    """Azure deployment → model (``LLMLEDGER_AZURE_DEPLOYMENTS=deploy1=gpt-4o,deploy2=gpt-4o-mini``)."""
    estimate_wait_s: float = 30.0
    """How long a call the API reported no usage for may wait for the tokenizer to load
    before it is recorded without counts (``LLMLEDGER_ESTIMATE_WAIT``, seconds)."""
    auto_fallback: bool = True
    """Flag a call that follows a failed call in the same parent span (``LLMLEDGER_AUTO_FALLBACK``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InstrumentationConfig:
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name)
            if raw is None:
                return default
            value = raw.strip().lower()
            if value in _TRUE or value in {"span_only", "span_and_event", "event_only"}:
                return True
            if value in _FALSE or value == "no_content":
                return False
            problems.append(f"{name}={raw!r} is not a boolean (use true or false)")
            return default

        deployments = azure_deployments(env, problems)

        estimate_wait_s = cls.estimate_wait_s
        raw_wait = env.get("LLMLEDGER_ESTIMATE_WAIT")
        if raw_wait is not None:
            try:
                estimate_wait_s = float(raw_wait)
                if not 0 <= estimate_wait_s < float("inf"):
                    raise ValueError(raw_wait)
            except ValueError:
                problems.append(f"LLMLEDGER_ESTIMATE_WAIT={raw_wait!r} is not a number of seconds >= 0")
                estimate_wait_s = cls.estimate_wait_s

        config = cls(
            capture_content=flag("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", False),
            stream_usage=flag("LLMLEDGER_STREAM_USAGE", True),
            estimate_tokens=flag("LLMLEDGER_ESTIMATE_TOKENS", True),
            metrics_tenant=flag("LLMLEDGER_METRICS_TENANT", False),
            console=flag("LLMLEDGER_CONSOLE", False),
            price_file=env.get("LLMLEDGER_PRICE_FILE") or None,
            azure_deployments=deployments,
            auto_fallback=flag("LLMLEDGER_AUTO_FALLBACK", True),
            estimate_wait_s=estimate_wait_s,
        )
        if problems:
            logger.warning("llmledger: ignoring invalid settings (defaults used): %s", "; ".join(problems))
        return config


def azure_deployments(env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """Azure deployment → model from ``LLMLEDGER_AZURE_DEPLOYMENTS``; what is not ``deployment=model``
    is left out and described in ``problems``."""
    deployments: dict[str, str] = {}
    raw = env.get("LLMLEDGER_AZURE_DEPLOYMENTS", "")
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, model = item.partition("=")
        if not sep or not name.strip() or not model.strip():
            problems.append(f"LLMLEDGER_AZURE_DEPLOYMENTS: {item!r} is not deployment=model")
            continue
        deployments[name.strip()] = model.strip()
    return deployments
