"""One instrumented API call from start to end: span, metrics, cost, attribution, totals.

``Telemetry`` holds what lives as long as the instrumentation (tracer, meters, prices,
settings); ``LLMCall`` is one call's state. Sync and async wrappers, stream proxies and raw
response proxies all drive the same ``LLMCall``: ``response()`` or ``chunk()`` as data
arrives, ``fail()`` on the app's exception, and ``end()`` exactly once.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from llmledger.instrumentation._internal import attributes as A
from llmledger.instrumentation._internal.apis import ApiSpec, AttrValue, ResponseFacts, messages_json
from llmledger.instrumentation._internal.attribution import (
    AutoFallbackTracker,
    FallbackState,
    current_attribution,
    current_fallback_scope,
    current_totals,
)
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation._internal.errors import internal_error
from llmledger.instrumentation._internal.estimate import TOKEN_COUNTER
from llmledger.instrumentation._internal.provider import Endpoint
from llmledger.instrumentation._internal.usage import TokenUsage

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.pricing import CallCost


def cost_attributes(cost: CallCost) -> dict[str, AttrValue]:
    """The span attributes that carry a call's cost."""
    # Floats only because the span wire format demands them: a price's few significant
    # digits survive the float's shortest repr, which the ClickHouse tables parse back into
    # Decimal exactly.
    return {
        A.USAGE_COST: float(cost.total),
        A.COST_INPUT: float(cost.input),
        A.COST_OUTPUT: float(cost.output),
        A.COST_SOURCE: cost.source,
    }


class Pricer(Protocol):
    def price_call(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        *,
        service_tier: str | None = None,
        at: datetime | None = None,
    ) -> CallCost | None: ...


