"""OTLP trace requests in, validated protobuf bytes out: the one decoder both receivers share.

Per the OTLP specification: protobuf or JSON bodies (JSON with hex trace and span ids,
lowerCamelCase or original field names, unknown fields ignored), ``gzip`` content
encoding, and a partial success when some spans are refused. A request is decoded once
to validate it; the bytes that go to the spool are the request's own protobuf bytes
(re-encoded only when it came as JSON or had spans removed). The parsing of a body into a
request, the hex ids of OTLP/JSON and the choice by content type and encoding serve the
metrics and logs decoders too (:mod:`.otlp_signals`).
"""

from __future__ import annotations

import binascii
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
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
    "decode_http_body_with",
    "decode_protobuf",
    "encode_response",
    "encode_status",
    "gunzip",
    "hex_id_to_base64",
    "parse_json",
    "parse_protobuf",
    "refusing_anything",
]

CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
CONTENT_TYPE_JSON: Final = "application/json"

_TRACE_ID_LEN: Final = 16
_SPAN_ID_LEN: Final = 8
_ZERO_TRACE_ID: Final = bytes(_TRACE_ID_LEN)
_ZERO_SPAN_ID: Final = bytes(_SPAN_ID_LEN)

_Request = TypeVar("_Request", bound=Message)


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
    return _validated(parse_protobuf(ExportTraceServiceRequest(), payload), payload)


def parse_protobuf(request: _Request, payload: bytes) -> _Request:
    """``payload`` parsed into the empty export ``request``; bytes that do not parse are an invalid request."""
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise InvalidRequestError(
            f"the body is not a valid OTLP {request.DESCRIPTOR.name} protobuf: {exc}"
        ) from exc
    return request


def parse_json(
    body: bytes, request: _Request, ids_to_base64: Callable[[dict[str, Any]], None], expected: str
) -> _Request:
    """An OTLP/JSON ``body`` parsed into the empty export ``request``.

    ``ids_to_base64`` first rewrites the document's hex trace and span ids as the base64
    protobuf's JSON mapping reads (see :func:`hex_id_to_base64`); ``expected`` ends the
    message for a body that is not a JSON object.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequestError(f"an OTLP/JSON body must be a JSON object {expected}")
    root: dict[str, Any] = document  # pyright: ignore[reportUnknownVariableType]
    ids_to_base64(root)
    try:
        json_format.ParseDict(root, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequestError(
            f"the body is not a valid OTLP/JSON {request.DESCRIPTOR.name}: {exc}"
        ) from exc
    return request


def hex_id_to_base64(value: object, field: str) -> object:
    """An OTLP/JSON id (hex) as protobuf's JSON mapping reads bytes (base64); anything but a non-empty string as it is."""
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
            node[key] = hex_id_to_base64(node[key], key)


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
    return _validated(
        parse_json(body, ExportTraceServiceRequest(), _span_ids_to_base64, "with resourceSpans"), None
    )


def _span_ids_to_base64(root: dict[str, Any]) -> None:
    for resource_spans in _walk_list(root, "resourceSpans", "resource_spans"):
        for scope_spans in _walk_list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _walk_list(scope_spans, "spans"):
                _convert_ids(span)
                for link in _walk_list(span, "links"):
                    _convert_ids(link)


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
    return decode_http_body_with(decode_protobuf, decode_json, content_type, content_encoding, body, limit)


def decode_http_body_with(
    protobuf: Callable[[bytes], DecodedRequest],
    json_body: Callable[[bytes], DecodedRequest],
    content_type: str,
    content_encoding: str,
    body: bytes,
    limit: int,
) -> DecodedRequest:
    """An OTLP/HTTP body of any signal: gunzipped as its encoding says, decoded by ``protobuf`` or ``json_body``."""

    def decode(raw: bytes) -> DecodedRequest:
        encoding = content_encoding.strip().lower()
        if encoding == "gzip":
            raw = gunzip(raw, limit)
        elif encoding not in ("", "identity"):
            raise UnsupportedMediaError(
                f"unsupported Content-Encoding {content_encoding!r}: use gzip or none"
            )
        media = content_type.split(";", 1)[0].strip().lower()
        if media == CONTENT_TYPE_PROTOBUF:
            return protobuf(raw)
        if media == CONTENT_TYPE_JSON:
            return json_body(raw)
        raise UnsupportedMediaError(
            f"unsupported Content-Type {content_type!r}: send {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON}"
        )

    return refusing_anything(decode, body, "OTLP/HTTP body")


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
