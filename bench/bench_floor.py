"""The OpenTelemetry SDK's own floor under any GenAI instrumentation, measured in one process.

What every instrumentation that follows the GenAI semantic conventions must pay per
non-streaming call, before any logic of its own: one CLIENT span carrying the contract's
attributes, and the semconv histograms (token usage for input and output, operation
duration) plus llmledger's cost counter. Set against llmledger's measured overhead, it shows
how much of that overhead is llmledger's own Python.

    .venv/bin/python bench/bench_floor.py

Real SDK parts throughout: a ``TracerProvider`` with a ``SimpleSpanProcessor`` into an
exporter that only counts (no export cost), a ``MeterProvider`` with an
``InMemoryMetricReader``. Timings are process CPU time, medians of repetitions, GC off.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


# What llmledger puts on a typical chat span (the contract's attributes), at start and end.
START = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "openai.api.type": "chat_completions",
    "server.address": "api.openai.com",
    "server.port": 443,
    "gen_ai.request.stream": False,
    "gen_ai.request.model": "gpt-4o-mini",
    "tenant.id": "acme",
    "user.id": "alice",
    "llmledger.feature": "lead_scoring",
    "llmledger.fallback": False,
    "llmledger.fallback.attempt": 0,
}
END = {
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "gen_ai.response.finish_reasons": ("stop",),
    "openai.response.service_tier": "default",
    "gen_ai.usage.input_tokens": 19,
    "gen_ai.usage.output_tokens": 10,
    "gen_ai.usage.cost": 0.00000885,
    "llmledger.cost.input": 0.00000285,
    "llmledger.cost.output": 0.000006,
    "llmledger.cost.source": "price_table",
}
METRIC = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "server.address": "api.openai.com",
    "server.port": 443,
}
METRIC_IN = {**METRIC, "gen_ai.token.type": "input"}
METRIC_OUT = {**METRIC, "gen_ai.token.type": "output"}


def main() -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(CountingExporter()))
    tracer = tracer_provider.get_tracer("floor")
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    cost = meter.create_counter("llmledger.client.cost", unit="USD")

    def bare_span() -> None:
        tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT).end()

    def contract_span() -> None:
        span = tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=START)
        span.set_attributes(END)
        span.end()

    def semconv_metrics() -> None:
        duration.record(0.8, METRIC)
        tokens.record(19, METRIC_IN)
        tokens.record(10, METRIC_OUT)

    def cost_counter() -> None:
        cost.add(0.00000885, METRIC)

    cases: list[tuple[str, Callable[[], None]]] = [
        ("bare CLIENT span", bare_span),
        ("span with the contract's 22 attributes", contract_span),
        ("3 semconv histogram records", semconv_metrics),
        ("1 cost counter add", cost_counter),
    ]
    print("| what | µs per call |\n|---|--:|")
    total = 0.0
    for name, fn in cases:
        micros = _measure(fn)
        if name != "bare CLIENT span":
            total += micros
        print(f"| {name} | {micros:.1f} |")
    print(f"| **floor: contract span + semconv histograms + cost counter** | **{total:.1f}** |")


def _measure(fn: Callable[[], None], loops: int = 5000, reps: int = 9) -> float:
    for _ in range(loops // 5):
        fn()
    samples: list[float] = []
    for _ in range(reps):
        gc.disable()
        start = time.process_time_ns()
        for _ in range(loops):
            fn()
        samples.append((time.process_time_ns() - start) / loops / 1000)
        gc.enable()
    return statistics.median(samples)


if __name__ == "__main__":
    main()