class BackgroundResponses:
    """Ids of background responses created here and not billed yet (bounded)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._pending: OrderedDict[str, tuple[Any, dict[str, str]]] = OrderedDict()
        self._limit = limit

    def remember(self, response_id: str, model: Any, attribution: dict[str, str]) -> None:
        self._pending[response_id] = (model, attribution)
        while len(self._pending) > self._limit:
            self._pending.popitem(last=False)

    def pending(self, response_id: Any) -> tuple[Any, dict[str, str]] | None:
        return self._pending.get(response_id) if isinstance(response_id, str) else None

    def done(self, response_id: str) -> None:
        self._pending.pop(response_id, None)


class Telemetry:
    """Everything one ``instrument()`` call set up; wrappers close over it."""

    def __init__(
        self,
        tracer: Tracer,
        meter: Meter,
        config: InstrumentationConfig,
        pricer: Pricer | None,
        resource_tenant: str | None,
    ) -> None:
        self.tracer = tracer
        self.config = config
        self.pricer = pricer
        self.resource_tenant = resource_tenant
        self.active = True
        self.background = BackgroundResponses()
        self.auto_fallbacks = AutoFallbackTracker()
        self.token_usage = meter.create_histogram(
            A.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(A.TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            A.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        self.time_to_first_chunk = meter.create_histogram(
            A.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        # The cost counter is a sum nobody reads per call: keep exact running totals per
        # attribute set here (a Decimal add) and hand them to the SDK when it collects,
        # instead of one SDK measurement per call.
        self._cost_lock = threading.Lock()
        self._cost_totals: dict[tuple[Any, ...], tuple[dict[str, AttrValue], list[Decimal]]] = {}
        meter.create_observable_counter(
            A.METRIC_COST,
            callbacks=[self._observe_cost],
            unit="USD",
            description="Cost of GenAI calls in US dollars (priced calls only)",
        )
        self._static: dict[tuple[str, Endpoint], dict[str, AttrValue]] = {}
        self._metric_attrs: dict[tuple[Any, ...], MetricAttributes] = {}
        self.unpriced = meter.create_counter(
            "llmledger.client.unpriced_calls",
            unit="{call}",
            description="Calls whose price is unknown (no cost recorded)",
        )
        self.unestimated = meter.create_counter(
            A.METRIC_UNESTIMATED_CALLS,
            unit="{call}",
            description=(
                "Calls the API reported no usage for that were recorded without token counts "
                "because the tokenizer could not be loaded in time"
            ),
        )

    def static_attributes(self, api: ApiSpec, endpoint: Endpoint) -> dict[str, AttrValue]:
        """A fresh dict of the attributes every call of ``api`` on ``endpoint`` starts with."""
        key = (api.api_type, endpoint)
        base: dict[str, AttrValue] | None = self._static.get(key)
        if base is None:
            base = {
                A.OPERATION_NAME: api.operation,
                A.PROVIDER_NAME: endpoint.provider,
                A.OPENAI_API_TYPE: api.api_type,
            }
            if endpoint.address is not None:
                base[A.SERVER_ADDRESS] = endpoint.address
            if endpoint.port is not None:
                base[A.SERVER_PORT] = endpoint.port
            if len(self._static) < _CACHE_LIMIT:
                self._static[key] = base
        return dict(base)

    def metric_attributes(self, call: LLMCall, response_model: str | None) -> MetricAttributes:
        """The call's metric attribute sets (plain, input tokens, output tokens), cached per distinct set."""
        tenant = call.attribution.get(A.TENANT_ID) if self.config.metrics_tenant else None
        key = (call.api.operation, call.endpoint, call.request_model, response_model, call.error_type, tenant)
        sets = self._metric_attrs.get(key)
        if sets is None:
            attrs: dict[str, AttrValue] = {
                A.OPERATION_NAME: call.api.operation,
                A.PROVIDER_NAME: call.endpoint.provider,
            }
            if call.request_model is not None:
                attrs[A.REQUEST_MODEL] = call.request_model
            if response_model is not None:
                attrs[A.RESPONSE_MODEL] = response_model
            if call.endpoint.address is not None:
                attrs[A.SERVER_ADDRESS] = call.endpoint.address
            if call.endpoint.port is not None:
                attrs[A.SERVER_PORT] = call.endpoint.port
            if call.error_type is not None:
                attrs[A.ERROR_TYPE] = call.error_type
            if tenant is not None:
                attrs[A.TENANT_ID] = tenant
            sets = MetricAttributes(
                key, attrs, {**attrs, A.TOKEN_TYPE: "input"}, {**attrs, A.TOKEN_TYPE: "output"}
            )
            if len(self._metric_attrs) >= _CACHE_LIMIT:
                self._metric_attrs.clear()
            self._metric_attrs[key] = sets
        return sets

    def add_cost(self, sets: MetricAttributes, amount: Decimal) -> None:
        with self._cost_lock:
            entry = self._cost_totals.get(sets.key)
            if entry is None:
                if len(self._cost_totals) >= _COST_SERIES_LIMIT:
                    # Past the limit, like the SDK's cardinality limit: one overflow series.
                    key: tuple[Any, ...] = ("otel.metric.overflow",)
                    entry = self._cost_totals.get(key)
                    if entry is None:
                        entry = self._cost_totals[key] = ({"otel.metric.overflow": True}, [Decimal(0)])
                else:
                    entry = self._cost_totals[sets.key] = (sets.call, [Decimal(0)])
            entry[1][0] += amount

    def _observe_cost(self, options: CallbackOptions) -> list[Observation]:
        with self._cost_lock:
            totals = [(attrs, total[0]) for attrs, total in self._cost_totals.values()]
        return [Observation(float(total), attrs) for attrs, total in totals]


_COST_SERIES_LIMIT = 2000


class MetricAttributes(NamedTuple):
    key: tuple[Any, ...]
    call: dict[str, AttrValue]
    input_tokens: dict[str, AttrValue]
    output_tokens: dict[str, AttrValue]


_FIRST_ATTEMPT = (0, None, None)

# Bounds the per-attribute-set caches (model names come from requests).
_CACHE_LIMIT = 4096


