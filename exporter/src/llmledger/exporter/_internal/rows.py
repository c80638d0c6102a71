"""Spans to ``otel_traces`` rows: a pure transform, the same for SDK spans and OTLP requests.

Two sources map to the same rows: OpenTelemetry SDK ``ReadableSpan`` objects (the direct
exporter) and OTLP protobuf ``ExportTraceServiceRequest`` messages (the collector). Every
value is written exactly as the Collector's ``clickhouse`` exporter writes it (hex ids,
``Client``/``Error`` enum names, attributes through :mod:`.stringify`), so rows are the
same bytes whichever path carried the span.

Each span becomes one row tuple; the batch is transposed into columns once, for the
Native-format insert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanKind, StatusCode

from llmledger.exporter._internal.stringify import BY_TYPE, stringify, stringify_any_value

__all__ = ["OTEL_TRACES_COLUMNS", "SpanRows"]

_ATTRS: Final = "Map(LowCardinality(String), String)"

# Column names and types of the insert, in the order of the Collector's traces_insert.sql.
OTEL_TRACES_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", _ATTRS),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", _ATTRS),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", f"Array({_ATTRS})"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", f"Array({_ATTRS})"),
)

# pdata's SpanKind.String() / StatusCode.String(), which the exporter writes.
_SDK_KIND: Final = {
    SpanKind.INTERNAL: "Internal",
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
}
_OTLP_KIND: Final = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_SDK_STATUS: Final = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}
_OTLP_STATUS: Final = ("Unset", "Ok", "Error")

_NO_EVENTS: Final = ((), (), ())
_by_type = BY_TYPE.get


def _sdk_attributes(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    if not attributes:
        return {}
    # BoundedAttributes iterates through the Mapping ABC (a Python call per key); its
    # backing dict is the same data at C speed. Most values are strings and skip the call.
    items: Iterable[tuple[str, object]] = (
        attributes._dict.items()  # pyright: ignore[reportPrivateUsage]
        if type(attributes) is BoundedAttributes
        else attributes.items()
    )
    return {
        key: value if type(value) is str else _by_type(type(value), stringify)(value)  # pyright: ignore[reportUnknownArgumentType]
        for key, value in items
    }


def _span_attributes(span: ReadableSpan) -> dict[str, str]:
    # ReadableSpan.attributes wraps the BoundedAttributes in a MappingProxyType, which
    # hides the fast path above; read the span's own field when it is there.
    raw = getattr(span, "_attributes", None)
    return _sdk_attributes(raw if type(raw) is BoundedAttributes else span.attributes)


def _otlp_attributes(attributes: Iterable[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in attributes:
        value = kv.value
        # Most values are strings: a non-empty string_value can only be the set oneof
        # member, which skips WhichOneof and the dispatch (~10% of the conversion).
        text = value.string_value
        out[kv.key] = text if text else stringify_any_value(value)
    return out


def _hex_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x") if trace_id else ""


def _hex_span_id(span_id: int) -> str:
    return format(span_id, "016x") if span_id else ""


class SpanRows:
    """Rows for ``otel_traces`` (see :data:`OTEL_TRACES_COLUMNS`), collected span by span.

    Each span becomes one tuple (a single C-level allocation); :attr:`columns` transposes
    them once per batch, which is cheaper than appending to 22 column lists per span.
    """

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def columns(self) -> list[tuple[Any, ...]]:
        """The data column by column, in :data:`OTEL_TRACES_COLUMNS` order (what the insert sends)."""
        if not self._rows:
            return [() for _ in OTEL_TRACES_COLUMNS]
        return list(zip(*self._rows, strict=True))

    def rows(self) -> list[tuple[Any, ...]]:
        """The data row by row."""
        return list(self._rows)

    def dedup_token(self) -> str:
        """A deterministic insert_deduplication_token: the same spans in the same order give the same token.

        A retried batch carries the same token, so ClickHouse drops it in ``otel_traces``
        and in every materialized view downstream.
        """
        digest = hashlib.blake2b(digest_size=16)
        digest.update("".join(f"{row[1]}{row[2]}" for row in self._rows).encode())
        return f"llmledger-{len(self)}-{digest.hexdigest()}"

    def add_sdk_spans(self, spans: Iterable[ReadableSpan]) -> None:
        """Append OpenTelemetry SDK spans (what a ``SpanExporter`` receives)."""
        append = self._rows.append
        resource_cache: dict[int, tuple[str, dict[str, str]]] = {}
        for span in spans:
            context = span.context
            if context is None:
                continue
            resource = span.resource
            cached = resource_cache.get(id(resource))
            if cached is None:
                attrs = _sdk_attributes(resource.attributes)
                cached = (attrs.get("service.name", ""), attrs)
                resource_cache[id(resource)] = cached
            start = span.start_time or 0
            end = span.end_time or start
            parent = span.parent
            scope = span.instrumentation_scope
            status = span.status
            trace_state = context.trace_state
            # The public properties copy into new tuples (a generator each); the SDK's own
            # fields are read when present, as for attributes.
            events = getattr(span, "_events", None)
            if events is None:
                events = span.events
            links = getattr(span, "_links", None)
            if links is None:
                links = span.links
            append((
                start,
                _hex_trace_id(context.trace_id),
                _hex_span_id(context.span_id),
                _hex_span_id(parent.span_id) if parent is not None else "",
                trace_state.to_header() if trace_state else "",
                span.name,
                _SDK_KIND[span.kind],
                cached[0],
                cached[1],
                scope.name if scope is not None else "",
                (scope.version or "") if scope is not None else "",
                _span_attributes(span),
                end - start if end > start else 0,
                _SDK_STATUS[status.status_code],
                status.description or "",
                *(_sdk_events(events) if events else _NO_EVENTS),
                *(_sdk_links(links) if links else _NO_LINKS),
            ))  # fmt: skip

    def add_otlp(self, request: ExportTraceServiceRequest) -> None:
        """Append the spans of an OTLP ``ExportTraceServiceRequest``."""
        append = self._rows.append
        for resource_spans in request.resource_spans:
            resource = _otlp_attributes(resource_spans.resource.attributes)
            service = resource.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                scope_name = scope_spans.scope.name
                scope_version = scope_spans.scope.version
                for span in scope_spans.spans:
                    start = span.start_time_unix_nano
                    end = span.end_time_unix_nano
                    kind = span.kind
                    code = span.status.code
                    append((
                        start,
                        _hex_id(span.trace_id),
                        _hex_id(span.span_id),
                        _hex_id(span.parent_span_id),
                        span.trace_state,
                        span.name,
                        _OTLP_KIND[kind] if 0 <= kind < len(_OTLP_KIND) else "",
                        service,
                        resource,
                        scope_name,
                        scope_version,
                        _otlp_attributes(span.attributes),
                        end - start if end > start else 0,
                        _OTLP_STATUS[code] if 0 <= code < len(_OTLP_STATUS) else "",
                        span.status.message,
                        *(_otlp_events(span.events) if span.events else _NO_EVENTS),
                        *(_otlp_links(span.links) if span.links else _NO_LINKS),
                    ))  # fmt: skip


_NO_LINKS: Final = ((), (), (), ())


def _sdk_events(events: Sequence[Event]) -> tuple[list[int], list[str], list[dict[str, str]]]:
    return (
        [event.timestamp for event in events],
        [event.name for event in events],
        [_sdk_attributes(event.attributes) for event in events],
    )


def _sdk_links(links: Sequence[Link]) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    return (
        [_hex_trace_id(link.context.trace_id) for link in links],
        [_hex_span_id(link.context.span_id) for link in links],
        [link.context.trace_state.to_header() if link.context.trace_state else "" for link in links],
        [_sdk_attributes(link.attributes) for link in links],
    )


def _hex_id(raw: bytes) -> str:
    # The Collector writes an all-zero (absent) id as "".
    return raw.hex() if raw.strip(b"\x00") else ""


def _otlp_events(events: Iterable[OtlpSpan.Event]) -> tuple[list[int], list[str], list[dict[str, str]]]:
    events = list(events)
    return (
        [event.time_unix_nano for event in events],
        [event.name for event in events],
        [_otlp_attributes(event.attributes) for event in events],
    )


def _otlp_links(
    links: Iterable[OtlpSpan.Link],
) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    links = list(links)
    return (
        [_hex_id(link.trace_id) for link in links],
        [_hex_id(link.span_id) for link in links],
        [link.trace_state for link in links],
        [_otlp_attributes(link.attributes) for link in links],
    )
