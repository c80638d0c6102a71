"""End-to-end metrics benchmark: OTLP/HTTP protobuf metrics in, the embedded store's otel_metrics_* out, on one core.

    python bench/bench_metrics.py [--rate 0] [--duration 20] [--points 1000] [--senders 4]

Starts ``llmledger collector`` pinned to one CPU with a fresh embedded store (fsync
``always``), like ``bench_collector.py``, and offers ``--rate`` data points/s (0: as fast
as the collector acknowledges) as OTLP/HTTP protobuf export requests of ``--points`` data
points each, shaped as the llmledger instrumentation exports them: per series (model x
operation x token type x server) a ``gen_ai.client.token.usage`` and a
``gen_ai.client.operation.duration`` histogram with the semantic-convention buckets and a
``llmledger.client.cost`` sum, cumulative. Reports acknowledged and end-to-end (written)
data points/s, acknowledgement latency, CPU per data point and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_collector import (
    SERVICE_MARKER,
    Collector,
    cpu_seconds,
    paced_sends,
    peak_rss_mib,
    percentile,
    unique,
)

TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "o4-mini", "text-embedding-3-small"]


def make_request(points: int, rng: random.Random) -> bytes:
    """About ``points`` data points: a third token-usage and duration histograms each, a third cost sums."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    # The instance id is the marker `unique` replaces: the collector acknowledges a request
    # it has already spooled without spooling it again (a retry), so repeated bodies would
    # never be written and the wait for them would last until the deadline.
    for key, value in (("service.name", "bench"), ("service.instance.id", SERVICE_MARKER.decode())):
        kv = resource_metrics.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name = "llmledger.instrumentation"
    now = time.time_ns()
    tokens = scope.metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    duration = scope.metrics.add(name="gen_ai.client.operation.duration", unit="s")
    cost = scope.metrics.add(name="llmledger.client.cost", unit="USD")
    for histogram in (tokens.histogram, duration.histogram):
        histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    cost.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    cost.sum.is_monotonic = True
    for series in range(points // 3):
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": MODELS[series % len(MODELS)],
            "gen_ai.response.model": MODELS[series % len(MODELS)] + "-2025",
            "gen_ai.token.type": "input" if series % 2 else "output",
            "server.address": f"api-{series % 50}.example",
        }
        for metric, bounds in ((tokens, TOKEN_BOUNDS), (duration, DURATION_BOUNDS)):
            point = metric.histogram.data_points.add()
            point.start_time_unix_nano, point.time_unix_nano = now - 60 * 10**9, now
            point.explicit_bounds.extend(bounds)
            point.bucket_counts.extend(rng.randrange(20) for _ in range(len(bounds) + 1))
            point.count = sum(point.bucket_counts)
            point.sum, point.min, point.max = rng.random() * 1e4, rng.random(), rng.random() * 100
            for key, value in attributes.items():
                point.attributes.add(key=key).value.string_value = value
        point = cost.sum.data_points.add()
        point.start_time_unix_nano, point.time_unix_nano = now - 60 * 10**9, now
        point.as_double = rng.random()
        for key, value in attributes.items():
            if key != "gen_ai.token.type":
                point.attributes.add(key=key).value.string_value = value
    return request.SerializeToString()


def run(args: argparse.Namespace) -> dict[str, float]:
    cpus = sorted(os.sched_getaffinity(0))
    collector_cpu, client_cpu = cpus[0], cpus[-1]
    os.sched_setaffinity(0, {client_cpu})
    rng = random.Random(7)
    payloads = [make_request(args.points, rng) for _ in range(16)]
    per_request = args.points // 3 * 3
    with tempfile.TemporaryDirectory(prefix="llmledger-bench-") as tmp:
        collector = Collector(Path(tmp), collector_cpu, "always")
        try:
            # The store opens and the schema is applied before the clock starts.
            deadline = time.monotonic() + 60
            while collector.metric("store_up") != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            return measure(args, collector, payloads, per_request)
        finally:
            collector.stop()


def measure(
    args: argparse.Namespace, collector: Collector, payloads: list[bytes], per_request: int
) -> dict[str, float]:
    latencies: list[float] = []
    sent = [0]
    refused = [0]
    lock = threading.Lock()
    stop = threading.Event()
    start = time.monotonic()
    interval = per_request * args.senders / args.rate if args.rate else 0.0

    def answered(status: int, seconds: float) -> None:
        with lock:
            if status == 200:
                latencies.append(seconds)
                sent[0] += per_request
            else:
                refused[0] += 1

    def send(worker: int) -> None:
        paced_sends(
            collector.port, "/v1/metrics", lambda index: unique(payloads[index % len(payloads)]),
            worker, args.senders, interval, start, stop, answered,
        )  # fmt: skip

    senders = [threading.Thread(target=send, args=(w,), daemon=True) for w in range(args.senders)]
    for thread in senders:
        thread.start()
    time.sleep(args.duration)
    stop.set()
    for thread in senders:
        thread.join(60)
    sending = time.monotonic() - start
    deadline = time.monotonic() + 300
    while collector.metric("written_data_points_total") < sent[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    end_to_end = time.monotonic() - start
    written = collector.metric("written_data_points_total")
    receiver_cpu, drain_cpu = cpu_seconds(collector.process.pid)
    peaks = peak_rss_mib(collector.process.pid)
    return {
        "offered_points_per_second": float(args.rate),
        "acked_points_per_second": sent[0] / sending,
        "end_to_end_points_per_second": written / end_to_end,
        "points": float(sent[0]),
        "written": written,
        "refused_requests": float(refused[0]),
        "ack_p50_ms": percentile(latencies, 0.5) * 1000,
        "ack_p99_ms": percentile(latencies, 0.99) * 1000,
        "drain_after_load_s": end_to_end - sending,
        "receiver_cpu_us_per_point": receiver_cpu / max(sent[0], 1) * 1e6,
        "drain_cpu_us_per_point": drain_cpu / max(written, 1) * 1e6,
        "collector_peak_rss_mib": sum(peaks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=0, help="offered data points/s (0: as fast as acked)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--points", type=int, default=999, help="data points per request")
    parser.add_argument("--senders", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = run(args)
    for name, value in results.items():
        print(f"{name:32} {value:,.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
