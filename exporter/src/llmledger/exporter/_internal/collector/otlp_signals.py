"""The three OTLP signals the collector takes, and the decoding of metrics and logs requests.

Traces keep their own decoder (:mod:`.otlp`: id validation, partial success). Metrics and
logs requests are validated by parsing them whole (protobuf, or OTLP/JSON with hex trace
and span ids, lowerCamelCase or original field names, unknown fields ignored, gzip) and
spooled as the request's own protobuf bytes (re-encoded only when it came as JSON).
Each signal has a spool of its own (``<data_dir>/spool`` for traces, ``spool-metrics``,
``spool-logs``), with the same guarantees, drained into its own tables.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from .otlp import (
    DecodedRequest,
    decode_http_body_with,
    hex_id_to_base64,
    parse_json,
    parse_protobuf,
    refusing_anything,
)

__all__ = [
    "Signal",
    "count_data_points",
    "count_log_records",
    "decode_signal_http_body",
    "decode_signal_protobuf",
    "encode_signal_response",
]


class Signal(enum.Enum):
    """An OTLP signal: its HTTP path, gRPC service, spool directory and counter names."""

    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def http_path(self) -> str:
        return f"/v1/{self.value}"

    @property
    def grpc_service(self) -> str:
        name = {"traces": "trace", "metrics": "metrics", "logs": "logs"}[self.value]
        return f"opentelemetry.proto.collector.{name}.v1.{name.capitalize()}Service"

    @property
    def spool_name(self) -> str:
        """The spool directory under ``data_dir`` (traces keep the original ``spool``)."""
        return "spool" if self is Signal.TRACES else f"spool-{self.value}"

    @property
    def items(self) -> str:
        """What the signal's counters count: ``spans``, ``data_points``, ``log_records``."""
        return {"traces": "spans", "metrics": "data_points", "logs": "log_records"}[self.value]


def count_data_points(request: ExportMetricsServiceRequest) -> int:
    """Data points in a metrics request (what becomes one row each)."""
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which is not None:
                    total += len(getattr(metric, which).data_points)
    return total


def count_log_records(request: ExportLogsServiceRequest) -> int:
    """Log records in a logs request."""
    return sum(
        len(scope_logs.log_records)
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
    )


_REQUESTS: Final[dict[Signal, tuple[type[Message], Callable[[Any], int]]]] = {
    Signal.METRICS: (ExportMetricsServiceRequest, count_data_points),
    Signal.LOGS: (ExportLogsServiceRequest, count_log_records),
}
_ID_KEYS: Final = frozenset({"traceId", "trace_id", "spanId", "span_id"})


def _name(signal: Signal) -> str:
    return _REQUESTS[signal][0].DESCRIPTOR.name


def decode_signal_protobuf(signal: Signal, payload: bytes) -> DecodedRequest:
    """Validate a protobuf metrics or logs export request (the gRPC request or an HTTP body)."""
    kind, count = _REQUESTS[signal]

    def decode(raw: bytes) -> DecodedRequest:
        return DecodedRequest(raw, count(parse_protobuf(kind(), raw)))

    return refusing_anything(decode, payload, f"OTLP {_name(signal)} protobuf")


def _ids_to_base64(document: Any) -> None:
    # OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64.
    # In metrics (exemplars) and logs (records) these keys only ever name ids. Iterative:
    # a hostile document may nest deeper than the interpreter's stack.
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            members: dict[str, Any] = node  # pyright: ignore[reportUnknownVariableType]
            for key, value in members.items():
                if key in _ID_KEYS and isinstance(value, str):
                    members[key] = hex_id_to_base64(value, key)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)  # pyright: ignore[reportUnknownArgumentType]


def _decode_json(signal: Signal, body: bytes) -> DecodedRequest:
    kind, count = _REQUESTS[signal]
    request = parse_json(body, kind(), _ids_to_base64, f"(an {_name(signal)})")
    return DecodedRequest(request.SerializeToString(), count(request))


def decode_signal_http_body(
    signal: Signal, content_type: str, content_encoding: str, body: bytes, limit: int
) -> DecodedRequest:
    """Decode an OTLP/HTTP ``/v1/metrics`` or ``/v1/logs`` body (content type and encoding as sent)."""
    return decode_http_body_with(
        partial(decode_signal_protobuf, signal),
        partial(_decode_json, signal),
        content_type,
        content_encoding,
        body,
        limit,
    )


def encode_signal_response(signal: Signal, json_body: bool) -> bytes:
    """The (empty: everything accepted) export response for ``signal``."""
    response = ExportMetricsServiceResponse() if signal is Signal.METRICS else ExportLogsServiceResponse()
    if json_body:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()
