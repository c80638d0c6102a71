"""Time openai SDK calls in one process under one instrumentation mode.

Run by ``bench/run.py``, once per mode and round, with the interpreter of the environment
the mode lives in; writes its results as JSON to ``--out``. Modes:

- ``none``: the SDK with no instrumentation (the baseline of its environment);
- ``llmledger``: ``llmledger.instrumentation.LLMLedgerInstrumentor``;
- ``openllmetry``: ``opentelemetry-instrumentation-openai``;
- ``contrib``: ``opentelemetry-instrumentation-openai-v2``.

Every mode, ``none`` included, runs with the same real SDK providers: a ``TracerProvider``
whose ``SimpleSpanProcessor`` hands each span to an exporter that only counts it, and a
``MeterProvider`` with an ``InMemoryMetricReader``. The counting exporter keeps export cost
at zero and the same for everyone (no queue, no background thread competing for the GIL as
a ``BatchSpanProcessor`` would), so what differs between modes is the instrumentation.

A mode that cannot be imported or instrumented is reported ``unavailable`` with the reason
rather than failing the run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import httpx2
import openai
from fake_openai_api import CHAT_MODEL, EMBEDDING_MODEL, STREAM_CHUNKS, api_transport
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionStreamOptionsParam
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

MODES = ("none", "llmledger", "openllmetry", "contrib")
_INSTRUMENTORS = {
    "llmledger": ("llmledger.instrumentation", "LLMLedgerInstrumentor"),
    "openllmetry": ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
    "contrib": ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
}
REPORTED_PACKAGES = (
    "openai",
    "httpx2",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "wrapt",
    "llmledger-instrumentation",
    "opentelemetry-instrumentation-openai",
    "opentelemetry-instrumentation-openai-v2",
    "opentelemetry-util-genai",
    "httpx",
    "numpy",
)

_MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You extract invoice fields and answer in one short paragraph."},
    {"role": "user", "content": "Invoice 2026-0419 from ACME GmbH, net 1,079.41 EUR, VAT 19%. " * 8},
]
# What the app must see uninstrumented: the usage-only chunk only when it asked for usage.
_EXPECTED_CHUNKS = {"chat_stream": STREAM_CHUNKS, "chat_stream_usage": STREAM_CHUNKS + 1}
_EMBEDDING_INPUT = "Invoice 2026-0419 from ACME GmbH, net 1,079.41 EUR, VAT 19%, due 2026-12-01."


class CountingSpanExporter(SpanExporter):
    """Receives every finished span and keeps only a count: export costs nothing."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


@dataclass
class ScenarioResult:
    scenario: str
    wall_ns: list[float]
    """Wall-clock nanoseconds per call, one sample per timed repetition."""
    cpu_ns: list[float]
    """The same repetitions in this process's CPU time (all its threads)."""
    calls_per_sample: int
    chunks_seen: int
    """Chunks the app iterated in one call (0 for non-streaming calls)."""
    chunks_expected: int
    spans_per_call: float
    error: str | None = None


@dataclass
class ModeResult:
    mode: str
    status: str
    """``ok``, ``unavailable`` (could not import or instrument) or ``error``."""
    reason: str = ""
    python: str = field(default_factory=lambda: platform.python_version())
    packages: dict[str, str] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    scenarios: list[ScenarioResult] = field(default_factory=list)


