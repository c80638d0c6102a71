"""The instrumentation's settings, read one way: the environment, then what code passes.

Two objects hold them: :class:`InstrumentationConfig` (what the instrumentor records for each
call) and :class:`BufferSettings` (the ``llmledger_otlp`` exporter's disk buffer). Each is
built by its ``from_env``: the variables first, then the keyword arguments code passes —
``LLMLedgerInstrumentor().instrument(console=True)``, ``BufferedOTLPSpanExporter(max_bytes=...)``
— which win. An invalid variable is named in one warning per object and its default used:
the instrumentation never refuses to start inside an app. Every variable is documented in
docs/configuration.md, precedence included.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["BufferSettings", "InstrumentationConfig", "azure_deployments"]

logger = logging.getLogger("llmledger.instrumentation")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
_SIZE: Final = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNITS: Final = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


class _Variables:
    """The environment as settings read it: each invalid value noted, its default used."""

    def __init__(self, env: Mapping[str, str] | None) -> None:
        self.env = os.environ if env is None else env
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None

    def flag(
        self, name: str, default: bool, *, on: frozenset[str] = _TRUE, off: frozenset[str] = _FALSE
    ) -> bool:
        raw = self.env.get(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in on:
            return True
        if value in off:
            return False
        self.problems.append(f"{name}={raw!r} is not a boolean (use true or false)")
        return default

    def seconds(self, name: str, default: float, *, zero: bool) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if (value >= 0 if zero else value > 0) and value < float("inf"):
            return value
        self.problems.append(
            f"{name}={raw!r} is not a number of seconds >= 0"
            if zero
            else f"{name}={raw!r} is not a positive number"
        )
        return default

    def size(self, name: str, default: int) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        match = _SIZE.match(raw)
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _UNITS[match.group(2)]
        self.problems.append(f"{name}={raw!r} is not a size (bytes, KiB, MiB, GiB)")
        return default

    def report(self, who: str) -> None:
        if self.problems:
            logger.warning("%s: ignoring invalid settings (defaults used): %s", who, "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class InstrumentationConfig:
    """What the instrumentor records; ``from_env`` reads it, keyword arguments override."""

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
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> InstrumentationConfig:
        """The environment's settings (``os.environ`` unless ``environ``), then ``overrides`` from code."""
        variables = _Variables(environ)
        defaults = cls()
        deployments = azure_deployments(variables.env, variables.problems)
        config = cls(
            # The semantic conventions' capture modes count as on, `no_content` as off.
            capture_content=variables.flag(
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
                defaults.capture_content,
                on=_TRUE | {"span_only", "span_and_event", "event_only"},
                off=_FALSE | {"no_content"},
            ),
            stream_usage=variables.flag("LLMLEDGER_STREAM_USAGE", defaults.stream_usage),
            estimate_tokens=variables.flag("LLMLEDGER_ESTIMATE_TOKENS", defaults.estimate_tokens),
            metrics_tenant=variables.flag("LLMLEDGER_METRICS_TENANT", defaults.metrics_tenant),
            console=variables.flag("LLMLEDGER_CONSOLE", defaults.console),
            price_file=variables.env.get("LLMLEDGER_PRICE_FILE") or None,
            azure_deployments=deployments,
            auto_fallback=variables.flag("LLMLEDGER_AUTO_FALLBACK", defaults.auto_fallback),
            estimate_wait_s=variables.seconds("LLMLEDGER_ESTIMATE_WAIT", defaults.estimate_wait_s, zero=True),
        )
        variables.report("llmledger")
        return dataclasses.replace(config, **overrides) if overrides else config  # pyright: ignore[reportArgumentType]


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


_DEFAULT_MAX_BYTES: Final = 128 * 1024 * 1024
_DEFAULT_MAX_AGE: Final = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """Where the ``llmledger_otlp`` buffer lives and how large and old it may grow (``LLMLEDGER_OTLP_BUFFER_*``)."""

    directory: Path
    max_bytes: int = _DEFAULT_MAX_BYTES
    max_age_seconds: float = _DEFAULT_MAX_AGE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> BufferSettings:
        """The environment's settings (``os.environ`` unless ``env``), then ``overrides`` from code."""
        variables = _Variables(env)
        directory = variables.text("LLMLEDGER_OTLP_BUFFER_DIR")
        if directory:
            path = Path(directory).expanduser()
        else:
            data_home = variables.env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            service = variables.text("OTEL_SERVICE_NAME") or "unknown_service"
            # One directory per service: processes of the same app adopt each other's leftovers,
            # other apps (other endpoints, other tokens) never do.
            path = (
                Path(data_home) / "llmledger" / "otlp-buffer" / re.sub(r"[^A-Za-z0-9._-]", "_", service)[:100]
            )
        settings = cls(
            path,
            variables.size("LLMLEDGER_OTLP_BUFFER_MAX_BYTES", _DEFAULT_MAX_BYTES),
            variables.seconds("LLMLEDGER_OTLP_BUFFER_MAX_AGE_SECONDS", _DEFAULT_MAX_AGE, zero=False),
        )
        variables.report("llmledger_otlp")
        return dataclasses.replace(settings, **overrides) if overrides else settings  # pyright: ignore[reportArgumentType]
