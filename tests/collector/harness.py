"""A collector in a child process, and the requests the tests send it (all on 127.0.0.1).

Every collector started here is let go by the test that started it: the ``collectors_end_with_their_test``
fixture (conftest.py) kills what a failed test left running, with its drain process.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmledger.exporter._internal.config import StoreConfig
from tests.polling import wait_for

if TYPE_CHECKING:  # the instrumentation-only environment (test-oldest) imports this module too
    from clickhouse_connect.driver.query import QueryResult

PROTOBUF = "application/x-protobuf"
DAY_NS = 86_400 * 1_000_000_000
MAX_UINT64 = (1 << 64) - 1  # the largest time an OTLP request can carry, past DateTime64(9)


@dataclass
class CollectorProcess:
    """``llmledger collector`` started with a data dir and store of its own."""

    data_dir: Path
    store_url: str
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    preexec_fn: Callable[[], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    grpc_port: int = 0
    http_port: int = 0
    log_path: Path | None = None
    ssl_context: ssl.SSLContext | None = None
    command_prefix: Sequence[str] = ()  # e.g. run it in a mount namespace of its own
    # Every collector started in this process, in order (see close_started_since).
    started: ClassVar[list[CollectorProcess]] = []

    def start(self, *, wait_ready: bool = True) -> CollectorProcess:
        state = self.data_dir / "collector.json"
        state.unlink(missing_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-collector-{int(time.time() * 1000)}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LLMLEDGER_COLLECTOR_LOG_LEVEL": "debug", **self.env}
        env.pop("LLMLEDGER_CLICKHOUSE_URL", None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    *self.command_prefix,
                    sys.executable,
                    "-m",
                    "llmledger.exporter.cli",
                    "collector",
                    "--url",
                    self.store_url,
                    "--data-dir",
                    str(self.data_dir),
                    "--grpc-endpoint",
                    "127.0.0.1:0",
                    "--http-endpoint",
                    "127.0.0.1:0",
                    "--clickhouse-http-endpoint",
                    "127.0.0.1:0",
                    "--retry-initial-seconds",
                    "0.1",
                    "--retry-max-seconds",
                    "0.5",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=self.preexec_fn,
            )
        CollectorProcess.started.append(self)
        wait_for(
            lambda: state.exists() or self.process is None or self.process.poll() is not None, 30, "start"
        )
        if not state.exists():
            raise AssertionError(f"the collector did not start:\n{self.log()}")
        ports = json.loads(state.read_text())
        self.grpc_port, self.http_port = ports["grpc_port"], ports["http_port"]
        if wait_ready:
            wait_for(lambda: self.get("/readyz")[0] == 200, 15, "readiness")
            # The drain process reports its first status once it runs.
            wait_for(lambda: not math.isnan(self.metric("store_up")), 30, "the drain process")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        """Nothing of this collector runs on: SIGKILL it and its drain process if they still run."""
        if self.process is None:
            return
        # Looked up before the kill: once the collector is gone its children are re-parented.
        descendants = _descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pid in descendants:
            with suppress(ProcessLookupError):  # gone with the collector already
                os.kill(pid, signal.SIGKILL)

    @classmethod
    def close_started_since(cls, count: int) -> None:
        """:meth:`close` every collector started after the first ``count``."""
        while len(cls.started) > count:
            cls.started.pop().close()

    # -- HTTP ----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = (
            http.client.HTTPSConnection("127.0.0.1", self.http_port, timeout=10, context=self.ssl_context)
            if self.ssl_context is not None
            else http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        )
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            status, _, body = self.request("GET", path)
        except OSError:
            return 0, b""
        return status, body

    def post_traces(
        self,
        payload: bytes,
        *,
        content_type: str = PROTOBUF,
        gzip_body: bool = False,
        token: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": content_type}
        if gzip_body:
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", "/v1/traces", payload, headers)

    def post(
        self, path: str, payload: bytes, *, content_type: str = PROTOBUF
    ) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", path, payload, {"Content-Type": content_type})

    def metric(self, name: str) -> float:
        status, body = self.get("/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith(f"llmledger_collector_{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def query(self, sql: str, parameters: Mapping[str, object] | None = None) -> QueryResult:
        """A read through the collector's ClickHouse HTTP interface, as every tool reads an owned store."""
        from llmledger.exporter._internal.store import open_store, run_query

        client = open_store(StoreConfig(url=self.store_url))
        try:
            return run_query(client, sql, parameters=parameters)
        finally:
            client.close()

    def scalar(self, sql: str, parameters: Mapping[str, object] | None = None) -> Any:
        return self.query(sql, parameters).result_rows[0][0]


