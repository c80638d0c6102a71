"""What llmledger's own code costs per stream chunk, apart from the SDK's parsing.

    .venv/bin/python bench/bench_stream_chunk.py [--streams 300] [--repeat 9] [--profile]

Iterates the same 200 already-parsed ``ChatCompletionChunk`` objects (a stream as
``bench/fake_openai_api.py`` sends it, without usage) bare and through llmledger's stream
proxy, in one process, taking turns; the difference, less one call's start and end measured
alone, divided by the chunks, is the per-chunk cost of llmledger's code. ``--profile``
prints where that time goes (cProfile of the proxied iteration; profiling inflates every
function call, so read its shares, not its absolute times).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections.abc import Callable
from typing import Any

from fake_openai_api import CHAT_MODEL, CHAT_MODEL_SNAPSHOT, STREAM_CHUNKS
from openai.types.chat import ChatCompletionChunk
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from llmledger.instrumentation._internal import apis
from llmledger.instrumentation._internal.call import LLMCall
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation._internal.provider import endpoint_for
from llmledger.instrumentation._internal.stream import StreamProxy
from llmledger.instrumentation._internal.telemetry import Telemetry


def _chunks() -> list[ChatCompletionChunk]:
    base: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": CHAT_MODEL_SNAPSHOT,
        "system_fingerprint": "fp_44709d6fcb",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> ChatCompletionChunk:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return ChatCompletionChunk.model_validate({**base, "choices": [choice]})

    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": f" token{i}"}) for i in range(STREAM_CHUNKS - 2)),
        chunk({}, "stop"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=300, help="streams per timed repetition")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    # estimate_tokens off: the end-of-call work is measured by `call`, not per chunk.
    config = InstrumentationConfig(estimate_tokens=False)
    tracer_provider = TracerProvider()
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tel = Telemetry(
        tracer_provider.get_tracer("bench"), meter_provider.get_meter("bench"), config, None, None
    )
    endpoint = endpoint_for("https://api.openai.com/v1", False)
    kwargs = {"model": CHAT_MODEL, "stream": True}
    chunks = _chunks()

    def bare() -> None:
        for _ in iter(chunks):
            pass

    def call() -> None:
        LLMCall(tel, apis.CHAT_COMPLETIONS, endpoint, kwargs).end()

    def proxied() -> None:
        for _ in StreamProxy(iter(chunks), LLMCall(tel, apis.CHAT_COMPLETIONS, endpoint, kwargs)):
            pass

    def fold_only() -> None:
        facts = apis.ResponseFacts()
        fold = apis.CHAT_COMPLETIONS.apply_chunk
        for item in chunks:
            fold(facts, item)

    jobs: dict[str, Callable[[], None]] = {"bare": bare, "call": call, "proxied": proxied, "fold": fold_only}
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeat):
        for name, job in jobs.items():  # taking turns: load from elsewhere falls on all alike
            gc.collect()
            gc.disable()
            started = time.process_time_ns()
            for _ in range(args.streams):
                job()
            samples[name].append((time.process_time_ns() - started) / args.streams / 1000)
            gc.enable()
    median = {name: sorted(values)[len(values) // 2] for name, values in samples.items()}
    per_chunk = (median["proxied"] - median["bare"] - median["call"]) / len(chunks)
    print(f"{len(chunks)} chunks per stream, median of {args.repeat} repetitions, process CPU time")
    print("| what | µs |")
    print("|---|--:|")
    print(f"| iterate the stream bare | {median['bare']:.1f} per stream |")
    print(f"| one call's start and end, no chunks | {median['call']:.1f} per call |")
    print(f"| iterate through llmledger's proxy (incl. start and end) | {median['proxied']:.1f} per stream |")
    print(f"| **llmledger's code per chunk** (proxied - bare - call) / chunks | **{per_chunk:.2f}** |")
    print(f"| of which folding the chunk (`apply_chunk`) | {median['fold'] / len(chunks):.2f} |")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [proxied() for _ in range(args.streams)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
