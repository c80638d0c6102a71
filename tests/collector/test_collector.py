"""The collector as the OpenTelemetry SDK sees it: standard exporters over TLS, OTLP statuses, health."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from .conftest import TOKEN
from .harness import PROTOBUF, CollectorProcess, make_request, span_ids, wait_for
from .test_otlp_decoding import otlp_json

pytestmark = pytest.mark.subprocess


def send_llm_spans(exporter: SpanExporter, service: str, count: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "tenant.id": "acme"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    tracer = provider.get_tracer("llmledger.instrumentation", "0.1.0")
    for index in range(count):
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100 + index,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.usage.cost": 0.000435,
                "llmledger.cost.source": "price_table",
                "user.id": f"user-{index % 3}",
                "llmledger.feature": "lead_scoring",
            },
        ):
            pass
    assert provider.force_flush(15_000)
    provider.shutdown()


def test_sdk_exporters_over_grpc_and_http_land_in_the_tables(
    secure_collector: CollectorProcess, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = tls_files
    # requests prefers these bundles over the exporter's certificate_file (a session-level verify).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    collector = secure_collector
    before = collector.metric("written_spans_total")
    send_llm_spans(
        GrpcSpanExporter(
            endpoint=f"127.0.0.1:{collector.grpc_port}",
            credentials=grpc.ssl_channel_credentials(cert.read_bytes()),
            headers=(("authorization", f"Bearer {TOKEN}"),),
        ),
        "over-grpc",
        150,
    )
    send_llm_spans(
        HttpSpanExporter(
            endpoint=f"https://127.0.0.1:{collector.http_port}/v1/traces",
            certificate_file=str(cert),
            headers={"Authorization": f"Bearer {TOKEN}"},
            compression=Compression.Gzip,
        ),
        "over-http",
        150,
    )
    wait_for(lambda: collector.metric("written_spans_total") >= before + 300, 20, "300 spans written")
    rows = collector.query(
        "SELECT ServiceName, count(), uniqExact(SpanId), sum(input_tokens), sum(cost_usd), "
        "any(tenant_id), any(provider), any(request_model), any(feature), any(cost_source) "
        "FROM llm_calls WHERE ServiceName LIKE 'over-%' GROUP BY ServiceName ORDER BY ServiceName"
    ).result_rows
    expected_tokens = sum(100 + i for i in range(150))
    assert rows == [
        (
            service,
            150,
            150,
            expected_tokens,
            Decimal("0.000435") * 150,
            "acme",
            "openai",
            "gpt-4o-mini",
            "lead_scoring",
            "price_table",
        )
        for service in ("over-grpc", "over-http")
    ]


def test_otlp_json_with_gzip_is_answered_in_json(secure_collector: CollectorProcess) -> None:
    request = make_request(7, seed=101, service="json-sender")
    status, headers, body = secure_collector.post_traces(
        otlp_json(request), content_type="application/json", gzip_body=True, token=TOKEN
    )
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {}
    ids = span_ids(request)
    wait_for(
        lambda: (
            secure_collector.scalar(
                "SELECT count() FROM otel_traces WHERE SpanId IN {ids:Array(String)}", {"ids": ids}
            )
            == 7
        ),
        20,
        "the JSON spans",
    )
    row = secure_collector.query(
        "SELECT TraceId, SpanAttributes['gen_ai.usage.cost'], SpanAttributes['llmledger.fallback'], "
        "SpanAttributes['server.port'] FROM otel_traces WHERE SpanId = {id:String}",
        {"id": ids[0]},
    ).result_rows
    first = request.resource_spans[0].scope_spans[0].spans[0]
    assert row == [(first.trace_id.hex(), "0.000435", "false", "443")]


def test_partial_success_names_the_refused_spans(secure_collector: CollectorProcess) -> None:
    request = make_request(3, seed=102)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"bad"
    status, _, body = secure_collector.post_traces(request.SerializeToString(), token=TOKEN)
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "trace ids must be 16 bytes" in response.partial_success.error_message


def http_status(body: bytes) -> Status:
    return Status.FromString(body)


def test_http_refusals_say_what_is_wrong(secure_collector: CollectorProcess) -> None:
    collector = secure_collector
    payload = make_request(2, seed=103).SerializeToString()

    status, headers, body = collector.post_traces(payload)
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="llmledger"')
    assert http_status(body).message == "missing or wrong bearer token"
    assert collector.post_traces(payload, token="wrong")[0] == 401

    status, _, body = collector.post_traces(payload, content_type="text/plain", token=TOKEN)
    assert status == 415
    assert "unsupported Content-Type" in json.loads(body)["message"]

    status, _, body = collector.post_traces(b"\x0a\xff\xff\xff", token=TOKEN)
    assert status == 400
    assert http_status(body).code == 3
    assert "not a valid OTLP ExportTraceServiceRequest" in http_status(body).message

    status, _, body = collector.post_traces(
        b'{"resourceSpans": 1}', content_type="application/json", token=TOKEN
    )
    assert (status, json.loads(body)["code"]) == (400, 3)

    # 100,000 deep: the JSON decoder's RecursionError is the sender's problem, not a 500.
    deep = b"[" * 100_000 + b"]" * 100_000
    status, _, body = collector.post_traces(deep, content_type="application/json", token=TOKEN)
    assert (status, json.loads(body)["code"]) == (400, 3)
    assert "RecursionError" in json.loads(body)["message"]

    status, _, body = collector.post_traces(b"\0" * (1 << 20 | 1), token=TOKEN)
    assert status == 413
    assert "over the 1048576-byte limit" in http_status(body).message

    status, _, body = collector.post_traces(b"\0" * (2 << 20), gzip_body=True, token=TOKEN)
    assert status == 413

    for signal in ("/v1/metrics", "/v1/logs"):  # the token guards every signal
        status, _, body = collector.request("POST", signal, b"", {"Content-Type": PROTOBUF})
        assert status == 401
    status, _, body = collector.request(
        "POST", "/v1/profiles", b"", {"Content-Type": PROTOBUF, "Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 404
    assert "does not accept /v1/profiles" in http_status(body).message

    assert collector.request("GET", "/v1/traces")[0] == 405
    assert collector.get("/healthz") == (200, b"ok\n")
    assert collector.metric("rejected_requests_total") >= 7


def grpc_call(
    collector: CollectorProcess, cert: Path, method: str, payload: bytes, token: str | None
) -> grpc.RpcError:
    channel = grpc.secure_channel(
        f"127.0.0.1:{collector.grpc_port}", grpc.ssl_channel_credentials(cert.read_bytes())
    )
    try:
        call = channel.unary_unary(method)  # raw bytes in, raw bytes out
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        with pytest.raises(grpc.RpcError) as raised:
            call(payload, metadata=metadata, timeout=10)
        return raised.value
    finally:
        channel.close()


def test_grpc_refusals_use_the_otlp_codes(
    secure_collector: CollectorProcess, tls_files: tuple[Path, Path]
) -> None:
    cert, _ = tls_files
    export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    payload = make_request(2, seed=104).SerializeToString()
    error = grpc_call(secure_collector, cert, export, payload, None)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # pyright: ignore[reportAttributeAccessIssue]
    error = grpc_call(secure_collector, cert, export, b"\x0a\xff\xff", TOKEN)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # pyright: ignore[reportAttributeAccessIssue]
    assert "not a valid OTLP" in str(error.details())  # pyright: ignore[reportAttributeAccessIssue]
    for service in ("metrics.v1.MetricsService", "logs.v1.LogsService"):
        method = f"/opentelemetry.proto.collector.{service}/Export"
        error = grpc_call(secure_collector, cert, method, b"", None)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # pyright: ignore[reportAttributeAccessIssue]
    error = grpc_call(
        secure_collector,
        cert,
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        b"",
        TOKEN,
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # pyright: ignore[reportAttributeAccessIssue]
    error = grpc_call(secure_collector, cert, export, b"\0" * (1 << 20 | 64), TOKEN)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # pyright: ignore[reportAttributeAccessIssue]
    assert secure_collector.get("/readyz")[0] == 200


def test_metrics_are_prometheus_text(secure_collector: CollectorProcess) -> None:
    status, body = secure_collector.get("/metrics")
    text = body.decode()
    assert status == 200
    for name in (
        "received_spans_total",
        "spooled_spans_total",
        "written_spans_total",
        "rejected_spans_total",
        "retried_spans_total",
        "spool_lag_seconds",
        "spool_bytes",
    ):
        assert f"# TYPE llmledger_collector_{name} " in text
    assert secure_collector.metric("spooled_spans_total") == secure_collector.metric("received_spans_total")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda seed, cut: make_request(3, seed).SerializeToString()[:cut],
            st.integers(0, 99),
            st.integers(0, 4000),
        ),
    ),
    content_type=st.sampled_from(["application/x-protobuf", "application/json", "text/plain", ""]),
    gzipped=st.booleans(),
)
def test_random_bodies_over_the_wire_are_answered_and_never_break_the_collector(
    secure_collector: CollectorProcess,
    tls_files: tuple[Path, Path],
    body: bytes,
    content_type: str,
    gzipped: bool,
) -> None:
    status, _, _ = secure_collector.post_traces(
        body, content_type=content_type, gzip_body=gzipped, token=TOKEN
    )
    assert status in (200, 400, 413, 415)
    cert, _ = tls_files
    channel = grpc.secure_channel(
        f"127.0.0.1:{secure_collector.grpc_port}", grpc.ssl_channel_credentials(cert.read_bytes())
    )
    try:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        try:
            export(body, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # pyright: ignore[reportAttributeAccessIssue]  # noqa: PT017
    finally:
        channel.close()
    assert secure_collector.get("/healthz")[0] == 200