class LLMCall:
    """The state of one API call; every path ends it through ``end()``, exactly once."""

    __slots__ = (
        "_auto_key",
        "_context_token",
        "_ended",
        "_fallback_scope",
        "_totals",
        "api",
        "attribution",
        "endpoint",
        "error_type",
        "facts",
        "first_chunk_ns",
        "hide_usage_chunk",
        "kwargs",
        "request_model",
        "span",
        "start_ns",
        "stream",
        "tel",
    )

    def __init__(
        self,
        tel: Telemetry,
        api: ApiSpec,
        endpoint: Endpoint,
        kwargs: dict[str, Any],
        *,
        attribution: dict[str, str] | None = None,
        start: tuple[int, int] | None = None,
    ) -> None:
        self.tel = tel
        self.api = api
        self.endpoint = endpoint
        self.kwargs = kwargs
        self.facts = ResponseFacts()
        self.error_type: str | None = None
        self.first_chunk_ns = 0
        self._ended = False
        self.hide_usage_chunk = False
        self.stream = stream = kwargs.get("stream") is True
        model = kwargs.get("model")
        self.request_model: str | None = model if isinstance(model, str) else None
        ctx = context_api.get_current()

        attrs = tel.static_attributes(api, endpoint)
        attrs[A.REQUEST_STREAM] = stream
        if self.request_model is not None:
            attrs[A.REQUEST_MODEL] = self.request_model
        api.add_request_attributes(kwargs, attrs)
        conversation = kwargs.get("conversation")
        if conversation is not None:
            if isinstance(conversation, str):
                attrs[A.CONVERSATION_ID] = conversation
            elif isinstance(conversation, Mapping) and isinstance(conversation.get("id"), str):  # pyright: ignore[reportUnknownMemberType]
                attrs[A.CONVERSATION_ID] = conversation["id"]  # pyright: ignore[reportUnknownArgumentType]
        self.attribution = (
            current_attribution(tel.resource_tenant, ctx) if attribution is None else attribution
        )
        attrs.update(self.attribution)
        # Totals are those of the block the call was made in, even if its stream ends later.
        self._totals = current_totals(ctx)

        # Fallback numbering: the explicit scope wins over the automatic rule.
        self._fallback_scope: FallbackState | None = current_fallback_scope(ctx)
        self._auto_key: tuple[int, int, str | None] | None = None
        origin = _FIRST_ATTEMPT
        if self._fallback_scope is not None:
            origin = self._fallback_scope.begin()
        elif tel.config.auto_fallback:
            self._auto_key = tel.auto_fallbacks.key(self.attribution.get(A.FEATURE), ctx)
            if self._auto_key is not None:
                origin = tel.auto_fallbacks.attempt(self._auto_key)
        attempt, from_model, from_error = origin
        attrs[A.FALLBACK] = attempt > 0
        attrs[A.FALLBACK_ATTEMPT] = attempt
        if attempt:
            # What this fallback replaced, so "which model falls back to which" needs no join.
            if from_model is not None:
                attrs[A.FALLBACK_FROM_MODEL] = from_model
            if from_error is not None:
                attrs[A.FALLBACK_FROM_ERROR] = from_error

        if tel.config.capture_content:
            content = messages_json(api.input_messages(kwargs))
            if content is not None:
                attrs[A.INPUT_MESSAGES] = content

        name = f"{api.operation} {self.request_model}" if self.request_model else api.operation
        wall_start, perf_start = start if start is not None else (None, None)
        self.span = tel.tracer.start_span(
            name, context=ctx, kind=SpanKind.CLIENT, attributes=attrs, start_time=wall_start
        )
        self._context_token: object | None = None
        self.start_ns = perf_start if perf_start is not None else time.perf_counter_ns()

    @staticmethod
    def now() -> tuple[int, int]:
        """A start instant for a call whose span is created after the fact (wall ns, perf ns)."""
        return time.time_ns(), time.perf_counter_ns()

    # -- the call itself runs with the span current, so HTTP-level spans nest under it --

    def activate(self) -> None:
        self._context_token = context_api.attach(trace_api.set_span_in_context(self.span))

    def deactivate(self) -> None:
        token = self._context_token
        if token is not None:
            self._context_token = None
            context_api.detach(token)  # pyright: ignore[reportArgumentType]

    # -- data --

    def response(self, response: Any) -> None:
        try:
            self.api.apply_response(self.facts, response, self.tel.config.capture_content)
        except Exception as exc:
            internal_error(f"{self.api.api_type}.response", exc)

    def chunk(self, chunk: Any) -> bool:
        """Fold a stream item in; True when the app must not see it (our usage-only chunk).

        For ``next(stream)``; iterating a stream inlines this (the hot path).
        """
        if self.first_chunk_ns == 0:
            self.first_chunk_ns = time.perf_counter_ns()
        try:
            usage_only = self.api.apply_chunk(self.facts, chunk)
        except Exception as exc:
            internal_error(f"{self.api.api_type}.chunk", exc)
            return False
        return usage_only and self.hide_usage_chunk

    def fail(self, exc: BaseException) -> None:
        self.error_type = _error_type(exc)
        if self.span.is_recording():
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, str(exc)[:1024] or self.error_type))

    @property
    def ended(self) -> bool:
        return self._ended

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        end_ns = time.perf_counter_ns()
        encoding: str | None = None
        try:
            # Fallback numbering is settled now, not when a held call finishes: the app's
            # next call must see this one's outcome.
            if self._fallback_scope is not None:
                self._fallback_scope.finish(self.error_type is not None, self.request_model, self.error_type)
            elif self._auto_key is not None:
                self.tel.auto_fallbacks.finish(
                    self._auto_key, self.error_type is not None, self.request_model, self.error_type
                )
            encoding = self._encoding_to_wait_for()
        except Exception as exc:
            internal_error("end", exc)
        if encoding is not None and self._hold(encoding, end_ns):
            return
        try:
            self._finish(end_ns, estimate=True)
        except Exception as exc:
            internal_error("end", exc)
        finally:
            self.span.end()

    def _wants_estimate(self) -> bool:
        """The API reported no usage for a call seen to finish: count its tokens locally.

        Not a call closed unread, not a failed one, not a queued background response
        (billed when it completes). A Responses stream cut off before its terminal event
        is still ``in_progress``: what it streamed was generated, so it is counted.
        """
        facts = self.facts
        usage = facts.usage
        return (
            (usage is None or not usage.known)
            and (facts.response_id is not None or facts.response_model is not None)
            and (
                facts.status not in ("queued", "in_progress")
                or (self.stream and self.kwargs.get("background") is not True)
            )
            and self.error_type is None
            and self.tel.config.estimate_tokens
        )

    def _encoding_to_wait_for(self) -> str | None:
        if not self._wants_estimate():
            return None
        name = TOKEN_COUNTER.encoding_name(self.facts.response_model or self.request_model)
        return None if TOKEN_COUNTER.is_ready(name) else name

    def _hold(self, encoding: str, end_ns: int) -> bool:
        """Leave the span open until the encoding is ready (the app goes on meanwhile); True once held."""
        wall_end_ns = time.time_ns()
        try:
            for totals in self._totals:
                totals.hold()
            TOKEN_COUNTER.when_ready(
                encoding,
                functools.partial(self._finish_held, end_ns, wall_end_ns),
                self.tel.config.estimate_wait_s,
            )
        except Exception as exc:
            internal_error("end.hold", exc)
            return False
        return True

    def _finish_held(self, end_ns: int, wall_end_ns: int, ready: bool) -> None:
        """Finish a held call with the times it really ended at; without counts if not ``ready``."""
        try:
            self._finish(end_ns, estimate=ready, held=True)
            if not ready:
                self.tel.unestimated.add(1, self.tel.metric_attributes(self, self.facts.response_model).call)
        except Exception as exc:
            internal_error("end", exc)
        finally:
            self.span.end(end_time=wall_end_ns)

    def _finish(self, end_ns: int, *, estimate: bool, held: bool = False) -> None:
        tel = self.tel
        facts = self.facts
        failed = self.error_type is not None
        usage = facts.usage
        if estimate and self._wants_estimate():
            usage = self.api.estimate(
                TOKEN_COUNTER, facts.response_model or self.request_model, self.kwargs, facts
            )
        model = facts.response_model or self.request_model

        cost: CallCost | None = None
        priced = False
        if usage is not None and usage.known and model and tel.pricer is not None:
            priced = True
            try:
                cost = tel.pricer.price_call(
                    self.endpoint.provider, model, usage, service_tier=facts.service_tier
                )
            except Exception as exc:  # a wrong price must never stop a request
                internal_error("pricing", exc)

        span = self.span
        if span.is_recording():
            attrs: dict[str, AttrValue] = {}
            if facts.response_model is not None:
                attrs[A.RESPONSE_MODEL] = facts.response_model
            if facts.response_id is not None:
                attrs[A.RESPONSE_ID] = facts.response_id
            if facts.finish_reasons:
                attrs[A.RESPONSE_FINISH_REASONS] = tuple(facts.finish_reasons)
            if facts.service_tier is not None:
                attrs[A.OPENAI_RESPONSE_SERVICE_TIER] = facts.service_tier
            if facts.system_fingerprint is not None:
                attrs[A.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = facts.system_fingerprint
            if self.first_chunk_ns:
                attrs[A.RESPONSE_TIME_TO_FIRST_CHUNK] = (self.first_chunk_ns - self.start_ns) / 1e9
            if usage is not None:
                if usage.input_tokens is not None:
                    attrs[A.USAGE_INPUT_TOKENS] = usage.input_tokens
                if usage.output_tokens is not None:
                    attrs[A.USAGE_OUTPUT_TOKENS] = usage.output_tokens
                if usage.cached_input_tokens:
                    attrs[A.USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
                if usage.cache_write_tokens:
                    attrs[A.USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
                if usage.reasoning_tokens:
                    attrs[A.USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
                if usage.estimated:
                    attrs[A.USAGE_ESTIMATED] = True
            if cost is not None:
                attrs.update(cost_attributes(cost))
            if self.error_type is not None:
                attrs[A.ERROR_TYPE] = self.error_type
            if tel.config.capture_content and facts.output_messages is None and facts.output_parts:
                facts.output_messages = [{"role": "assistant", "content": "".join(facts.output_parts)}]
            if tel.config.capture_content and facts.output_messages is not None:
                content = messages_json(facts.output_messages)
                if content is not None:
                    attrs[A.OUTPUT_MESSAGES] = content
            span.set_attributes(attrs)

        # Metrics: low-cardinality attributes only, one cached dict per attribute set.
        sets = tel.metric_attributes(self, facts.response_model)
        metric_attrs = sets.call
        tel.duration.record((end_ns - self.start_ns) / 1e9, metric_attrs)
        if self.first_chunk_ns:
            tel.time_to_first_chunk.record((self.first_chunk_ns - self.start_ns) / 1e9, metric_attrs)
        if usage is not None:
            if usage.input_tokens is not None:
                tel.token_usage.record(usage.input_tokens, sets.input_tokens)
            if usage.output_tokens is not None and self.api.operation != A.OP_EMBEDDINGS:
                tel.token_usage.record(usage.output_tokens, sets.output_tokens)
        if cost is not None:
            tel.add_cost(sets, cost.total)
        elif priced:
            tel.unpriced.add(1, metric_attrs)

        for totals in self._totals:
            totals.add(
                failed=failed,
                input_tokens=usage.input_tokens if usage else None,
                cached_input_tokens=usage.cached_input_tokens if usage else 0,
                cache_write_input_tokens=usage.cache_write_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else None,
                reasoning_tokens=usage.reasoning_tokens if usage else 0,
                cost=cost.total if cost else None,
                priced=priced,
                estimated=bool(usage and usage.estimated),
                held=held,
            )

        if tel.config.console:
            _console_line(self, usage, cost, end_ns)


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


def _console_line(call: LLMCall, usage: TokenUsage | None, cost: CallCost | None, end_ns: int) -> None:
    model = call.facts.response_model or call.request_model or "?"
    tokens = "tokens=?"
    if usage is not None and usage.known:
        tokens = f"in={usage.input_tokens} (cached {usage.cached_input_tokens}) out={usage.output_tokens}"
        if usage.reasoning_tokens:
            tokens += f" (reasoning {usage.reasoning_tokens})"
        if usage.estimated:
            tokens += " ~estimated"
    money = f"${cost.total.normalize():f}" if cost is not None else "$? (unpriced)"
    who = call.attribution.get(A.TENANT_ID, "-")
    status = f" ERROR {call.error_type}" if call.error_type else ""
    sys.stderr.write(
        f"[llmledger] {call.api.operation} {model} {tokens} {money} "
        f"{(end_ns - call.start_ns) / 1e6:.0f}ms tenant={who}{status}\n"
    )
