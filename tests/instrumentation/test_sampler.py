"""The sampler keeps every billed call's span, whatever happens to the rest of its trace."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

import httpx2
import pytest
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from llmledger.instrumentation import LLMLedgerInstrumentor
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation.sampler import LLMCallSampler, parentbased_traceidratio

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry, make_telemetry


def sampled_telemetry(rate: str) -> Telemetry:
    telemetry = make_telemetry()
    provider = TracerProvider(sampler=parentbased_traceidratio(rate))
    provider.add_span_processor(SimpleSpanProcessor(telemetry.spans))
    return Telemetry(telemetry.spans, telemetry.metrics, provider, telemetry.meter_provider)


def http_span_below(provider: TracerProvider, body: dict[str, Any]) -> Any:
    """A reply that opens a span where an HTTP client instrumentation would: below the LLM span."""

    def reply(request: httpx2.Request) -> httpx2.Response:
        with provider.get_tracer("http-client").start_as_current_span("POST"):
            return httpx2.Response(200, json=body)

    return reply


@pytest.mark.parametrize(
    ("rate", "exported"),
    [("0", {"chat gpt-4o-mini"}), ("1.0", {"chat gpt-4o-mini", "POST", "handle request"})],
)
def test_llm_span_is_kept_inside_a_dropped_trace(
    rate: str, exported: set[str], api: Api, fake: FakeOpenAI
) -> None:
    telemetry = sampled_telemetry(rate)
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        config=InstrumentationConfig(),
    )
    try:
        fake.reply("/chat/completions", http_span_below(telemetry.tracer_provider, P.chat_completion()))
        app_tracer = telemetry.tracer_provider.get_tracer("app")
        with app_tracer.start_as_current_span("handle request") as parent:
            api.call(
                lambda c: c.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
            )
    finally:
        instrumentor.uninstrument()
    spans = {span.name: span for span in telemetry.finished()}
    assert set(spans) == exported
    llm = spans["chat gpt-4o-mini"]
    assert llm.context is not None
    assert llm.parent is not None
    assert llm.context.trace_flags.sampled  # the flag the BatchSpanProcessor exports by
    assert llm.parent.span_id == parent.get_span_context().span_id  # in its trace, under its parent
    assert llm.context.trace_id == parent.get_span_context().trace_id
    assert (llm.attributes or {})["gen_ai.usage.input_tokens"] == 19
    kept_for_billing = llm.context.trace_state.get("llmledger")
    assert kept_for_billing == ("kept" if rate == "0" else None)


def test_below_a_kept_llm_span_the_trace_ratio_decides() -> None:
    """Descendants of an LLM span kept only for billing get the trace's own ratio decision."""
    sampler = LLMCallSampler(0.5)
    ratio = TraceIdRatioBased(0.5)
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(200):
        with (
            tracer.start_as_current_span("request"),
            tracer.start_as_current_span("chat m", attributes={"gen_ai.operation.name": "chat"}),
            tracer.start_as_current_span("POST"),
        ):
            pass
    by_trace: dict[int, set[str]] = {}
    for span in exporter.get_finished_spans():
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, set()).add(span.name)
    assert len(by_trace) == 200  # every trace has its LLM span
    for trace_id, names in by_trace.items():
        in_ratio = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < ratio.bound
        assert names == ({"request", "chat m", "POST"} if in_ratio else {"chat m"})
    assert 0 < sum(len(n) == 3 for n in by_trace.values()) < 200


@pytest.mark.parametrize(
    ("operation", "kept"),
    [
        ("chat", True),
        ("text_completion", True),
        ("embeddings", True),
        ("generate_content", True),
        ("execute_tool", False),
        (None, False),
    ],
)
def test_billed_operations_are_recognised_at_start(operation: str | None, kept: bool) -> None:
    sampler = LLMCallSampler(0.0)
    attributes = {"gen_ai.operation.name": operation} if operation else {}
    result = sampler.should_sample(None, 0x1234, "span", trace_api.SpanKind.CLIENT, attributes)
    assert result.decision.is_sampled() is kept
    if kept:
        assert dict(result.attributes) == attributes  # the SDK builds the span's attributes from these


@pytest.mark.parametrize(
    ("arg", "rate"),
    [(None, 1.0), ("", 1.0), ("0.01", 0.01), (0.25, 0.25), ("0", 0.0), ("abc", 1.0), ("1.5", 1.0)],
)
def test_sampler_arg(arg: Any, rate: float, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        sampler = parentbased_traceidratio(arg)
    assert sampler.rate == rate
    assert ("not a ratio" in caplog.text) is (arg in ("abc", "1.5"))
    assert sampler.get_description().startswith("LLMCallSampler{ParentBased{root:TraceIdRatioBased{")


def test_entry_point() -> None:
    [entry] = entry_points(group="opentelemetry_traces_sampler", name="llmledger_parentbased_traceidratio")
    assert entry.load() is parentbased_traceidratio
