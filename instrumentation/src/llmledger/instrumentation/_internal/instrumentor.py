"""``LLMLedgerInstrumentor``: wraps the openai SDK's methods from one table, and unwraps them."""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # pyright: ignore[reportMissingTypeStubs]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper  # pyright: ignore[reportUnknownVariableType]

from llmledger.instrumentation._internal import apis
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation._internal.errors import internal_error
from llmledger.instrumentation._internal.estimate import TOKEN_COUNTER
from llmledger.instrumentation._internal.patch import (
    Wrapper,
    async_retrieve_wrapper,
    async_wrapper,
    sync_retrieve_wrapper,
    sync_wrapper,
)
from llmledger.instrumentation._internal.telemetry import Telemetry
from llmledger.instrumentation.package import _instruments  # pyright: ignore[reportPrivateUsage]
from llmledger.instrumentation.version import __version__

logger = logging.getLogger("llmledger.instrumentation")

_CHAT = "openai.resources.chat.completions.completions"
_RESPONSES = "openai.resources.responses.responses"
_BETA_RESPONSES = "openai.resources.beta.responses.responses"  # client.beta.responses (newer SDKs)
_COMPLETIONS = "openai.resources.completions"
_EMBEDDINGS = "openai.resources.embeddings"


class Target(NamedTuple):
    module: str
    cls: str
    method: str
    api: apis.ApiSpec | None  # None: responses.retrieve (bills finished background responses)


# One table drives instrument and uninstrument. The `.stream()` helpers call `create`
# and `parse` calls the transport directly, so each API call passes exactly one wrapper.
TARGETS: tuple[Target, ...] = (
    Target(_CHAT, "Completions", "create", apis.CHAT_COMPLETIONS),
    Target(_CHAT, "AsyncCompletions", "create", apis.CHAT_COMPLETIONS),
    Target(_CHAT, "Completions", "parse", apis.CHAT_COMPLETIONS),
    Target(_CHAT, "AsyncCompletions", "parse", apis.CHAT_COMPLETIONS),
    Target(_RESPONSES, "Responses", "create", apis.RESPONSES),
    Target(_RESPONSES, "AsyncResponses", "create", apis.RESPONSES),
    Target(_RESPONSES, "Responses", "parse", apis.RESPONSES),
    Target(_RESPONSES, "AsyncResponses", "parse", apis.RESPONSES),
    Target(_RESPONSES, "Responses", "retrieve", None),
    Target(_RESPONSES, "AsyncResponses", "retrieve", None),
    Target(_BETA_RESPONSES, "Responses", "create", apis.RESPONSES),
    Target(_BETA_RESPONSES, "AsyncResponses", "create", apis.RESPONSES),
    Target(_BETA_RESPONSES, "Responses", "retrieve", None),
    Target(_BETA_RESPONSES, "AsyncResponses", "retrieve", None),
    Target(_COMPLETIONS, "Completions", "create", apis.COMPLETIONS),
    Target(_COMPLETIONS, "AsyncCompletions", "create", apis.COMPLETIONS),
    Target(_EMBEDDINGS, "Embeddings", "create", apis.EMBEDDINGS),
    Target(_EMBEDDINGS, "AsyncEmbeddings", "create", apis.EMBEDDINGS),
)


def _wrapper_for(tel: Telemetry, target: Target) -> Wrapper:
    # By class, not by inspecting the method: the SDK's overload decorators hide `async def`.
    is_async = target.cls.startswith("Async")
    if target.api is None:
        return async_retrieve_wrapper(tel) if is_async else sync_retrieve_wrapper(tel)
    return async_wrapper(tel, target.api) if is_async else sync_wrapper(tel, target.api)


def _resource_tenant(tracer_provider: Any) -> str | None:
    resource = getattr(tracer_provider, "resource", None)
    value = getattr(resource, "attributes", {}).get("tenant.id")
    return value if isinstance(value, str) and value else None


def _load_pricer(config: InstrumentationConfig) -> Any:
    try:
        from llmledger.instrumentation._internal.pricing import PriceBook
    except ImportError:
        return None
    return PriceBook.from_config(price_file=config.price_file, azure_deployments=config.azure_deployments)