def _descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (Linux /proc), deepest last."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def drain_pid(collector: CollectorProcess) -> int:
    """The collector's drain process."""
    (child,) = Path(f"/proc/{collector.pid}/task/{collector.pid}/children").read_text().split()
    return int(child)


@contextmanager
def drain_held(collector: CollectorProcess) -> Iterator[int]:
    """The drain process stopped (SIGSTOP) meanwhile, so that what is sent lands in one batch; its id."""
    drain = drain_pid(collector)
    os.kill(drain, signal.SIGSTOP)
    try:
        yield drain
    finally:
        os.kill(drain, signal.SIGCONT)


@contextmanager
def store_held(path: Path) -> Iterator[None]:
    """The embedded store at ``path`` opened by another process meanwhile (a tool holding it)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from llmledger.exporter._internal.config import StoreConfig\n"
            "from llmledger.exporter._internal.store import open_store\n"
            f"client = open_store(StoreConfig(url='chdb://{path}'), write=True)\n"
            "print('held', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        if holder.stdin is not None:
            holder.stdin.close()  # the holder's cue to let go
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(10)


def store_with_check(tmp_path: Path, name: str, expression: str, table: str = "otel_traces") -> StoreConfig:
    """A store whose ``table`` has an operator's CHECK constraint ``name``: ``expression``."""
    from llmledger.exporter._internal.migrations import apply_migrations
    from llmledger.exporter._internal.store import open_store, run_command

    store = StoreConfig(url=f"chdb://{tmp_path / 'store'}")
    client = open_store(store, use_database=False, write=True)
    try:
        apply_migrations(client, store)
        run_command(client, f"ALTER TABLE {store.database}.{table} ADD CONSTRAINT {name} CHECK {expression}")
    finally:
        client.close()
    return store


