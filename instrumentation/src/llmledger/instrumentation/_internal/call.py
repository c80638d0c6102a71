"""One instrumented API call's lifecycle: start, data as it arrives, error, end exactly once.

Sync and async wrappers, stream proxies and raw response proxies all drive the same
``LLMCall``: it starts the span with the request's attributes (``span_attributes``),
folds the response or each chunk in (``apis``), records the app's exception, and at
``end()`` settles the fallback numbering and hands over to the one "call finished" step
(``finish``), holding the span open first if the token counts must wait for the tokenizer.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmledger.instrumentation._internal import attributes as A
from llmledger.instrumentation._internal.apis import ApiSpec, ResponseFacts
from llmledger.instrumentation._internal.attribution import (
    FallbackOrigin,
    FallbackState,
    current_attribution,
    current_fallback_scope,
    current_totals,
)
from llmledger.instrumentation._internal.errors import internal_error
from llmledger.instrumentation._internal.estimate import TOKEN_COUNTER
from llmledger.instrumentation._internal.finish import call_finished, encoding_to_wait_for
from llmledger.instrumentation._internal.provider import Endpoint
from llmledger.instrumentation._internal.span_attributes import (
    FIRST_ATTEMPT,
    request_attributes,
    request_model,
    span_name,
)

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.telemetry import Telemetry


class LLMCall:
    """The state of one API call; every path ends it through ``end()``, exactly once."""

    __slots__ = (
        "_auto_key",
        "_context_token",
        "_ended",
        "_fallback_scope",
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
        "totals",
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
        self.stream = kwargs.get("stream") is True
        self.request_model = request_model(kwargs)
        ctx = context_api.get_current()
        self.attribution = (
            current_attribution(tel.resource_tenant, ctx) if attribution is None else attribution
        )
        # Totals are those of the block the call was made in, even if its stream ends later.
        self.totals = current_totals(ctx)
        attrs = request_attributes(
            api,
            endpoint,
            kwargs,
            attribution=self.attribution,
            origin=self._begin_attempt(ctx),
            capture_content=tel.config.capture_content,
        )
        wall_start, perf_start = start if start is not None else (None, None)
        self.span = tel.tracer.start_span(
            span_name(api, self.request_model),
            context=ctx,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=wall_start,
        )
        self._context_token: object | None = None
        self.start_ns = perf_start if perf_start is not None else time.perf_counter_ns()

    def _begin_attempt(self, ctx: Context) -> FallbackOrigin:
        """This call's place among its fallbacks: the explicit scope wins over the automatic rule."""
        self._fallback_scope: FallbackState | None = current_fallback_scope(ctx)
        self._auto_key: tuple[int, int, str | None] | None = None
        if self._fallback_scope is not None:
            return self._fallback_scope.begin()
        if self.tel.config.auto_fallback:
            self._auto_key = self.tel.auto_fallbacks.key(self.attribution.get(A.FEATURE), ctx)
            if self._auto_key is not None:
                return self.tel.auto_fallbacks.attempt(self._auto_key)
        return FIRST_ATTEMPT

    def _settle_attempt(self) -> None:
        # Settled when the call ends, not when a held call finishes: the app's next call
        # must see this one's outcome.
        failed = self.error_type is not None
        if self._fallback_scope is not None:
            self._fallback_scope.finish(failed, self.request_model, self.error_type)
        elif self._auto_key is not None:
            self.tel.auto_fallbacks.finish(self._auto_key, failed, self.request_model, self.error_type)

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

    def end_with_error(self, exc: BaseException) -> None:
        """The app's exception ended the call: record it on the span, then ``end()``; the caller re-raises it."""
        self.error_type = _error_type(exc)
        if self.span.is_recording():
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, str(exc)[:1024] or self.error_type))
        self.end()

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
            self._settle_attempt()
            encoding = encoding_to_wait_for(self)
        except Exception as exc:
            internal_error("end", exc)
        if encoding is not None and self._hold(encoding, end_ns):
            return
        try:
            call_finished(self, end_ns)
        except Exception as exc:
            internal_error("end", exc)
        finally:
            self.span.end()

    def _hold(self, encoding: str, end_ns: int) -> bool:
        """Leave the span open until the encoding is ready (the app goes on meanwhile); True once held."""
        wall_end_ns = time.time_ns()
        try:
            for totals in self.totals:
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
            call_finished(self, end_ns, estimate=ready, held=True)
        except Exception as exc:
            internal_error("end", exc)
        finally:
            self.span.end(end_time=wall_end_ns)


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__
