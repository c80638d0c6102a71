"""Decoding OTLP bodies: protobuf, JSON with hex ids, gzip, partial success, and nothing else."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from llmledger.exporter._internal.collector.otlp import (
    InvalidRequestError,
    TooLargeError,
    UnsupportedMediaError,
    decode_http_body,
    decode_protobuf,
    encode_response,
)

from .harness import make_request

LIMIT = 1 << 20


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """The request as OTLP/JSON: lowerCamelCase, hex ids (as the specification writes it)."""
    document = json_format.MessageToDict(request)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def test_protobuf_bytes_are_kept_as_sent() -> None:
    payload = make_request(5, seed=1).SerializeToString()
    decoded = decode_http_body("application/x-protobuf", "", payload, LIMIT)
    assert decoded.payload == payload
    assert (decoded.span_count, decoded.rejected_spans) == (5, 0)


def test_json_with_hex_ids_becomes_the_same_protobuf() -> None:
    request = make_request(3, seed=2)
    decoded = decode_http_body(
        "application/json; charset=utf-8", "gzip", gzip.compress(otlp_json(request)), LIMIT
    )
    assert ExportTraceServiceRequest.FromString(decoded.payload) == request


def test_json_ignores_unknown_fields_and_accepts_enum_numbers() -> None:
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "chat gpt-4o",
                                "kind": 3,
                                "startTimeUnixNano": "1544712660000000000",
                                "futureField": {"x": 1},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    decoded = decode_http_body("application/json", "", json.dumps(body).encode(), LIMIT)
    span = ExportTraceServiceRequest.FromString(decoded.payload).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.kind == 3


def test_spans_with_invalid_ids_are_a_partial_success() -> None:
    request = make_request(4, seed=3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = b"short"
    spans[2].span_id = bytes(8)
    decoded = decode_protobuf(request.SerializeToString())
    assert (decoded.span_count, decoded.rejected_spans) == (2, 2)
    assert "trace ids must be 16 bytes" in decoded.rejection_message
    kept = ExportTraceServiceRequest.FromString(decoded.payload).resource_spans[0].scope_spans[0].spans
    assert [span.span_id for span in kept] == [spans[0].span_id, spans[3].span_id]
    response = ExportTraceServiceResponse.FromString(encode_response(False, 2, decoded.rejection_message))
    assert response.partial_success.rejected_spans == 2
    assert json.loads(encode_response(True, 2, "x")) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "x"}
    }


@pytest.mark.parametrize(
    ("content_type", "encoding", "body", "error", "message"),
    [
        ("text/plain", "", b"hello", UnsupportedMediaError, "unsupported Content-Type"),
        ("application/x-protobuf", "br", b"", UnsupportedMediaError, "unsupported Content-Encoding"),
        ("application/x-protobuf", "", b"\xff\xff\xff", InvalidRequestError, "not a valid OTLP"),
        ("application/json", "", b"{not json", InvalidRequestError, "not valid JSON"),
        ("application/json", "", b"[1, 2]", InvalidRequestError, "JSON object"),
        ("application/json", "", b'{"resourceSpans": 5}', InvalidRequestError, "OTLP/JSON"),
        (
            "application/json",
            "",
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            InvalidRequestError,
            "not hex",
        ),
        ("application/x-protobuf", "gzip", b"not gzip", InvalidRequestError, "not valid gzip"),
        ("application/x-protobuf", "gzip", gzip.compress(b"\0" * 2048), TooLargeError, "over the 1024-byte"),
    ],
)
def test_bad_bodies_are_refused_with_a_useful_message(
    content_type: str, encoding: str, body: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        decode_http_body(content_type, encoding, body, 1024)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from(["application/x-protobuf", "application/json"]),
    gzipped=st.booleans(),
)
def test_any_bytes_decode_or_are_refused_cleanly(body: bytes, content_type: str, gzipped: bool) -> None:
    if gzipped:
        body = gzip.compress(body)
    try:
        decoded = decode_http_body(content_type, "gzip" if gzipped else "", body, LIMIT)
    except InvalidRequestError as exc:
        assert str(exc)  # noqa: PT017  (hypothesis drives both outcomes)
        return
    # Whatever was accepted parses again: the spool never holds bytes the drain cannot read.
    ExportTraceServiceRequest.FromString(decoded.payload)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 1000),
    position=st.integers(min_value=0),
    value=st.integers(0, 255),
    truncate=st.booleans(),
)
def test_mutated_protobuf_requests_are_accepted_whole_or_refused(
    seed: int, position: int, value: int, truncate: bool
) -> None:
    payload = bytearray(make_request(2, seed=seed, attributes=4).SerializeToString())
    index = position % len(payload)
    if truncate:
        payload = payload[:index]
    else:
        payload[index] = value
    try:
        decoded = decode_protobuf(bytes(payload))
    except InvalidRequestError:
        return
    request = ExportTraceServiceRequest.FromString(decoded.payload)
    count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    assert count == decoded.span_count


@settings(max_examples=150, deadline=None)
@given(
    document=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "name", "kind", "x"]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_documents_are_accepted_or_refused_cleanly(document: object) -> None:
    try:
        decode_http_body("application/json", "", json.dumps(document).encode(), LIMIT)
    except InvalidRequestError as exc:
        assert str(exc)  # noqa: PT017


def nested_kvlist(depth: int) -> bytes:
    """A span attribute whose value is a kvlist nested ``depth`` deep, as raw protobuf bytes."""
    value = b""
    for _ in range(depth):
        key_value = b"\x0a\x01k" + b"\x12" + _length(value) + value  # KeyValue{key, value}
        kvlist = b"\x0a" + _length(key_value) + key_value  # KeyValueList{values}
        value = b"\x32" + _length(kvlist) + kvlist  # AnyValue{kvlist_value}
    return value


def _length(data: bytes) -> bytes:
    out = bytearray()
    size = len(data)
    while size > 0x7F:
        out.append(0x80 | (size & 0x7F))
        size >>= 7
    out.append(size)
    return bytes(out)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"resourceSpans": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
        + b'{"arrayValue": {"values": [' * 20_000
        + b"{}"
        + b"]}}" * 20_000
        + b"}]}]}]}]}",
    ],
    ids=["array", "object", "attribute"],
)
def test_json_nested_100000_deep_is_refused_not_an_internal_error(body: bytes) -> None:
    with pytest.raises(InvalidRequestError, match="not a valid"):
        decode_http_body("application/json", "", body, 16 << 20)


def test_protobuf_nested_deep_is_refused() -> None:
    attribute = nested_kvlist(5_000)
    key_value = b"\x0a\x01a\x12" + _length(attribute) + attribute
    span = b"\x0a\x10" + b"\x01" * 16 + b"\x12\x08" + b"\x02" * 8 + b"\x4a" + _length(key_value) + key_value
    scope_spans = b"\x12" + _length(span) + span
    resource_spans = b"\x12" + _length(scope_spans) + scope_spans
    request = b"\x0a" + _length(resource_spans) + resource_spans
    with pytest.raises(InvalidRequestError, match="not a valid"):
        decode_protobuf(request)


def test_any_exception_a_body_provokes_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the decoders raise on a hostile body (here: MemoryError) is a 400, not a 500."""

    def exhausted(*args: object, **kwargs: object) -> object:
        raise MemoryError("out of memory")

    monkeypatch.setattr(json, "loads", exhausted)
    with pytest.raises(InvalidRequestError, match="MemoryError"):
        decode_http_body("application/json", "", b"{}", LIMIT)
