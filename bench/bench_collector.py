"""End-to-end collector benchmark: OTLP/HTTP protobuf in, embedded store out, on one core.

    python bench/bench_collector.py [--rate 50000] [--duration 20] [--batch 512] [--attributes 20] [--finish-reasons]

Starts ``llmledger collector`` pinned to one CPU with a fresh embedded store (fsync
``always``) and offers ``--rate`` spans/s as OTLP/HTTP protobuf requests of ``--batch``
spans with ``--attributes`` attributes each, from keep-alive connections pinned to another
CPU. Every 0.25 s one probe request with its own trace id is sent and polled for through
the collector's ClickHouse HTTP interface. ``--report-every 1`` also runs the per-tenant
report through that interface every second, to measure what reads cost ingestion. Reports achieved ingest (acknowledged) and end-to-end
(written to ``otel_traces``) spans/s, acknowledgement latency percentiles, time from
acknowledgement to queryable, and the collector's peak resident memory. ``--rate 0``
sends as fast as the collector acknowledges.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.store import open_store, run_query

# Every request sent is made unique by rewriting this resource value in place: the collector
# stores a repeated request once (it takes it for a client's retry), so a benchmark that
# resent the same bytes would measure acknowledgements, not ingestion.
SERVICE_MARKER = b"bench-0000000000000000"
_sent_serial = iter(range(1, 1 << 62))


def unique(payload: bytes) -> bytes:
    return payload.replace(SERVICE_MARKER, b"bench-%016x" % next(_sent_serial), 1)


GOALS = {"spans_per_second": 50_000, "ack_p99_ms": 50.0, "queryable_p99_s": 5.0}


def make_request(
    spans: int,
    attributes: int,
    rng: random.Random,
    trace_id: bytes | None = None,
    *,
    finish_reasons: bool = False,
) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (
        ("service.name", SERVICE_MARKER.decode()),
        ("tenant.id", f"tenant-{rng.randrange(20)}"),
    ):
        kv = resource_spans.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "llmledger"
    now = time.time_ns()
    for index in range(spans):
        span = scope_spans.spans.add()
        span.trace_id = trace_id or rng.randbytes(16)
        span.span_id = rng.randbytes(8)
        span.name = "chat gpt-4o-mini"
        span.kind = Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = now - 300_000_000
        span.end_time_unix_nano = now
        values: list[tuple[str, object]] = [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            ("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
            ("gen_ai.usage.input_tokens", rng.randrange(50, 5000)),
            ("gen_ai.usage.output_tokens", rng.randrange(1, 800)),
            ("gen_ai.usage.cost", rng.randrange(1, 100_000) / 1e7),
            ("llmledger.cost.source", "price_table"),
            ("tenant.id", f"tenant-{index % 20}"),
            ("user.id", f"user-{rng.randrange(1000)}"),
            ("llmledger.feature", "lead_scoring"),
            ("llmledger.fallback", False),
            ("llmledger.fallback.attempt", 0),
            ("openai.api.type", "chat_completions"),
            ("server.address", "api.openai.com"),
            ("server.port", 443),
            ("gen_ai.request.stream", False),
            ("session.id", f"session-{rng.randrange(5000)}"),
            ("gen_ai.conversation.id", f"conv-{rng.randrange(5000)}"),
        ]
        if finish_reasons:  # as llmledger's chat spans carry it: a string array
            values.insert(1, ("gen_ai.response.finish_reasons", ["stop"]))
        while len(values) < attributes:
            values.append((f"app.extra.{len(values)}", f"value-{rng.randrange(100)}"))
        for key, value in values[:attributes]:
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, list):
                for item in value:
                    kv.value.array_value.values.add().string_value = str(item)
            elif isinstance(value, bool):
                kv.value.bool_value = value
            elif isinstance(value, int):
                kv.value.int_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.string_value = str(value)
    return request.SerializeToString()


def paced_sends(
    port: int,
    path: str,
    body: Callable[[int], bytes],
    worker: int,
    senders: int,
    interval: float,
    start: float,
    stop: threading.Event,
    answered: Callable[[int, float], None],
) -> None:
    """One of ``senders`` load threads: POSTs ``body(index)`` (index ``worker``, then
    ``worker + senders``, ...) to ``path`` until ``stop``, one request every ``interval``
    seconds (0: each as soon as the last is answered), the senders' first requests spread
    over one interval; ``answered(status, seconds)`` after each answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    next_at = start + worker * interval / senders
    index = worker
    while not stop.is_set():
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
        payload = body(index)
        index += senders
        began = time.monotonic()
        connection.request("POST", path, payload, {"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        response.read()
        answered(response.status, time.monotonic() - began)
    connection.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of ``pid`` and of its children (the drain process)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def one(process: int) -> float:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return one(pid), sum(one(int(child)) for child in children)


def drain_threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the drain process's threads, summed by thread name (merges, the insert, Python)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        for task in Path(f"/proc/{child}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """Peak resident memory of ``pid`` (the receiving process) and of its children (the drain process)."""

    def one(process: int) -> float:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return one(pid), sum(one(int(child)) for child in children)


class Collector:
    def __init__(self, root: Path, cpu: int, fsync: str, log_level: str = "warning") -> None:
        self.data = root / "data"
        self.store = StoreConfig(url=os.environ.get("BENCH_STORE_URL") or f"chdb://{root / 'store'}")
        self.log = open(root / "collector.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "llmledger.exporter.cli", "collector", "--url", self.store.url,
                "--data-dir", str(self.data), "--grpc-endpoint", "", "--http-endpoint", "127.0.0.1:0",
                "--clickhouse-http-endpoint", "127.0.0.1:0",
                "--fsync", fsync, "--log-level", log_level, "--max-concurrent-requests", "16",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )  # fmt: skip
        state = self.data / "collector.json"
        deadline = time.monotonic() + 60
        while not state.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"collector did not start: {(root / 'collector.log').read_text()}")
            time.sleep(0.05)
        self.port = int(json.loads(state.read_text())["http_port"])

    def metric(self, name: str) -> float:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        for line in text.splitlines():
            if line.startswith(f"llmledger_collector_{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def run(args: argparse.Namespace) -> dict[str, float]:
    cpus = sorted(os.sched_getaffinity(0))
    collector_cpu, client_cpu = cpus[0], cpus[-1]
    os.sched_setaffinity(0, {client_cpu})
    rng = random.Random(7)
    payloads = [
        make_request(args.batch, args.attributes, rng, finish_reasons=args.finish_reasons) for _ in range(32)
    ]
    with tempfile.TemporaryDirectory(prefix="llmledger-bench-") as tmp:
        collector = Collector(Path(tmp), collector_cpu, args.fsync, "debug" if args.log else "warning")
        try:
            return measure(args, collector, payloads, rng)
        finally:
            collector.stop()
            if args.log:
                shutil.copyfile(Path(tmp) / "collector.log", args.log)


def measure(
    args: argparse.Namespace, collector: Collector, payloads: list[bytes], rng: random.Random
) -> dict[str, float]:
    ack_latencies: list[float] = []
    probes: dict[str, float] = {}  # trace id -> acknowledged at
    queryable: list[float] = []
    lock = threading.Lock()
    sent_spans = [0]
    refused = [0]
    stop = threading.Event()
    start = time.monotonic()
    per_sender_interval = args.batch * args.senders / args.rate if args.rate else 0.0

    def acked(status: int, seconds: float) -> None:
        with lock:
            if status == 200:
                ack_latencies.append(seconds)
                sent_spans[0] += args.batch
            else:
                refused[0] += 1

    def send(worker: int) -> None:
        paced_sends(
            collector.port, "/v1/traces", lambda index: unique(payloads[index % len(payloads)]),
            worker, args.senders, per_sender_interval, start, stop, acked,
        )  # fmt: skip

    def probe() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=30)
        while not stop.wait(0.25):
            trace_id = rng.randbytes(16)
            body = make_request(8, args.attributes, rng, trace_id, finish_reasons=args.finish_reasons)
            connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                with lock:
                    probes[trace_id.hex()] = time.monotonic()
                    sent_spans[0] += 8
        connection.close()

    def poll() -> None:
        client = None
        while not stop.is_set() or probes:
            with lock:
                pending = list(probes)
            if pending:
                try:
                    client = client or open_store(collector.store)
                    rows = run_query(
                        client,
                        "SELECT DISTINCT TraceId FROM otel_traces WHERE TraceId IN {ids:Array(String)}",
                        parameters={"ids": pending},
                    ).result_rows
                except Exception:
                    rows = []
                seen = time.monotonic()
                with lock:
                    for (trace_id,) in rows:
                        if trace_id in probes:
                            queryable.append(seen - probes.pop(trace_id))
            if stop.is_set() and time.monotonic() - start > args.duration + 60:
                return
            time.sleep(args.poll)

    reports: list[float] = []

    def report() -> None:
        # `llmledger report --by tenant` as a user runs it while the collector ingests: its own
        # process (a thread here would take the GIL from the senders and slow the load, not
        # the collector), a new client of the collector's ClickHouse HTTP interface each time.
        command = [str(Path(sys.executable).parent / "llmledger"), "report", "--by", "tenant",
                   "--url", collector.store.url, "--format", "csv"]  # fmt: skip
        while not stop.wait(args.report_every):
            began = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"report failed: {done.stderr.strip()[:300]}", file=sys.stderr, flush=True)
                continue
            reports.append(time.monotonic() - began)

    threads = [threading.Thread(target=send, args=(w,), daemon=True) for w in range(args.senders)]
    threads += [threading.Thread(target=probe, daemon=True)]
    if args.report_every:
        threads.append(threading.Thread(target=report, daemon=True))
    poller = threading.Thread(target=poll, daemon=True)
    for thread in [*threads, poller]:
        thread.start()
    time.sleep(args.duration)
    stop.set()
    for thread in threads:
        thread.join(30)
    sending = time.monotonic() - start
    total = sent_spans[0]
    deadline = time.monotonic() + 120
    while collector.metric("written_spans_total") < total and time.monotonic() < deadline:
        time.sleep(0.05)
    end_to_end = time.monotonic() - start
    poller.join(10)
    written = collector.metric("written_spans_total")
    receiver_cpu, drain_cpu = cpu_seconds(collector.process.pid)
    threads = drain_threads_cpu(collector.process.pid)
    peaks = peak_rss_mib(collector.process.pid)
    by_thread = {
        f"drain_cpu_us_per_span[{name}]": seconds / max(written, 1) * 1e6
        for name, seconds in sorted(threads.items(), key=lambda item: -item[1])
        if seconds / max(written, 1) * 1e6 >= 0.1
    }
    by_thread["drain_cpu_us_per_span[threads since exited]"] = (
        max(0.0, drain_cpu - sum(threads.values())) / max(written, 1) * 1e6
    )
    return {
        "offered_spans_per_second": float(args.rate),
        "acked_spans_per_second": total / sending,
        "end_to_end_spans_per_second": written / end_to_end,
        "spans": float(total),
        "written": written,
        "refused_requests": float(refused[0]),
        "ack_p50_ms": percentile(ack_latencies, 0.5) * 1000,
        "ack_p99_ms": percentile(ack_latencies, 0.99) * 1000,
        "queryable_p50_s": percentile(queryable, 0.5),
        "queryable_p99_s": percentile(queryable, 0.99),
        "queryable_max_s": max(queryable, default=float("nan")),
        "drain_after_load_s": end_to_end - sending,
        "collector_peak_rss_mib": sum(peaks),
        "receiver_peak_rss_mib": peaks[0],
        "drain_peak_rss_mib": peaks[1],
        "receiver_cpu_us_per_span": receiver_cpu / max(total, 1) * 1e6,
        "drain_cpu_us_per_span": drain_cpu / max(written, 1) * 1e6,
        "reports": float(len(reports)),
        "report_p50_ms": percentile(reports, 0.5) * 1000,
        **by_thread,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=50_000, help="offered spans/s (0: as fast as acked)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--batch", type=int, default=512, help="spans per request (the SDK's default batch)")
    parser.add_argument("--attributes", type=int, default=20, help="attributes per span")
    parser.add_argument(
        "--finish-reasons",
        action="store_true",
        help="one of the attributes is gen_ai.response.finish_reasons, a string array, as on llmledger's chat spans",
    )
    parser.add_argument("--senders", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--fsync", choices=("always", "never"), default="always")
    parser.add_argument(
        "--poll",
        type=float,
        default=0.25,
        help="seconds between queries for the probes (each scans otel_traces' trace-id index on the "
        "collector's core, ~10 ms at a million spans; a span is counted queryable up to this late)",
    )
    parser.add_argument(
        "--report-every",
        type=float,
        default=0.0,
        help="also run `llmledger report --by tenant`'s query through the collector every this many s",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--log", type=Path, help="keep the collector's log here (debug level)")
    args = parser.parse_args()
    results = run(args)
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:,.1f}")
    print(
        f"goal: >= {GOALS['spans_per_second']:,} spans/s end to end, ack p99 < {GOALS['ack_p99_ms']} ms, "
        f"queryable p99 < {GOALS['queryable_p99_s']} s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