def dead_letters(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``llmledger collector dead-letters --data-dir data_dir *args``, as an operator runs it
    (``--url`` given by the caller when it writes, never taken from the environment)."""
    env = {key: value for key, value in os.environ.items() if key != "LLMLEDGER_CLICKHOUSE_URL"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "llmledger.exporter.cli",
            "collector",
            "dead-letters",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def wait_drained(collector: CollectorProcess, timeout: float = 60, *, items: str = "spans") -> None:
    """Until every spooled item of a signal (``spans``, ``data_points``, ``log_records``) is
    committed: written or dead-lettered (counted with the spool's cursor)."""

    def drained() -> bool:
        done = collector.metric(f"written_{items}_total") + collector.metric(f"dead_letter_{items}_total")
        return (
            done == collector.metric(f"spooled_{items}_total")
            and collector.metric("spool_pending_bytes") == 0
        )

    wait_for(drained, timeout, f"the spool of {items.replace('_', ' ')} to drain")


Request = ExportTraceServiceRequest | ExportMetricsServiceRequest | ExportLogsServiceRequest


class SteadyClient:
    """A well-behaved client posting a request every 50 ms the whole time it is entered; what it was told, kept.

    ``make(seed)`` builds each request; ``acked`` holds the span ids (or sequence numbers)
    of those answered 200.
    """

    def __init__(self, collector: CollectorProcess, path: str, make: Callable[[int], Request]) -> None:
        self._collector = collector
        self._path = path
        self._make = make
        self.acked: list[str] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        seed = 50_000_000
        while not self._stop.is_set():
            request = self._make(seed)
            seed += 1
            try:
                status, _, _ = self._collector.post(self._path, request.SerializeToString())
            except OSError:
                continue
            self.statuses.append(status)
            if status == 200:
                self.acked += (
                    span_ids(request)
                    if isinstance(request, ExportTraceServiceRequest)
                    else sequence_numbers(request)
                )
            self._stop.wait(0.05)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def make_request(
    spans: int, seed: int, *, tenant: str = "acme", attributes: int = 20, service: str = "checkout"
) -> ExportTraceServiceRequest:
    """An OTLP request of ``spans`` LLM-shaped spans with about ``attributes`` attributes each."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (("service.name", service), ("tenant.id", tenant)):
        kv = resource_spans.resource.attributes.add()
        kv.key = key
        kv.value.string_value = value
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "llmledger"
    scope_spans.scope.version = "0.1.0"
    base = 1_767_225_600_000_000_000 + seed * 1_000_000
    for index in range(spans):
        span = scope_spans.spans.add()
        span.trace_id = rng.randbytes(16)
        span.span_id = rng.randbytes(8)
        span.name = "chat gpt-4o-mini"
        span.kind = Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = base + index * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + 250_000_000
        fixed: list[tuple[str, object]] = [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            ("gen_ai.response.id", f"chatcmpl-{seed}-{index}"),
            ("gen_ai.usage.input_tokens", 120 + index % 7),
            ("gen_ai.usage.output_tokens", 30),
            ("gen_ai.usage.cost", 0.000435),
            ("llmledger.cost.source", "price_table"),
            ("tenant.id", tenant),
            ("user.id", f"user-{index % 5}"),
            ("llmledger.feature", "lead_scoring"),
            ("llmledger.fallback", False),
            ("llmledger.fallback.attempt", 0),
            ("openai.api.type", "chat_completions"),
            ("server.address", "api.openai.com"),
            ("server.port", 443),
            ("gen_ai.request.stream", False),
        ]
        while len(fixed) < attributes:
            fixed.append((f"app.extra.{len(fixed)}", f"value-{index % 11}"))
        for key, value in fixed[:attributes]:
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, bool):
                kv.value.bool_value = value
            elif isinstance(value, int):
                kv.value.int_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.string_value = str(value)
    return request


def span_ids(request: ExportTraceServiceRequest) -> list[str]:
    return [
        span.span_id.hex()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


# The semantic-convention bucket boundaries of gen_ai.client.token.usage.
TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]


def make_metrics_request(points: int, seed: int, *, service: str = "checkout") -> ExportMetricsServiceRequest:
    """``points`` histogram data points of ``gen_ai.client.token.usage``, each with a unique ``seq``."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    kv = resource_metrics.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = "llmledger.instrumentation"
    metric = scope_metrics.metrics.add()
    metric.name, metric.unit = "gen_ai.client.token.usage", "{token}"
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    base = 1_767_225_600_000_000_000 + seed * 1_000_000
    for index in range(points):
        point = metric.histogram.data_points.add()
        for key, value in (("seq", f"{seed}-{index}"), ("gen_ai.token.type", "input")):
            attribute = point.attributes.add()
            attribute.key, attribute.value.string_value = key, value
        point.start_time_unix_nano, point.time_unix_nano = base, base + index + 1
        point.count, point.sum = 2, 300.0
        point.explicit_bounds.extend(TOKEN_BOUNDS)
        point.bucket_counts.extend([0] * 5 + [2] + [0] * (len(TOKEN_BOUNDS) - 5))
    return request


def make_logs_request(records: int, seed: int, *, service: str = "checkout") -> ExportLogsServiceRequest:
    """``records`` log records, each with a unique ``seq`` attribute."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    kv = resource_logs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "app"
    base = 1_767_225_600_000_000_000 + seed * 1_000_000
    for index in range(records):
        record = scope_logs.log_records.add()
        record.time_unix_nano = base + index
        record.severity_number, record.severity_text = SeverityNumber.SEVERITY_NUMBER_INFO, "INFO"
        record.body.string_value = f"request {seed}-{index} done"
        attribute = record.attributes.add()
        attribute.key, attribute.value.string_value = "seq", f"{seed}-{index}"
    return request


def sequence_numbers(request: ExportMetricsServiceRequest | ExportLogsServiceRequest) -> list[str]:
    """The ``seq`` attributes of a request made by :func:`make_metrics_request` or :func:`make_logs_request`."""
    if isinstance(request, ExportMetricsServiceRequest):
        points = [
            point
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.WhichOneof("data") is not None
            for point in getattr(metric, str(metric.WhichOneof("data"))).data_points
        ]
    else:
        points = [
            record
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
    return [next(kv.value.string_value for kv in point.attributes if kv.key == "seq") for point in points]