class LLMLedgerInstrumentor(BaseInstrumentor):  # pyright: ignore[reportUntypedBaseClass]
    """Instruments the openai SDK (sync and async; chat completions, Responses, completions, embeddings).

    Loaded by ``opentelemetry-instrument`` through the ``opentelemetry_instrumentor``
    entry point ``llmledger``, or by hand::

        LLMLedgerInstrumentor().instrument(tracer_provider=..., meter_provider=..., console=True)

    Any :class:`InstrumentationConfig` field may be passed by name; it wins over its variable.
    """

    _telemetry: Telemetry | None = None
    _wrapped: list[Target]
    _restore_provider: Callable[[], None] | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        # Must never raise: a broken instrumentation may not take the app down with it.
        try:
            self._instrument_unsafe(**kwargs)
        except Exception as exc:
            internal_error("instrument", exc)

    def _instrument_unsafe(self, **kwargs: Any) -> None:
        # Settings given here win over the environment's (docs/configuration.md, precedence).
        settings = {name: kwargs[name] for name in _SETTING_NAMES if name in kwargs}
        config = kwargs.get("config")
        if isinstance(config, InstrumentationConfig):
            config = dataclasses.replace(config, **settings)
        else:
            config = InstrumentationConfig.from_env(**settings)
        tracer_provider = kwargs.get("tracer_provider") or trace_api.get_tracer_provider()
        meter_provider = kwargs.get("meter_provider") or metrics_api.get_meter_provider()
        tracer = trace_api.get_tracer(
            "llmledger.instrumentation",
            __version__,
            tracer_provider,
            schema_url="https://opentelemetry.io/schemas/1.37.0",
        )
        meter = metrics_api.get_meter(
            "llmledger.instrumentation",
            __version__,
            meter_provider,
            schema_url="https://opentelemetry.io/schemas/1.37.0",
        )
        pricer = kwargs.get("pricer", _MISSING)
        if pricer is _MISSING:
            try:
                pricer = _load_pricer(config)
            except Exception as exc:  # a bad price file must not stop instrumentation
                from llmledger.instrumentation.pricing import refused_price_file

                logger.error("%s (calls will not be priced)", refused_price_file(exc))
                pricer = None
        tel = Telemetry(tracer, meter, config, pricer, _resource_tenant(tracer_provider))
        if config.estimate_tokens:
            # Loaded now, in the background, so that the first calls a process makes (often
            # its only ones: a CLI job, a serverless function) find the tokenizer ready. The
            # encoding of every current model; older ones load on first need.
            TOKEN_COUNTER.preload(PRELOADED_ENCODING)
            _wait_at_exit_once()
        self._restore_provider = _flush_waits_for_held_calls(tracer_provider)
        self._telemetry = tel
        self._wrapped = []
        for target in TARGETS:
            try:
                module = importlib.import_module(target.module)
                cls = getattr(module, target.cls)
                getattr(cls, target.method)
            except (ImportError, AttributeError):
                logger.debug("llmledger: %s.%s.%s not found; not instrumented", *target[:3])
                continue
            wrap_function_wrapper(cls, target.method, _wrapper_for(tel, target))
            self._wrapped.append(target)

    def _uninstrument(self, **kwargs: Any) -> None:
        tel = self._telemetry
        if tel is not None:
            # Wrappers captured earlier (e.g. by a cached `with_raw_response`) become pass-through.
            tel.active = False
        for target in getattr(self, "_wrapped", []):
            try:
                cls = getattr(importlib.import_module(target.module), target.cls)
                unwrap(cls, target.method)
            except Exception as exc:
                internal_error("uninstrument", exc)
        self._wrapped = []
        self._telemetry = None
        restore = getattr(self, "_restore_provider", None)
        if restore is not None:
            self._restore_provider = None
            restore()


_MISSING = object()
_SETTING_NAMES = frozenset(field.name for field in dataclasses.fields(InstrumentationConfig))
PRELOADED_ENCODING = "o200k_base"


def wait_for_pending_calls(timeout: float = 30.0) -> bool:
    """Wait until every call held for the token estimator has been recorded, at most ``timeout`` s.

    Calls the API reported no usage for that end while tiktoken is still loading keep their
    span open until they can be counted (at most ``LLMLEDGER_ESTIMATE_WAIT`` seconds each).
    The tracer provider's ``force_flush()`` and ``shutdown()`` and process exit wait for
    them already; call this before flushing a provider llmledger was not given (one set
    after ``instrument()``). True when none is left.
    """
    return TOKEN_COUNTER.wait_pending(timeout)


_exit_hook_registered = False


def _wait_at_exit_once() -> None:
    # atexit runs last-registered first: this runs before the shutdown of any tracer provider
    # created before instrument(), so held spans still reach its exporter.
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_wait_at_exit)


def _wait_at_exit() -> None:
    TOKEN_COUNTER.wait_pending(None)  # each held call's own time limit bounds this


def _flush_waits_for_held_calls(provider: Any) -> Callable[[], None] | None:
    """Make ``provider.force_flush()`` and ``shutdown()`` first wait for held calls (on this instance only).

    A serverless handler flushes its provider before the function freezes: a call still held
    for the tokenizer must be in that flush. Returns what undoes it.
    """
    original_flush = getattr(provider, "force_flush", None)
    original_shutdown = getattr(provider, "shutdown", None)
    instance_attrs = getattr(provider, "__dict__", None)
    if not callable(original_flush) or not callable(original_shutdown) or instance_attrs is None:
        return None  # the API's no-op or proxy provider: nothing is exported through it
    if "force_flush" in instance_attrs or "shutdown" in instance_attrs:
        return None  # hooked already by another instrument() of this provider

    def force_flush(timeout_millis: int = 30_000) -> bool:
        started = time.monotonic()
        held_done = TOKEN_COUNTER.wait_pending(timeout_millis / 1000)
        left_ms = max(0, timeout_millis - int((time.monotonic() - started) * 1000))
        return bool(original_flush(left_ms)) and held_done

    def shutdown(*args: Any, **kwargs: Any) -> Any:
        TOKEN_COUNTER.wait_pending(None)
        return original_shutdown(*args, **kwargs)

    provider.force_flush = force_flush
    provider.shutdown = shutdown

    def restore() -> None:
        for name, hook in (("force_flush", force_flush), ("shutdown", shutdown)):
            if instance_attrs.get(name) is hook:
                del instance_attrs[name]

    return restore
