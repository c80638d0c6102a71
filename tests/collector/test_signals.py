"""Metrics and logs: the OpenTelemetry SDK's own exporters (gRPC, HTTP protobuf, HTTP JSON) into the
collector, every row checked column by column against what the SDK exported."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogExporter
from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter as JsonMetricExporter
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Gauge,
    Histogram,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from llmledger.exporter._internal.stringify import stringify
from tests.fake_openai_server import fake_openai_server

from .harness import (
    CollectorProcess,
    make_logs_request,
    make_metrics_request,
    sequence_numbers,
    wait_for,
)
from .test_chunked import chunked, split

pytestmark = pytest.mark.subprocess

JSON = "application/json"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A plain-HTTP collector (no TLS, no token) with a 1 MiB request limit."""
    root = tmp_path_factory.mktemp("signals")
    process = CollectorProcess(
        root / "data",
        f"chdb://{root / 'store'}",
        args=["--max-request-bytes", "1MiB", "--batch-linger-seconds", "0.2"],
    ).start()
    yield process
    assert process.stop() == 0, process.log()


def exporters(collector: CollectorProcess, signal: str) -> dict[str, Callable[[], Any]]:
    """The SDK's three exporters for ``signal`` (``metrics`` or ``logs``), by protocol."""
    http = f"http://127.0.0.1:{collector.http_port}/v1/{signal}"
    grpc_endpoint = f"127.0.0.1:{collector.grpc_port}"
    if signal == "metrics":
        return {
            "grpc": lambda: GrpcMetricExporter(endpoint=grpc_endpoint, insecure=True),
            "http-protobuf": lambda: HttpMetricExporter(endpoint=http, compression=Compression.Gzip),
            "http-json": lambda: JsonMetricExporter(endpoint=http),
        }
    return {
        "grpc": lambda: GrpcLogExporter(endpoint=grpc_endpoint, insecure=True),
        "http-protobuf": lambda: HttpLogExporter(endpoint=http, compression=Compression.Gzip),
        "http-json": lambda: JsonLogExporter(endpoint=http),
    }


PROTOCOLS = ["grpc", "http-protobuf", "http-json"]


# -- metrics ---------------------------------------------------------------------------------


class RecordingMetricExporter(MetricExporter):
    """The real exporter, keeping what the SDK handed it (the expected rows)."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__()
        self.inner = inner
        self.exported: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is MetricExportResult.SUCCESS:
            self.exported.append(metrics_data)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def attributes(values: Any) -> dict[str, str]:
    return {key: stringify(value) for key, value in (values or {}).items()}


def expected_metric_rows(data: Sequence[MetricsData]) -> dict[str, list[dict[str, Any]]]:
    """What the Collector's exporter writes for these SDK metrics, table by table."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for batch in data:
        for resource_metrics in batch.resource_metrics:
            resource = attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                for metric in scope_metrics.metrics:
                    points: Sequence[Any] = metric.data.data_points
                    for point in points:
                        row: dict[str, Any] = {
                            "ResourceAttributes": resource,
                            "ResourceSchemaUrl": resource_metrics.schema_url,
                            "ScopeName": scope.name,
                            "ScopeVersion": scope.version or "",
                            "ScopeAttributes": attributes(scope.attributes),
                            "ScopeDroppedAttrCount": 0,
                            "ScopeSchemaUrl": scope_metrics.schema_url,
                            "ServiceName": resource["service.name"],
                            "MetricName": metric.name,
                            "MetricDescription": metric.description or "",
                            "MetricUnit": metric.unit or "",
                            "Attributes": attributes(point.attributes),
                            "StartTimeUnix": getattr(point, "start_time_unix_nano", 0) or 0,
                            "TimeUnix": point.time_unix_nano,
                        }
                        exemplars = list(getattr(point, "exemplars", None) or [])
                        row |= {
                            "Exemplars.FilteredAttributes": [
                                attributes(e.filtered_attributes) for e in exemplars
                            ],
                            "Exemplars.TimeUnix": [e.time_unix_nano for e in exemplars],
                            "Exemplars.Value": [float(e.value) for e in exemplars],
                            "Exemplars.SpanId": [format(e.span_id or 0, "016x") for e in exemplars],
                            "Exemplars.TraceId": [format(e.trace_id or 0, "032x") for e in exemplars],
                            "Flags": 0,
                        }
                        kind = metric.data
                        if isinstance(kind, Sum):
                            table = "otel_metrics_sum"
                            row |= {
                                "Value": float(point.value),
                                "AggregationTemporality": int(kind.aggregation_temporality),
                                "IsMonotonic": kind.is_monotonic,
                            }
                        elif isinstance(kind, Gauge):
                            table = "otel_metrics_gauge"
                            row["Value"] = float(point.value)
                        elif isinstance(kind, Histogram):
                            table = "otel_metrics_histogram"
                            row |= {
                                "Count": point.count,
                                "Sum": float(point.sum),
                                "BucketCounts": list(point.bucket_counts),
                                "ExplicitBounds": [float(b) for b in point.explicit_bounds],
                                "Min": float(point.min),
                                "Max": float(point.max),
                                "AggregationTemporality": int(kind.aggregation_temporality),
                            }
                        else:
                            assert isinstance(kind, ExponentialHistogram)
                            table = "otel_metrics_exponential_histogram"
                            row |= {
                                "Count": point.count,
                                "Sum": float(point.sum),
                                "Scale": point.scale,
                                "ZeroCount": point.zero_count,
                                "PositiveOffset": point.positive.offset,
                                "PositiveBucketCounts": list(point.positive.bucket_counts),
                                "NegativeOffset": point.negative.offset,
                                "NegativeBucketCounts": list(point.negative.bucket_counts),
                                "Min": float(point.min),
                                "Max": float(point.max),
                                "AggregationTemporality": int(kind.aggregation_temporality),
                            }
                        tables.setdefault(table, []).append(row)
    return tables


