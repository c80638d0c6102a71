"""OTLP trace requests in, validated protobuf bytes out: the one decoder both receivers share.

Per the OTLP specification: protobuf or JSON bodies (JSON with hex trace and span ids,
lowerCamelCase or original field names, unknown fields ignored), ``gzip`` content
encoding, and a partial success when some spans are refused. A request is decoded once
to validate it; the bytes that go to the spool are the request's own protobuf bytes
(re-encoded only when it came as JSON or had spans removed).
"""

from __future__ import annotations

import binascii
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "DecodedRequest",
    "InvalidRequestError",
    "TooLargeError",
    "UnsupportedMediaError",
    "decode_http_body",
    "decode_protobuf",
    "encode_response",
    "encode_status",
    "gunzip",
    "refusing_anything",
]

CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
CONTENT_TYPE_JSON: Final = "application/json"

_TRACE_ID_LEN: Final = 16
_SPAN_ID_LEN: Final = 8
_ZERO_TRACE_ID: Final = bytes(_TRACE_ID_LEN)
_ZERO_SPAN_ID: Final = bytes(_SPAN_ID_LEN)


class InvalidRequestError(ValueError):
    """The request cannot be accepted as sent (HTTP 400 / gRPC INVALID_ARGUMENT)."""


class UnsupportedMediaError(InvalidRequestError):
    """A content type or encoding other than protobuf/JSON and gzip/none (HTTP 415)."""


class TooLargeError(InvalidRequestError):
    """The (decompressed) request is over the size limit (HTTP 413 / gRPC RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """What goes to the spool: protobuf bytes and their span count, plus what was refused."""

    payload: bytes
    span_count: int
    rejected_spans: int = 0
    rejection_message: str = ""


def _bad_ids(request: ExportTraceServiceRequest) -> tuple[int, int]:
    """(spans in the request, spans with an invalid trace or span id)."""
    total = 0
    bad = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            total += len(spans)
            for span in spans:
                if not _valid_ids(span.trace_id, span.span_id):
                    bad += 1
    return total, bad


def _valid_ids(trace_id: bytes, span_id: bytes) -> bool:
    return (
        len(trace_id) == _TRACE_ID_LEN
        and len(span_id) == _SPAN_ID_LEN
        and trace_id != _ZERO_TRACE_ID
        and span_id != _ZERO_SPAN_ID
    )


def _drop_bad_spans(request: ExportTraceServiceRequest) -> None:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            keep = [span for span in scope_spans.spans if _valid_ids(span.trace_id, span.span_id)]
            if len(keep) != len(scope_spans.spans):
                kept = [span.SerializeToString() for span in keep]
                del scope_spans.spans[:]
                for data in kept:
                    scope_spans.spans.add().ParseFromString(data)


def _validated(request: ExportTraceServiceRequest, payload: bytes | None) -> DecodedRequest:
    total, bad = _bad_ids(request)
    if not bad:
        return DecodedRequest(payload if payload is not None else request.SerializeToString(), total)
    _drop_bad_spans(request)
    return DecodedRequest(
        request.SerializeToString(),
        total - bad,
        bad,
        f"{bad} span(s) refused: trace ids must be {_TRACE_ID_LEN} bytes and span ids "
        f"{_SPAN_ID_LEN} bytes, not all zero",
    )


def refusing_anything(decode: Callable[[bytes], DecodedRequest], body: bytes, what: str) -> DecodedRequest:
    """``decode(body)``, with any exception a hostile body provokes turned into :class:`InvalidRequestError`.

    A body is the sender's: whatever it makes the decoders raise (``RecursionError`` from JSON
    nested 100,000 deep, ``MemoryError``, an error inside the protobuf runtime) says the body
    cannot be taken, so the answer is 400 / INVALID_ARGUMENT, not 500 — and never a stall.
    """
    try:
        return decode(body)
    except InvalidRequestError:
        raise
    except Exception as exc:
        detail = str(exc)[:200] or "no detail"
        raise InvalidRequestError(f"the body is not a valid {what} ({type(exc).__name__}: {detail})") from exc


def decode_protobuf(payload: bytes) -> DecodedRequest:
    """Validate a protobuf ``ExportTraceServiceRequest`` (the gRPC request or an HTTP body)."""
    return refusing_anything(_decode_protobuf, payload, "OTLP ExportTraceServiceRequest protobuf")


def _decode_protobuf(payload: bytes) -> DecodedRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise InvalidRequestError(
            f"the body is not a valid OTLP ExportTraceServiceRequest protobuf: {exc}"
        ) from exc
    return _validated(request, payload)


def _hex_to_base64(value: object, field: str) -> object:
    if not isinstance(value, str) or not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidRequestError(
            f"{field} {value[:80]!r} is not hex: OTLP/JSON writes trace and span ids as hex strings"
        ) from None
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


_ID_FIELDS: Final = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _convert_ids(node: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        if key in node:
            node[key] = _hex_to_base64(node[key], key)


def _walk_list(container: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    for name in names:
        items = container.get(name)
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]  # pyright: ignore[reportUnknownVariableType]
    return []


def decode_json(body: bytes) -> DecodedRequest:
    """Validate an OTLP/JSON ``ExportTraceServiceRequest``."""
    return refusing_anything(_decode_json, body, "OTLP/JSON ExportTraceServiceRequest")


def _decode_json(body: bytes) -> DecodedRequest:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequestError("an OTLP/JSON body must be a JSON object with resourceSpans")
    root: dict[str, Any] = document  # pyright: ignore[reportUnknownVariableType]
    for resource_spans in _walk_list(root, "resourceSpans", "resource_spans"):
        for scope_spans in _walk_list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _walk_list(scope_spans, "spans"):
                _convert_ids(span)
                for link in _walk_list(span, "links"):
                    _convert_ids(link)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(root, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequestError(
            f"the body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}"
        ) from exc
    return _validated(request, None)


def gunzip(body: bytes, limit: int) -> bytes:
    """``body`` gunzipped, refused past ``limit`` bytes (counted while decompressing)."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequestError(f"the body is not valid gzip: {exc}") from exc
    if len(data) > limit:
        raise TooLargeError(f"the decompressed body is over the {limit}-byte limit")
    if not decompressor.eof:
        raise InvalidRequestError("the gzip body is truncated")
    return data


