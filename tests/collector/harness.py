"""A collector in a child process, and the requests the tests send it (all on 127.0.0.1)."""

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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmledger.exporter._internal.collector import CollectorQueryResult, query_via_collector
from llmledger.exporter._internal.config import StoreConfig

PROTOBUF = "application/x-protobuf"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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
        wait_for(
            lambda: state.exists() or self.process is None or self.process.poll() is not None, 30, "start"
        )
        if not state.exists():
            raise AssertionError(f"the collector did not start:\n{self.log()}")
        ports = json.loads(state.read_text())
        self.grpc_port, self.http_port = ports["grpc_port"], ports["http_port"]
        if wait_ready:
            wait_for(lambda: self.get("/readyz")[0] == 200, 15, "readiness")
            # The drain process reports its first status once the query server is up.
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

    def metric(self, name: str) -> float:
        status, body = self.get("/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith(f"llmledger_collector_{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def query(self, sql: str, parameters: Mapping[str, object] | None = None) -> CollectorQueryResult:
        return query_via_collector(StoreConfig(url=self.store_url), sql, parameters)

    def scalar(self, sql: str, parameters: Mapping[str, object] | None = None) -> Any:
        return self.query(sql, parameters).result_rows[0][0]


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