def stored_rows(collector: CollectorProcess, table: str, service: str) -> list[dict[str, Any]]:
    """Every row of ``table`` for ``service``, timestamps as nanoseconds."""
    columns = [
        name
        for (name,) in collector.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
            "AND default_kind = '' ORDER BY position",
            {"t": table},
        ).result_rows
    ]
    select = ", ".join(
        f"toUnixTimestamp64Nano(`{name}`) AS `{name}`"
        if name in ("StartTimeUnix", "TimeUnix", "Timestamp")
        else f"arrayMap(t -> toUnixTimestamp64Nano(t), `{name}`) AS `{name}`"
        if name == "Exemplars.TimeUnix"
        else f"`{name}`"
        for name in columns
    )
    result = collector.query(f"SELECT {select} FROM {table} WHERE ServiceName = {{s:String}}", {"s": service})
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def by_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        rows,
        key=lambda row: (row["MetricName"], row["TimeUnix"], json.dumps(row["Attributes"], sort_keys=True)),
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sdk_metric_exporters_land_column_by_column(collector: CollectorProcess, protocol: str) -> None:
    service = f"metrics-{protocol}"
    exporter = RecordingMetricExporter(exporters(collector, "metrics")[protocol]())
    provider = MeterProvider(
        [PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)],
        resource=Resource.create({"service.name": service, "tenant.id": "acme", "deployment.replica": 3}),
        views=[View(instrument_name="latency.exp", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("llmledger.instrumentation", "0.1.0", attributes={"scope.kind": "test"})
    tracer = TracerProvider().get_tracer("test")
    tokens = meter.create_histogram(
        "gen_ai.client.token.usage",
        unit="{token}",
        description="Number of input and output tokens used",
        explicit_bucket_boundaries_advisory=[1, 4, 16, 64, 256, 1024, 4096],
    )
    cost = meter.create_counter("llmledger.client.cost", unit="USD")
    in_flight = meter.create_up_down_counter("app.in_flight")
    temperature = meter.create_gauge("app.temperature", unit="Cel")
    latency = meter.create_histogram("latency.exp", unit="s")
    with tracer.start_as_current_span("chat gpt-4o-mini"):  # a sampled span: exemplars
        tokens.record(120, {"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o-mini"})
        tokens.record(30, {"gen_ai.token.type": "output", "gen_ai.request.model": "gpt-4o-mini"})
    tokens.record(5000, {"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o-mini"})
    cost.add(0.000435, {"gen_ai.request.model": "gpt-4o-mini", "cached": True})
    cost.add(0.25, {"gen_ai.request.model": "gpt-4o"})
    in_flight.add(3)
    in_flight.add(-5)
    temperature.set(21.5, {"room": "a"})
    temperature.set(-3)
    for value in (0.002, 0.5, 0.5, 12.0):
        latency.record(value)
    provider.shutdown()  # one collection, exported once
    expected = expected_metric_rows(exporter.exported)
    assert set(expected) == {
        "otel_metrics_sum",
        "otel_metrics_gauge",
        "otel_metrics_histogram",
        "otel_metrics_exponential_histogram",
    }
    assert any(row["Exemplars.SpanId"] for row in expected["otel_metrics_histogram"])
    count = sum(map(len, expected.values()))
    wait_for(
        lambda: sum(len(stored_rows(collector, table, service)) for table in expected) == count,
        30,
        f"{count} data points from {protocol}",
    )
    for table, rows in expected.items():
        assert by_key(stored_rows(collector, table, service)) == by_key(rows), table


def test_summaries_and_exemplar_ids_as_the_exporter_writes_them(collector: CollectorProcess) -> None:
    """The SDK makes no summaries: a raw OTLP request, over HTTP JSON with hex ids."""
    document = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "summary-json"}}]
                },
                "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
                "scopeMetrics": [
                    {
                        "scope": {"name": "legacy", "version": "2", "droppedAttributesCount": 4},
                        "metrics": [
                            {
                                "name": "rpc.duration",
                                "summary": {
                                    "dataPoints": [
                                        {
                                            "startTimeUnixNano": "1767225600000000000",
                                            "timeUnixNano": "1767225660000000000",
                                            "count": "10",
                                            "sum": 4.5,
                                            "quantileValues": [
                                                {"quantile": 0.5, "value": 0.3},
                                                {"quantile": 0.99, "value": 1.5},
                                            ],
                                            "flags": 1,
                                        }
                                    ]
                                },
                            },
                            {
                                "name": "queue.depth",
                                "gauge": {
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": "1767225660000000000",
                                            "asInt": "42",
                                            "exemplars": [
                                                {
                                                    "timeUnixNano": "1767225659000000000",
                                                    "asInt": "40",
                                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                                    "spanId": "eee19b7ec3c1b174",
                                                },
                                                {"timeUnixNano": "1767225659500000000", "asDouble": 41.5},
                                            ],
                                        }
                                    ]
                                },
                            },
                        ],
                    }
                ],
            }
        ]
    }
    status, _, body = collector.post("/v1/metrics", json.dumps(document).encode(), content_type=JSON)
    assert (status, json.loads(body)) == (200, {})
    wait_for(lambda: len(stored_rows(collector, "otel_metrics_gauge", "summary-json")) == 1, 30, "the gauge")
    (summary,) = stored_rows(collector, "otel_metrics_summary", "summary-json")
    assert summary | {"ResourceAttributes": None} == {
        "ResourceAttributes": None,
        "ResourceSchemaUrl": "https://opentelemetry.io/schemas/1.26.0",
        "ScopeName": "legacy",
        "ScopeVersion": "2",
        "ScopeAttributes": {},
        "ScopeDroppedAttrCount": 4,
        "ScopeSchemaUrl": "",
        "ServiceName": "summary-json",
        "MetricName": "rpc.duration",
        "MetricDescription": "",
        "MetricUnit": "",
        "Attributes": {},
        "StartTimeUnix": 1767225600000000000,
        "TimeUnix": 1767225660000000000,
        "Count": 10,
        "Sum": 4.5,
        "ValueAtQuantiles.Quantile": [0.5, 0.99],
        "ValueAtQuantiles.Value": [0.3, 1.5],
        "Flags": 1,
    }
    (gauge,) = stored_rows(collector, "otel_metrics_gauge", "summary-json")
    assert (gauge["Value"], gauge["StartTimeUnix"]) == (42.0, 0)
    assert gauge["Exemplars.Value"] == [40.0, 41.5]
    assert gauge["Exemplars.TimeUnix"] == [1767225659000000000, 1767225659500000000]
    # An absent exemplar id is written as Go's hex of the zero id, not "" (unlike spans and logs).
    assert gauge["Exemplars.TraceId"] == ["5b8efff798038103d269b633813fc60c", "0" * 32]
    assert gauge["Exemplars.SpanId"] == ["eee19b7ec3c1b174", "0" * 16]


