"""Spans to ``otel_traces`` rows: a pure, column-oriented transform.

Two sources map to the same rows: OpenTelemetry SDK ``ReadableSpan`` objects (the direct
exporter) and OTLP protobuf ``ExportTraceServiceRequest`` messages (the collector). Every
value is written exactly as the Collector's ``clickhouse`` exporter writes it (hex ids,
``Client``/``Error`` enum names, attributes through :mod:`.stringify`), so rows are the
same bytes whichever path carried the span.

The rows are built column by column (one Python list per column) because that is what a
Native-format insert consumes, and it keeps per-span work to a handful of list appends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

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

_NO_EVENTS: Final[tuple[()]] = ()
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


def _otlp_attributes(attributes: Iterable[KeyValue]) -> dict[str, str]:
    return {kv.key: stringify_any_value(kv.value) for kv in attributes}


def _hex_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x") if trace_id else ""


def _hex_span_id(span_id: int) -> str:
    return format(span_id, "016x") if span_id else ""


class SpanRows:
    """Rows for ``otel_traces``, one list per column (see :data:`OTEL_TRACES_COLUMNS`)."""

    __slots__ = ("_columns",)

    def __init__(self) -> None:
        self._columns: tuple[list[Any], ...] = tuple([] for _ in OTEL_TRACES_COLUMNS)

    def __len__(self) -> int:
        return len(self._columns[0])

    @property
    def columns(self) -> Sequence[list[Any]]:
        """The column lists, in :data:`OTEL_TRACES_COLUMNS` order."""
        return self._columns

    def rows(self) -> list[tuple[Any, ...]]:
        """The same data row by row (for tests and debugging; inserts use :attr:`columns`)."""
        return list(zip(*self._columns, strict=True))

    def dedup_token(self) -> str:
        """A deterministic insert_deduplication_token: the same spans in the same order give the same token.

        A retried batch carries the same token, so ClickHouse drops it in ``otel_traces``
        and in every materialized view downstream.
        """
        digest = hashlib.blake2b(digest_size=16)
        for trace_id, span_id in zip(self._columns[1], self._columns[2], strict=True):
            digest.update(f"{trace_id}{span_id}".encode())
        return f"llmledger-{len(self)}-{digest.hexdigest()}"

    def add_sdk_spans(self, spans: Iterable[ReadableSpan]) -> None:
        """Append OpenTelemetry SDK spans (what a ``SpanExporter`` receives)."""
        (
            timestamps, trace_ids, span_ids, parent_ids, trace_states, names, kinds, services,
            resource_attrs, scope_names, scope_versions, span_attrs, durations, status_codes,
            status_messages, event_times, event_names, event_attrs, link_trace_ids, link_span_ids,
            link_states, link_attrs,
        ) = self._columns  # fmt: skip
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
            timestamps.append(start)
            trace_ids.append(_hex_trace_id(context.trace_id))
            span_ids.append(_hex_span_id(context.span_id))
            parent_ids.append(_hex_span_id(parent.span_id) if parent is not None else "")
            trace_states.append(context.trace_state.to_header() if context.trace_state else "")
            names.append(span.name)
            kinds.append(_SDK_KIND[span.kind])
            services.append(cached[0])
            resource_attrs.append(cached[1])
            scope_names.append(scope.name if scope is not None else "")
            scope_versions.append((scope.version or "") if scope is not None else "")
            span_attrs.append(_sdk_attributes(span.attributes))
            durations.append(end - start if end > start else 0)
            status_codes.append(_SDK_STATUS[status.status_code])
            status_messages.append(status.description or "")
            events = span.events
            if events:
                event_times.append([event.timestamp for event in events])
                event_names.append([event.name for event in events])
                event_attrs.append([_sdk_attributes(event.attributes) for event in events])
            else:
                event_times.append(_NO_EVENTS)
                event_names.append(_NO_EVENTS)
                event_attrs.append(_NO_EVENTS)
            links = span.links
            if links:
                link_trace_ids.append([_hex_trace_id(link.context.trace_id) for link in links])
                link_span_ids.append([_hex_span_id(link.context.span_id) for link in links])
                link_states.append(
                    [
                        link.context.trace_state.to_header() if link.context.trace_state else ""
                        for link in links
                    ]
                )
                link_attrs.append([_sdk_attributes(link.attributes) for link in links])
            else:
                link_trace_ids.append(_NO_EVENTS)
                link_span_ids.append(_NO_EVENTS)
                link_states.append(_NO_EVENTS)
                link_attrs.append(_NO_EVENTS)

    def add_otlp(self, request: ExportTraceServiceRequest) -> None:
        """Append the spans of an OTLP ``ExportTraceServiceRequest``."""
        (
            timestamps, trace_ids, span_ids, parent_ids, trace_states, names, kinds, services,
            resource_attrs, scope_names, scope_versions, span_attrs, durations, status_codes,
            status_messages, event_times, event_names, event_attrs, link_trace_ids, link_span_ids,
            link_states, link_attrs,
        ) = self._columns  # fmt: skip
        for resource_spans in request.resource_spans:
            resource = _otlp_attributes(resource_spans.resource.attributes)
            service = resource.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                scope_name = scope_spans.scope.name
                scope_version = scope_spans.scope.version
                for span in scope_spans.spans:
                    start = span.start_time_unix_nano
                    end = span.end_time_unix_nano
                    timestamps.append(start)
                    trace_ids.append(span.trace_id.hex() if any(span.trace_id) else "")
                    span_ids.append(span.span_id.hex() if any(span.span_id) else "")
                    parent_ids.append(span.parent_span_id.hex() if any(span.parent_span_id) else "")
                    trace_states.append(span.trace_state)
                    names.append(span.name)
                    kinds.append(_OTLP_KIND[span.kind] if 0 <= span.kind < len(_OTLP_KIND) else "")
                    services.append(service)
                    resource_attrs.append(resource)
                    scope_names.append(scope_name)
                    scope_versions.append(scope_version)
                    span_attrs.append(_otlp_attributes(span.attributes))
                    durations.append(end - start if end > start else 0)
                    code = span.status.code
                    status_codes.append(_OTLP_STATUS[code] if 0 <= code < len(_OTLP_STATUS) else "")
                    status_messages.append(span.status.message)
                    if span.events:
                        event_times.append([event.time_unix_nano for event in span.events])
                        event_names.append([event.name for event in span.events])
                        event_attrs.append([_otlp_attributes(event.attributes) for event in span.events])
                    else:
                        event_times.append(_NO_EVENTS)
                        event_names.append(_NO_EVENTS)
                        event_attrs.append(_NO_EVENTS)
                    if span.links:
                        link_trace_ids.append(
                            [link.trace_id.hex() if any(link.trace_id) else "" for link in span.links]
                        )
                        link_span_ids.append(
                            [link.span_id.hex() if any(link.span_id) else "" for link in span.links]
                        )
                        link_states.append([link.trace_state for link in span.links])
                        link_attrs.append([_otlp_attributes(link.attributes) for link in span.links])
                    else:
                        link_trace_ids.append(_NO_EVENTS)
                        link_span_ids.append(_NO_EVENTS)
                        link_states.append(_NO_EVENTS)
                        link_attrs.append(_NO_EVENTS)