def decode_http_body(content_type: str, content_encoding: str, body: bytes, limit: int) -> DecodedRequest:
    """Decode an OTLP/HTTP ``/v1/traces`` body (content type and encoding as sent)."""
    return refusing_anything(
        lambda raw: _decode_http_body(content_type, content_encoding, raw, limit), body, "OTLP/HTTP body"
    )


def _decode_http_body(content_type: str, content_encoding: str, body: bytes, limit: int) -> DecodedRequest:
    encoding = content_encoding.strip().lower()
    if encoding == "gzip":
        body = gunzip(body, limit)
    elif encoding not in ("", "identity"):
        raise UnsupportedMediaError(f"unsupported Content-Encoding {content_encoding!r}: use gzip or none")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == CONTENT_TYPE_PROTOBUF:
        return decode_protobuf(body)
    if media == CONTENT_TYPE_JSON:
        return decode_json(body)
    raise UnsupportedMediaError(
        f"unsupported Content-Type {content_type!r}: send {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON}"
    )


def encode_response(json_body: bool, rejected_spans: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse``, with ``partial_success`` when spans were refused."""
    response = ExportTraceServiceResponse()
    if rejected_spans or message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = message
    if json_body:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def encode_status(json_body: bool, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` error body, as OTLP/HTTP sends failures."""
    status = Status(code=code, message=message)
    if json_body:
        return json_format.MessageToJson(status, indent=None).encode()
    return status.SerializeToString()
