"""What exporting a span costs the app: the standard OTLP exporter next to ``llmledger_otlp``.

A real ``llmledger collector`` (embedded store, ``--fsync never``) runs in a child process;
this process builds batches of llmledger-shaped chat spans (the contract's attributes, 512
per batch as the ``BatchSpanProcessor`` hands them over) with the real SDK, then times
``exporter.export(batch)`` for each exporter, the collector up (the normal case), over HTTP
and gRPC. Repetitions interleave the exporters in a rotating order so that load from the
rest of the (shared) machine falls on all of them alike. Reported per span: the exporting
thread's CPU time (what the app pays) and wall time (what the SDK's worker thread waits).

``--sdk-encoder`` adds ``llmledger_otlp`` as it was before it encoded OTLP itself: the same
exporter with the SDK's ``encode_spans`` in place of ``otlp_encode`` (swapped in around each
of its timings), interleaved with the rest.

    .venv/bin/python bench/bench_span_export.py [--reps 15] [--batches 8] [--sdk-encoder]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcOTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpOTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmledger.instrumentation._internal import buffered_exporter
from llmledger.instrumentation.export import BufferedOTLPSpanExporter

BATCH = 512
OWN_ENCODER = buffered_exporter.encode_trace_request


def _sdk_encoder(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_collector(directory: Path, http_port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    log = (directory / "collector.log").open("wb")
    collector = subprocess.Popen(
        [sys.executable, "-m", "llmledger.exporter.cli", "collector", "--url", f"chdb://{directory / 'store'}",
         "--data-dir", str(directory / "data"), "--http-endpoint", f"127.0.0.1:{http_port}",
         "--grpc-endpoint", f"127.0.0.1:{grpc_port}", "--fsync", "never"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1):
                return collector
        except OSError:
            time.sleep(0.2)
    collector.kill()
    raise SystemExit("the collector did not become ready")


def _batches(count: int, seed: int) -> list[list[ReadableSpan]]:
    """``count`` batches of fresh chat spans shaped like llmledger's (new ids every time)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app", "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("llmledger.instrumentation", "0.1.0")
    for index in range(count * BATCH):
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.response.id": f"chatcmpl-{seed}-{index}",
                "gen_ai.response.finish_reasons": ("stop",),
                "gen_ai.request.stream": False,
                "gen_ai.usage.input_tokens": 120 + index % 50,
                "gen_ai.usage.output_tokens": 30 + index % 20,
                "gen_ai.usage.cache_read.input_tokens": 0,
                "gen_ai.usage.reasoning.output_tokens": 0,
                "gen_ai.usage.cost": 0.000435,
                "llmledger.cost.input": 0.000018,
                "llmledger.cost.output": 0.000417,
                "llmledger.cost.source": "price_table",
                "openai.api.type": "chat_completions",
                "server.address": "api.openai.example",
                "server.port": 443,
                "tenant.id": "acme",
                "user.id": f"user-{index % 97}",
                "llmledger.feature": "lead_scoring",
                "llmledger.fallback": False,
            },
        ):
            pass
    spans = list(memory.get_finished_spans())
    return [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]