def test_metrics_refusals_and_chunked_bodies(collector: CollectorProcess) -> None:
    status, _, body = collector.post("/v1/metrics", b"\x0a\xff\xff\xff")
    assert status == 400
    assert "not a valid OTLP ExportMetricsServiceRequest" in Status.FromString(body).message
    status, _, body = collector.post("/v1/logs", b'{"resourceLogs": 1}', content_type=JSON)
    assert (status, json.loads(body)["code"]) == (400, 3)
    status, _, body = collector.post(
        "/v1/logs",
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "xyz"}]}]}]}',
        content_type=JSON,
    )
    assert status == 400
    assert "is not hex" in json.loads(body)["message"]
    assert collector.request("GET", "/v1/metrics")[0] == 405
    assert collector.post("/v1/profiles", b"")[0] == 404

    # Chunked, as Node's exporters send every signal: gzip inside, and cut off mid-chunk.
    spooled = collector.metric("spooled_data_points_total")
    request = make_metrics_request(20, seed=1, service="chunked-metrics")
    payload = gzip.compress(request.SerializeToString())
    wire = chunked(split(payload, [7, 100, 1000]))
    head = (
        b"POST /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert raw_exchange(collector, head + wire)[0] == 200
    status, body = raw_exchange(collector, head + wire[: len(wire) - 40], close_write=True)
    assert status == 400
    assert "cut off" in Status.FromString(body).message
    wait_for(lambda: collector.metric("written_data_points_total") >= spooled + 20, 30, "the chunked points")
    assert collector.metric("spooled_data_points_total") == spooled + 20
    assert (
        collector.scalar("SELECT count() FROM otel_metrics_histogram WHERE ServiceName = 'chunked-metrics'")
        == 20
    )


def raw_exchange(collector: CollectorProcess, wire: bytes, *, close_write: bool = False) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", collector.http_port), timeout=10) as sock:
        sock.sendall(wire)
        if close_write:
            sock.shutdown(socket.SHUT_WR)  # the sender died mid-body
        response = sock.makefile("rb")
        status = int(response.readline().split()[1])
        length = 0
        while (line := response.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return status, response.read(length)


def test_grpc_metrics_answer_an_export_response(collector: CollectorProcess) -> None:
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    try:
        call = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        answer = call(make_metrics_request(3, seed=2, service="raw-grpc").SerializeToString(), timeout=10)
        assert ExportMetricsServiceResponse.FromString(answer) == ExportMetricsServiceResponse()
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\x0a\xff\xff\xff", timeout=10)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    finally:
        channel.close()


# -- logs ------------------------------------------------------------------------------------


class RecordingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.exported: list[ReadableLogRecord] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        if result is LogRecordExportResult.SUCCESS:
            self.exported.extend(batch)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


def expected_log_row(record: ReadableLogRecord) -> dict[str, Any]:
    log = record.log_record
    scope = record.instrumentation_scope
    assert scope is not None
    resource = attributes(record.resource.attributes)
    body = log.body
    return {
        "Timestamp": log.timestamp or log.observed_timestamp,
        "TraceId": format(log.trace_id, "032x") if log.trace_id else "",
        "SpanId": format(log.span_id, "016x") if log.span_id else "",
        "TraceFlags": int(log.trace_flags or 0),
        "SeverityText": log.severity_text or "",
        "SeverityNumber": log.severity_number.value if log.severity_number else 0,
        "ServiceName": resource["service.name"],
        "Body": "" if body is None else stringify(body),
        "ResourceSchemaUrl": record.resource.schema_url,
        "ResourceAttributes": resource,
        "ScopeSchemaUrl": scope.schema_url or "",
        "ScopeName": scope.name,
        "ScopeVersion": scope.version or "",
        "ScopeAttributes": attributes(scope.attributes),
        "LogAttributes": attributes(log.attributes),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sdk_log_exporters_land_column_by_column(collector: CollectorProcess, protocol: str) -> None:
    service = f"logs-{protocol}"
    exporter = RecordingLogExporter(exporters(collector, "logs")[protocol]())
    provider = LoggerProvider(resource=Resource.create({"service.name": service, "tenant.id": "acme"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("app.billing", "1.2.3", attributes={"team": "ledger"})
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("charge"):
        logger.emit(
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body="budget 80% used",
            attributes={"tenant.id": "acme", "ratio": 0.8, "over": False},
        )
    logger.emit(body={"event": "invoice", "lines": [1, 2]}, attributes={"amount": 12})
    logger.emit(
        timestamp=1_767_225_600_123_456_789,
        severity_number=SeverityNumber.ERROR,
        body="no price for model",
        attributes={"gen_ai.request.model": "mystery-1"},
    )
    provider.shutdown()
    assert len(exporter.exported) == 3
    expected = sorted(
        (expected_log_row(record) for record in exporter.exported), key=lambda row: row["Timestamp"]
    )
    assert expected[1]["TraceId"]
    assert expected[1]["TraceFlags"] & 1

    def stored() -> list[dict[str, Any]]:
        return sorted(stored_rows(collector, "otel_logs", service), key=lambda row: row["Timestamp"])

    wait_for(lambda: len(stored()) == 3, 30, f"3 log records from {protocol}")
    assert stored() == expected
    times = collector.query(
        "SELECT TimestampTime = toDateTime(Timestamp) FROM otel_logs WHERE ServiceName = {s:String}",
        {"s": service},
    ).result_rows
    assert times == [(True,)] * 3


def test_requests_made_for_the_fault_tests_are_what_they_say(collector: CollectorProcess) -> None:
    metrics = make_metrics_request(4, seed=9, service="made-metrics")
    logs = make_logs_request(4, seed=9, service="made-logs")
    assert collector.post("/v1/metrics", metrics.SerializeToString())[0] == 200
    assert collector.post("/v1/logs", logs.SerializeToString())[0] == 200
    wait_for(
        lambda: collector.scalar("SELECT count() FROM otel_logs WHERE ServiceName = 'made-logs'") == 4,
        30,
        "the logs",
    )
    seqs = collector.query(
        "SELECT Attributes['seq'] FROM otel_metrics_histogram WHERE ServiceName = 'made-metrics' ORDER BY TimeUnix"
    ).result_rows
    assert [seq for (seq,) in seqs] == sequence_numbers(metrics)
    assert isinstance(metrics, ExportMetricsServiceRequest)


# -- zero-code: opentelemetry-instrument against the collector ---------------------------------

ZERO_CODE_APP = """
import openai
from llmledger.instrumentation import attribution

client = openai.OpenAI(max_retries=0)
with attribution(tenant_id="acme", feature="lead_scoring"):
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    client.embeddings.create(model="text-embedding-3-small", input="hello")
print("APP-DONE")
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_zero_code_app_exports_traces_and_metrics_without_an_error(
    collector: CollectorProcess, tmp_path: Path, tiktoken_offline: Path, protocol: str
) -> None:
    """The documented run: every signal the SDK exports by default is taken, stderr stays clean."""
    app = tmp_path / "app.py"
    app.write_text(ZERO_CODE_APP)
    service = f"zero-code-{protocol.replace('/', '-')}"
    port = collector.grpc_port if protocol == "grpc" else collector.http_port
    with fake_openai_server() as base_url:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-test",
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "TIKTOKEN_CACHE_DIR": str(tiktoken_offline),
        }
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
            env.pop(name, None)  # the SDK's defaults: OTLP for every signal
        done = subprocess.run(
            [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, str(app)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "APP-DONE" in done.stdout
    assert "Failed to export" not in done.stderr, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr
    wait_for(
        # otel_traces, not llm_calls: that bills a provider response once, and the fake
        # server answers both protocols' runs with the same response ids.
        lambda: (
            collector.scalar(
                "SELECT count() FROM otel_traces WHERE ServiceName = {s:String} "
                "AND SpanAttributes['gen_ai.operation.name'] != ''",
                {"s": service},
            )
            == 2
        ),
        30,
        "the two LLM call spans",
    )
    names = {
        name
        for (name,) in collector.query(
            "SELECT DISTINCT MetricName FROM otel_metrics_histogram WHERE ServiceName = {s:String}",
            {"s": service},
        ).result_rows
    }
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= names
