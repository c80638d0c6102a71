"""A trace sampler that never drops a billed call: every LLM and embedding span is kept,
all other spans are sampled by ratio and parent, as ``parentbased_traceidratio`` does.

Zero-code::

    OTEL_TRACES_SAMPLER=llmledger_parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 \\
        opentelemetry-instrument python app.py

In code: ``TracerProvider(sampler=LLMCallSampler(0.01))``.

An LLM span is recognised at sampling time by the ``gen_ai.operation.name`` attribute its
instrumentation passes when it starts the span (llmledger's does, and so do the GenAI
instrumentations that follow the semantic conventions): ``chat``, ``text_completion``,
``embeddings`` and ``generate_content``, the operations a provider bills. Such a span is
always RECORD_AND_SAMPLE, so it carries the sampled flag and the ``BatchSpanProcessor``
exports it, even when its parent was dropped. Its trace is then partial: the LLM span
arrives without its parent (trace views show it as a root of its own). To keep the rest of
that trace at the configured ratio, a span kept only for billing marks its trace state
(``llmledger=kept``); its descendants are decided by the trace-id ratio again, which gives
the same answer the trace's root got, instead of inheriting the forced sampled flag.

Needs the OpenTelemetry SDK (this module is only imported where a sampler is configured).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = ["BILLED_OPERATIONS", "LLMCallSampler", "parentbased_traceidratio"]

logger = logging.getLogger("llmledger.instrumentation")

BILLED_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "generate_content"})
"""``gen_ai.operation.name`` values of the calls a provider bills: their spans are always kept."""

_OPERATION = "gen_ai.operation.name"
_MARK_KEY = "llmledger"
_MARK_KEPT = "kept"


class LLMCallSampler(Sampler):
    """Keeps every LLM/embedding span; samples the others like ``ParentBased(TraceIdRatioBased(rate))``."""

    def __init__(self, rate: float) -> None:
        self._ratio = TraceIdRatioBased(rate)
        self._others = ParentBased(self._ratio)

    @property
    def rate(self) -> float:
        return self._ratio.rate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if attributes and attributes.get(_OPERATION) in BILLED_OPERATIONS:
            if parent.is_valid and parent.trace_flags.sampled:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
            # Kept for billing although its trace is not sampled: say so in the trace state,
            # which this span's descendants inherit.
            state = parent.trace_state if parent.is_valid else TraceState()
            state = (
                state.update(_MARK_KEY, _MARK_KEPT)
                if _MARK_KEY in state
                else state.add(_MARK_KEY, _MARK_KEPT)
            )
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        if parent.is_valid and parent.trace_flags.sampled and parent.trace_state.get(_MARK_KEY) == _MARK_KEPT:
            # Below a span kept only for billing: the trace's own ratio decision, not the parent's flag.
            return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links)
        return self._others.should_sample(parent_context, trace_id, name, kind, attributes, links)

    def get_description(self) -> str:
        return f"LLMCallSampler{{{self._others.get_description()}}}"


def parentbased_traceidratio(arg: float | str | None) -> LLMCallSampler:
    """The ``opentelemetry_traces_sampler`` entry point: ``OTEL_TRACES_SAMPLER_ARG`` is the ratio
    of non-LLM traces to keep, 0.0 to 1.0; absent or invalid means 1.0 (as the SDK's samplers)."""
    rate = 1.0
    if arg is not None and arg != "":
        try:
            rate = float(arg)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(arg)
        except ValueError:
            logger.warning(
                "llmledger: OTEL_TRACES_SAMPLER_ARG=%r is not a ratio between 0 and 1; using 1.0", arg
            )
            rate = 1.0
    return LLMCallSampler(rate)