def _time(
    exporter: SpanExporter, batches: Sequence[list[ReadableSpan]], sdk_encoder: bool = False
) -> tuple[float, float]:
    """(CPU µs per span of this thread, wall µs per span) for exporting ``batches``."""
    buffered_exporter.encode_trace_request = _sdk_encoder if sdk_encoder else OWN_ENCODER
    gc.collect()
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for batch in batches:
        result = exporter.export(batch)
        if result.name != "SUCCESS":
            raise SystemExit(f"{type(exporter).__name__}: export failed")
    spans = sum(len(b) for b in batches)
    return (time.thread_time_ns() - cpu) / 1e3 / spans, (time.perf_counter_ns() - wall) / 1e3 / spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="the cost per span of the standard OTLP exporter and llmledger_otlp"
    )
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batches", type=int, default=8, help="batches of 512 spans per repetition")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument(
        "--sdk-encoder",
        action="store_true",
        help="add llmledger_otlp with the SDK's OTLP encoder (as before)",
    )
    args = parser.parse_args(argv)
    for name in [k for k in os.environ if k.startswith(("OTEL_", "LLMLEDGER_"))]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="bench-span-export-") as tmp:
        directory = Path(tmp)
        http_port, grpc_port = _free_port(), _free_port()
        collector = _start_collector(directory, http_port, grpc_port)
        try:
            http = f"http://127.0.0.1:{http_port}"
            grpc = f"http://127.0.0.1:{grpc_port}"
            settings = {
                "http": {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": http},
                "grpc": {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": grpc},
            }

            def make_buffered(protocol: str, buffer: str) -> Callable[[], SpanExporter]:
                return lambda: BufferedOTLPSpanExporter(
                    buffer_dir=directory / buffer, environ=settings[protocol]
                )

            factories: dict[str, Callable[[], SpanExporter]] = {
                "otlp http (standard)": lambda: HttpOTLPSpanExporter(endpoint=f"{http}/v1/traces"),
                "llmledger_otlp http": make_buffered("http", "buffer-http"),
                "otlp grpc (standard)": lambda: GrpcOTLPSpanExporter(
                    endpoint=f"127.0.0.1:{grpc_port}", insecure=True
                ),
                "llmledger_otlp grpc": make_buffered("grpc", "buffer-grpc"),
            }
            if args.sdk_encoder:
                for protocol in ("http", "grpc"):
                    factories[f"llmledger_otlp {protocol} (SDK enc.)"] = make_buffered(
                        protocol, f"sdk-{protocol}"
                    )
            exporters = {name: make() for name, make in factories.items()}
            names = list(exporters)
            # Warm-up: connections open, code paths hot.
            for name in names:
                _time(exporters[name], _batches(2, seed=-1 - names.index(name)), "SDK enc." in name)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for rep in range(args.reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for name in order:
                    batches = _batches(args.batches, seed=rep * 10 + names.index(name))
                    results[name].append(_time(exporters[name], batches, "SDK enc." in name))
            for exporter in exporters.values():
                exporter.shutdown()
        finally:
            collector.terminate()
            collector.wait(60)
    print(f"{args.reps} repetitions x {args.batches} batches x {BATCH} spans, collector up (fsync never)")
    print(
        f"{'exporter':<34} {'CPU µs/span':>12} {'(quartiles)':>15} {'wall µs/span':>13} {'(quartiles)':>13}"
    )
    medians: dict[str, tuple[float, float]] = {}
    for name, figures in results.items():
        cpu = [c for c, _ in figures]
        wall = [w for _, w in figures]
        medians[name] = (statistics.median(cpu), statistics.median(wall))
        cpu_q, wall_q = statistics.quantiles(cpu, n=4), statistics.quantiles(wall, n=4)
        print(
            f"{name:<34} {medians[name][0]:>12.2f} {cpu_q[0]:>7.2f}-{cpu_q[2]:<7.2f} "
            f"{medians[name][1]:>13.1f} {wall_q[0]:>6.0f}-{wall_q[2]:<6.0f}"
        )
    for protocol in ("http", "grpc"):
        standard, buffered = medians[f"otlp {protocol} (standard)"], medians[f"llmledger_otlp {protocol}"]
        print(
            f"{protocol}: llmledger_otlp / standard = {buffered[0] / standard[0]:.3f} (CPU), "
            f"{buffered[1] / standard[1]:.3f} (wall)"
        )
        if args.sdk_encoder:
            before = medians[f"llmledger_otlp {protocol} (SDK enc.)"]
            print(
                f"{protocol}: llmledger_otlp / with the SDK's encoder = {buffered[0] / before[0]:.3f} (CPU), "
                f"{buffered[1] / before[1]:.3f} (wall)"
            )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