def _package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def instrument(mode: str, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> str | None:
    """Turn ``mode`` on; the reason it is unavailable, or None once instrumented."""
    if mode == "none":
        return None
    module_name, class_name = _INSTRUMENTORS[mode]
    try:
        # Imported by name: the comparison packages are absent from the project's environment.
        instrumentor_class = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:
        return f"cannot import {module_name}.{class_name}: {type(exc).__name__}: {exc}"
    try:
        instrumentor_class().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    except Exception as exc:
        return f"instrument() failed: {type(exc).__name__}: {exc}"
    return None


# A call returns how many chunks the app saw (0 when not streaming).
SyncCall = Callable[[], int]
AsyncCall = Callable[[], Awaitable[int]]


def sync_scenarios(client: openai.OpenAI) -> dict[str, SyncCall]:
    def chat() -> int:
        client.chat.completions.create(model=CHAT_MODEL, messages=_MESSAGES, max_tokens=300)
        return 0

    def stream(stream_options: ChatCompletionStreamOptionsParam | openai.Omit) -> SyncCall:
        def call() -> int:
            chunks = 0
            response = client.chat.completions.create(
                model=CHAT_MODEL, messages=_MESSAGES, stream=True, stream_options=stream_options
            )
            for _ in response:
                chunks += 1
            return chunks

        return call

    def embeddings() -> int:
        client.embeddings.create(model=EMBEDDING_MODEL, input=_EMBEDDING_INPUT)
        return 0

    return {
        "chat": chat,
        "chat_stream_usage": stream({"include_usage": True}),
        "chat_stream": stream(openai.omit),
        "embeddings": embeddings,
    }


def async_scenarios(client: openai.AsyncOpenAI) -> dict[str, AsyncCall]:
    async def chat() -> int:
        await client.chat.completions.create(model=CHAT_MODEL, messages=_MESSAGES, max_tokens=300)
        return 0

    return {"async_chat": chat}


def measure(
    run_batch: Callable[[int], int], budget_s: float, reps: int
) -> tuple[list[float], list[float], int]:
    """Warm up, size batches to the budget, then time ``reps`` batches with GC off.

    Returns wall-clock and CPU nanoseconds per call for each batch, and the batch size.
    """
    warmup_ns = budget_s * 0.2 * 1e9
    calls = 0
    started = time.perf_counter_ns()
    batch = 1
    while True:
        run_batch(batch)
        calls += batch
        elapsed = time.perf_counter_ns() - started
        if elapsed >= warmup_ns and calls >= 5:
            break
        batch = min(batch * 2, 64)
    per_call_ns = elapsed / calls
    batch = max(3, int(budget_s * 0.8 * 1e9 / reps / per_call_ns))
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(reps):
        gc.collect()
        gc.disable()
        try:
            wall0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
            run_batch(batch)
            cpu.append((time.process_time_ns() - cpu0) / batch)
            wall.append((time.perf_counter_ns() - wall0) / batch)
        finally:
            gc.enable()
    return wall, cpu, batch


def run_mode(mode: str, budget_s: float, reps: int, only: Sequence[str]) -> ModeResult:
    exporter = CountingSpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    result = ModeResult(mode=mode, status="ok", packages=_package_versions())

    unavailable = instrument(mode, tracer_provider, meter_provider)
    if unavailable is not None:
        result.status, result.reason = "unavailable", unavailable
        return result

    transport = api_transport()
    client = openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport))
    async_client = openai.AsyncOpenAI(
        api_key="sk-bench", max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )
    runner = asyncio.Runner()
    batches: dict[str, Callable[[int], int]] = {}
    for name, call in sync_scenarios(client).items():
        batches[name] = _sync_batch(call)
    for name, acall in async_scenarios(async_client).items():
        batches[name] = _async_batch(runner, acall)

    try:
        for name, run_batch in batches.items():
            if only and name not in only:
                continue
            result.scenarios.append(_run_scenario(name, run_batch, exporter, budget_s, reps))
    finally:
        runner.close()
    data = metric_reader.get_metrics_data()
    if data is not None:
        result.metric_names = sorted(
            {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        )
    return result


def _sync_batch(call: SyncCall) -> Callable[[int], int]:
    def run_batch(n: int) -> int:
        chunks = 0
        for _ in range(n):
            chunks = call()
        return chunks

    return run_batch


def _async_batch(runner: asyncio.Runner, call: AsyncCall) -> Callable[[int], int]:
    # One event-loop entry per batch, so the loop's own start-up is not timed per call.
    async def batch(n: int) -> int:
        chunks = 0
        for _ in range(n):
            chunks = await call()
        return chunks

    return lambda n: runner.run(batch(n))


def _run_scenario(
    name: str, run_batch: Callable[[int], int], exporter: CountingSpanExporter, budget_s: float, reps: int
) -> ScenarioResult:
    expected = _EXPECTED_CHUNKS.get(name, 0)
    try:
        before = exporter.spans
        chunks_seen = run_batch(1)
        spans_per_call = float(exporter.spans - before)
        wall, cpu, batch = measure(run_batch, budget_s, reps)
    except Exception as exc:
        # An instrumentation that breaks a call is a finding, not a crash of the benchmark.
        return ScenarioResult(name, [], [], 0, 0, expected, 0.0, error=f"{type(exc).__name__}: {exc}")
    return ScenarioResult(name, wall, cpu, batch, chunks_seen, expected, spans_per_call)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--budget", type=float, default=1.4, help="seconds per scenario (default 1.4)")
    parser.add_argument("--reps", type=int, default=6, help="timed repetitions per scenario (default 6)")
    parser.add_argument("--only", nargs="*", default=[], help="run only these scenarios")
    args = parser.parse_args(argv)
    try:
        result = run_mode(args.mode, args.budget, args.reps, args.only)
    except Exception:
        result = ModeResult(mode=args.mode, status="error", reason=traceback.format_exc(limit=3))
    args.out.write_text(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
