"""Who a call is billed to, and whether it is a fallback: scopes carried in the OpenTelemetry context.

Attribution lives in the OTel context (a ``ContextVar`` underneath), so it follows asyncio
tasks automatically, follows threads wherever the context is carried (``contextvars.copy_context``,
``opentelemetry-instrumentation-threading``, :func:`llmledger.instrumentation.propagate_context`),
and is visible to every instrumented call below the scope.

Precedence, highest first: the innermost :func:`attribution` scope, then W3C Baggage entries
with the same keys, then the resource's ``tenant.id``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from opentelemetry import baggage, context
from opentelemetry import trace as trace_api
from opentelemetry.context import Context

from llmledger.instrumentation._internal import attributes as A

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.finish import CallOutcome

P = ParamSpec("P")
R = TypeVar("R")

_ATTRIBUTION_KEY = context.create_key("llmledger.attribution")
_FALLBACK_KEY = context.create_key("llmledger.fallback_scope")
_TOTALS_KEY = context.create_key("llmledger.usage_totals")

# The keyword arguments of ``attribution(...)`` and the span attributes they become, in the
# order spans carry them; W3C Baggage entries use the attribute names as keys.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("tenant_id", A.TENANT_ID),
    ("user_id", A.USER_ID),
    ("session_id", A.SESSION_ID),
    ("conversation_id", A.CONVERSATION_ID),
    ("feature", A.FEATURE),
)
BAGGAGE_KEYS: tuple[str, ...] = tuple(key for _, key in _FIELDS)


class _Scope:
    """Enter/exit plumbing shared by the public scopes: context manager, decorator, sync and async."""

    def _value(self) -> tuple[object, object]:  # (key, value) to attach
        raise NotImplementedError

    def __init__(self) -> None:
        self._tokens: list[object] = []

    def __enter__(self) -> Any:
        key, value = self._value()
        self._tokens.append(context.attach(context.set_value(cast(str, key), value)))
        return value

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context.detach(cast(Any, self._tokens.pop()))

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fresh(self) -> _Scope:
        raise NotImplementedError

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Use the scope as a decorator: a fresh scope around every call of ``func``."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self._fresh():
                    return await func(*args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return func(*args, **kwargs)

        return wrapper


class attribution(_Scope):
    """Bill every LLM call inside to a tenant, user, session, conversation and feature.

    Works as ``with``/``async with`` block and as a decorator of sync and async functions.
    Nested scopes override only the fields they set::

        with attribution(tenant_id="acme", user_id="u-42"):
            with attribution(feature="lead_scoring"):
                client.chat.completions.create(...)   # tenant acme, user u-42, lead_scoring
    """

    def __init__(
        self,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        conversation_id: str | None = None,
        feature: str | None = None,
    ) -> None:
        super().__init__()
        # The scope holds its fields as the attributes they become: merging scopes and reading
        # them per call are then plain dict operations.
        own: dict[str, str] = {}
        values = (tenant_id, user_id, session_id, conversation_id, feature)
        for (name, key), value in zip(_FIELDS, values, strict=True):
            if value is None:
                continue
            if not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance] - untyped callers
                raise TypeError(f"attribution({name}=...) must be a str, got {type(value).__name__}")
            own[key] = value
        self._own: Mapping[str, str] = own

    def _value(self) -> tuple[object, object]:
        # Fields this scope leaves unset are inherited from the one outside it.
        outer = context.get_value(_ATTRIBUTION_KEY)
        if not isinstance(outer, dict) or not outer:
            return _ATTRIBUTION_KEY, self._own
        merged = {**cast(Mapping[str, str], outer), **self._own}
        return _ATTRIBUTION_KEY, {key: merged[key] for key in BAGGAGE_KEYS if key in merged}

    def _fresh(self) -> _Scope:
        fresh = attribution()
        fresh._own = self._own
        return fresh


def current_attribution(resource_tenant: str | None = None, ctx: Context | None = None) -> dict[str, str]:
    """The attribution attributes for a call made in ``ctx`` (default: now): scope > baggage > resource."""
    if ctx is None:
        ctx = context.get_current()
    attrs: dict[str, str] = {}
    if resource_tenant is not None:
        attrs[A.TENANT_ID] = resource_tenant
    entries = baggage.get_all(ctx)
    if entries:
        for key in BAGGAGE_KEYS:
            value = entries.get(key)
            if isinstance(value, str) and value:
                attrs[key] = value
    scope = ctx.get(_ATTRIBUTION_KEY)
    if scope:
        attrs.update(cast(Mapping[str, str], scope))
    return attrs


# --- fallbacks -------------------------------------------------------------------------


# (failures before this attempt, the model of the last failed attempt, its error type)
FallbackOrigin = tuple[int, str | None, str | None]


class FallbackState:
    """Attempts in one explicit fallback scope: each failed call makes the next one a fallback."""

    __slots__ = ("_lock", "failures", "last_error", "last_model")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.last_model: str | None = None
        self.last_error: str | None = None

    def begin(self) -> FallbackOrigin:
        with self._lock:
            return self.failures, self.last_model, self.last_error

    def finish(self, failed: bool, model: str | None = None, error_type: str | None = None) -> None:
        if failed:
            with self._lock:
                self.failures += 1
                self.last_model, self.last_error = model, error_type


class fallbacks(_Scope):
    """Number the attempts of one logical request: every call after a failed one is a fallback.

    ``llmledger.fallback.attempt`` is the number of failed calls before this one in the scope;
    ``llmledger.fallback`` is true when that is more than zero::

        with fallbacks():
            for model in ("gpt-4.1", "gpt-4.1-mini"):
                try:
                    return client.chat.completions.create(model=model, ...)
                except openai.APIError:
                    continue
    """

    def _value(self) -> tuple[object, object]:
        return _FALLBACK_KEY, FallbackState()

    def _fresh(self) -> _Scope:
        return fallbacks()


def current_fallback_scope(ctx: Context | None = None) -> FallbackState | None:
    value = (context.get_current() if ctx is None else ctx).get(_FALLBACK_KEY)
    return value if isinstance(value, FallbackState) else None


class AutoFallbackTracker:
    """The automatic rule, for code that retries without a scope.

    Within one parent span, an LLM call that follows a failed LLM call for the same feature
    is a fallback; its attempt number counts the consecutive failures before it. A success
    resets the count. Retries inside the SDK happen within one call and are not fallbacks.
    Calls without an active parent span are never flagged automatically.
    """

    def __init__(self, max_parents: int = 4096) -> None:
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[int, int, str | None], FallbackOrigin] = OrderedDict()
        self._max = max_parents

    @staticmethod
    def key(feature: str | None, ctx: Context | None = None) -> tuple[int, int, str | None] | None:
        parent = trace_api.get_current_span(ctx).get_span_context()
        if not parent.is_valid:
            return None
        return (parent.trace_id, parent.span_id, feature)

    def attempt(self, key: tuple[int, int, str | None]) -> FallbackOrigin:
        with self._lock:
            return self._failures.get(key, _NO_FAILURES)

    def finish(
        self,
        key: tuple[int, int, str | None],
        failed: bool,
        model: str | None = None,
        error_type: str | None = None,
    ) -> None:
        with self._lock:
            if failed:
                count = self._failures.get(key, _NO_FAILURES)[0]
                self._failures[key] = (count + 1, model, error_type)
                self._failures.move_to_end(key)
                while len(self._failures) > self._max:
                    self._failures.popitem(last=False)
            else:
                self._failures.pop(key, None)


_NO_FAILURES: FallbackOrigin = (0, None, None)


# --- per-request totals ------------------------------------------------------------------


@dataclass(slots=True)
class UsageTotals:
    """Tokens and cost of every LLM call finished inside a :func:`usage_totals` block so far.

    ``cost_usd`` sums the priced calls exactly; ``unpriced_calls`` counts the calls whose
    price is unknown, so a total is never silently short. :meth:`as_dict` writes the cost as
    ``None`` when no call could be priced at all (unknown, not $0). ``pending_calls`` counts
    calls that ended but wait for the token estimator to load (the first calls of a process
    whose API reported no usage); they are added, with their estimate, as soon as it is ready.
    """

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0
    estimated_calls: int = 0
    priced_calls: int = 0
    pending_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, outcome: CallOutcome) -> None:
        """Count one finished call in."""
        usage = outcome.usage
        with self._lock:
            self.pending_calls -= outcome.held
            self.calls += 1
            self.errors += outcome.error_type is not None
            if usage is not None:
                self.input_tokens += usage.input_tokens or 0
                self.cached_input_tokens += usage.cached_input_tokens
                self.cache_write_input_tokens += usage.cache_write_tokens
                self.output_tokens += usage.output_tokens or 0
                self.reasoning_tokens += usage.reasoning_tokens
                self.estimated_calls += usage.estimated
            if outcome.cost is not None:
                self.cost_usd += outcome.cost.total
                self.priced_calls += 1
            elif outcome.priced:
                self.unpriced_calls += 1

    def hold(self) -> None:
        """A call ended and waits for its estimate; ``add`` of its held outcome follows."""
        with self._lock:
            self.pending_calls += 1

    def snapshot(self) -> UsageTotals:
        with self._lock:
            return replace(self, _lock=threading.Lock())

    def as_dict(self) -> dict[str, int | str | None]:
        """A JSON-ready view, e.g. for an API response's ``token_usage``: the cost as a plain
        decimal string with every significant digit (``"0.0000006"``, never ``"6E-7"``), or
        ``None`` when calls were made and none could be priced."""
        snap = self.snapshot()
        unknown = snap.unpriced_calls and not snap.priced_calls
        return {
            "calls": snap.calls,
            "errors": snap.errors,
            "input_tokens": snap.input_tokens,
            "cached_input_tokens": snap.cached_input_tokens,
            "cache_write_input_tokens": snap.cache_write_input_tokens,
            "output_tokens": snap.output_tokens,
            "reasoning_tokens": snap.reasoning_tokens,
            "cost_usd": None if unknown else _plain_decimal(snap.cost_usd),
            "unpriced_calls": snap.unpriced_calls,
            "estimated_calls": snap.estimated_calls,
            "pending_calls": snap.pending_calls,
        }


class usage_totals(_Scope):
    """Collect the tokens and cost of all LLM calls made inside the block (threads and tasks too)::

        with usage_totals() as totals:
            answer = run_agent(question)
        return {"answer": answer, "token_usage": totals.as_dict()}

    Nested blocks each see the calls made inside them.
    """

    def _value(self) -> tuple[object, object]:
        chain = (*current_totals(), UsageTotals())
        return _TOTALS_KEY, chain

    def __enter__(self) -> UsageTotals:
        chain = super().__enter__()
        return cast(tuple[UsageTotals, ...], chain)[-1]

    async def __aenter__(self) -> UsageTotals:
        return self.__enter__()

    def _fresh(self) -> _Scope:
        return usage_totals()


def _plain_decimal(amount: Decimal) -> str:
    # 'f' never rounds and never writes an exponent; the padding zeros of a scale go.
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def current_totals(ctx: Context | None = None) -> tuple[UsageTotals, ...]:
    value = (context.get_current() if ctx is None else ctx).get(_TOTALS_KEY)
    return cast(tuple[UsageTotals, ...], value) if isinstance(value, tuple) else ()


def propagate_context(func: Callable[P, R]) -> Callable[P, R]:
    """Bind ``func`` to the current context (attribution, totals, fallbacks, the active span),
    for work handed to threads that do not carry context themselves::

        pool.submit(propagate_context(score_lead), lead)
    """
    import contextvars

    ctx = contextvars.copy_context()

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(func, *args, **kwargs)

    return run
