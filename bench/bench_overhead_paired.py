"""Instrumentation overhead measured in one process, modes switched on and off in turns.

    .venv-bench/bin/python bench/bench_overhead_paired.py [--reps 15] [--rep-seconds 0.1]

``bench/run.py`` gives each mode its own process; on a machine shared with other work, two
processes' CPU time still differs by more than the overheads compared (caches, the other
hyperthread). Here one interpreter holds one openai client, one ``TracerProvider`` and one
``MeterProvider``; each repetition times a batch bare (``none``), then with llmledger, then
with contrib's ``opentelemetry-instrumentation-openai-v2`` (instrumented just before its batch
and uninstrumented after, the order rotated every repetition). A mode's overhead is the
median over repetitions of (mode - ``none``) within the same repetition: paired, so load
that comes and goes cancels out. Runs in ``.venv-bench``, where both are installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
from bench_overhead import (
    CountingSpanExporter,
    _async_batch,  # pyright: ignore[reportPrivateUsage]
    _seed_tiktoken_cache,  # pyright: ignore[reportPrivateUsage]
    _sync_batch,  # pyright: ignore[reportPrivateUsage]
    async_scenarios,
    sync_scenarios,
)
from fake_openai_api import STREAM_CHUNKS, api_transport
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

INSTRUMENTORS = {
    "llmledger": ("llmledger.instrumentation", "LLMLedgerInstrumentor"),
    "contrib": ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--rep-seconds", type=float, default=0.1, help="CPU seconds per batch")
    args = parser.parse_args()

    _seed_tiktoken_cache()
    exporter = CountingSpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentors: dict[str, Any] = {
        mode: getattr(importlib.import_module(module), cls)() for mode, (module, cls) in INSTRUMENTORS.items()
    }
    # llmledger's tokenizer loads once, at its first instrument(), off the timed batches.
    instrumentors["llmledger"].instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    importlib.import_module("llmledger.instrumentation._internal.estimate").TOKEN_COUNTER.wait_ready(
        "o200k_base", 120
    )
    instrumentors["llmledger"].uninstrument()

    transport = api_transport()
    client = openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport))
    async_client = openai.AsyncOpenAI(
        api_key="sk-bench", max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )
    runner = asyncio.Runner()
    batches: dict[str, Callable[[int], int]] = {
        name: _sync_batch(c) for name, c in sync_scenarios(client).items()
    }
    batches.update({name: _async_batch(runner, c) for name, c in async_scenarios(async_client).items()})
    modes = ["none", *INSTRUMENTORS]

    def timed(mode: str, run_batch: Callable[[int], int], calls: int) -> float:
        if mode != "none":
            instrumentors[mode].instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        try:
            gc.collect()
            gc.disable()
            started = time.process_time_ns()
            run_batch(calls)
            return (time.process_time_ns() - started) / calls / 1000
        finally:
            gc.enable()
            if mode != "none":
                instrumentors[mode].uninstrument()

    print(
        f"paired overhead vs none, µs per call (µs per chunk for streams), median of {args.reps} repetitions"
    )
    print("| scenario | " + " | ".join(modes[1:]) + " | none, µs/call |")
    print("|---|" + "--:|" * len(modes))
    for name, run_batch in batches.items():
        for mode in modes:  # warm-up, and a batch size that takes rep_seconds bare
            timed(mode, run_batch, 5)
        calls = max(3, round(args.rep_seconds * 1e6 / timed("none", run_batch, 20)))
        diffs: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
        bare: list[float] = []
        for rep in range(args.reps):
            order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
            sample = {mode: timed(mode, run_batch, calls) for mode in order}
            bare.append(sample["none"])
            for mode in modes[1:]:
                diffs[mode].append(sample[mode] - sample["none"])
        per = STREAM_CHUNKS if "stream" in name else 1
        cells = []
        for mode in modes[1:]:
            values = sorted(diffs[mode])
            median, quartile = (
                values[len(values) // 2],
                (values[3 * len(values) // 4] - values[len(values) // 4]) / 2,
            )
            cells.append(
                f"+{median / per:.2f} ±{quartile / per:.2f}" if per > 1 else f"+{median:.0f} ±{quartile:.0f}"
            )
        print(f"| {name} | " + " | ".join(cells) + f" | {sorted(bare)[len(bare) // 2]:.0f} |", flush=True)
    runner.close()


if __name__ == "__main__":
    main()
