"""The span-by-span SDK conversion SpanRows used before its columnar rewrite: the oracle the new one must match.

Kept verbatim in behaviour (one row tuple per span, each attribute through
:func:`~llmledger.exporter._internal.stringify.stringify`), so the property tests compare
the batch conversion with the obvious one on arbitrary spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanKind, StatusCode

from llmledger.exporter._internal.stringify import stringify

_SDK_KIND = {
    SpanKind.INTERNAL: "Internal",
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
}
_SDK_STATUS = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    if not attributes:
        return {}
    return {key: stringify(value) for key, value in attributes.items()}


def _hex_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x") if trace_id else ""


def _hex_span_id(span_id: int) -> str:
    return format(span_id, "016x") if span_id else ""


def _events(events: Sequence[Event]) -> tuple[list[int], list[str], list[dict[str, str]]]:
    return (
        [event.timestamp for event in events],
        [event.name for event in events],
        [_attributes(event.attributes) for event in events],
    )


def _links(links: Sequence[Link]) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    return (
        [_hex_trace_id(link.context.trace_id) for link in links],
        [_hex_span_id(link.context.span_id) for link in links],
        [link.context.trace_state.to_header() if link.context.trace_state else "" for link in links],
        [_attributes(link.attributes) for link in links],
    )


def reference_rows(spans: Iterable[ReadableSpan]) -> list[tuple[Any, ...]]:
    """One row tuple per span with a context, in ``OTEL_TRACES_COLUMNS`` order."""
    rows: list[tuple[Any, ...]] = []
    for span in spans:
        context = span.context
        if context is None:
            continue
        attrs = _attributes(span.resource.attributes)
        start = span.start_time or 0
        end = span.end_time or start
        parent = span.parent
        scope = span.instrumentation_scope
        trace_state = context.trace_state
        raw = getattr(span, "_attributes", None)
        rows.append((
            start,
            _hex_trace_id(context.trace_id),
            _hex_span_id(context.span_id),
            _hex_span_id(parent.span_id) if parent is not None else "",
            trace_state.to_header() if trace_state else "",
            span.name,
            _SDK_KIND[span.kind],
            attrs.get("service.name", ""),
            attrs,
            scope.name if scope is not None else "",
            (scope.version or "") if scope is not None else "",
            _attributes(raw if type(raw) is BoundedAttributes else span.attributes),
            end - start if end > start else 0,
            _SDK_STATUS[span.status.status_code],
            span.status.description or "",
            *(_events(span.events) if span.events else ((), (), ())),
            *(_links(span.links) if span.links else ((), (), (), ())),
        ))  # fmt: skip
    return rows


def reference_dedup_token_text(rows: Sequence[tuple[Any, ...]]) -> str:
    """What the deduplication token hashes: every row's trace and span id, in order."""
    return "".join(f"{row[1]}{row[2]}" for row in rows)
