"""A batch of OpenTelemetry SDK spans read a field at a time, for code that converts many spans.

``ReadableSpan``'s properties wrap attributes, events and links in copies a converter does
not need, at a Python call per field per span. :func:`span_fields` reads the fields the
properties would return straight from each span when its class serves them through
``ReadableSpan``'s own properties, and through the public properties otherwise (a class
that overrides one, or never ran ``ReadableSpan.__init__``). Shared by the direct
exporter's rows (``llmledger.exporter``) and the OTLP encoder (:mod:`.otlp_encode`). Needs
the OpenTelemetry SDK.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from operator import attrgetter, itemgetter, methodcaller
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode

__all__ = [
    "FIELDS",
    "SPAN_ID",
    "TRACE_ID",
    "TRACE_STATE",
    "reads_own_fields",
    "span_fields",
    "status_fields",
]

# The order of span_fields' lists.
FIELDS: Final = (
    "context",
    "parent",
    "resource",
    "instrumentation_scope",
    "start_time",
    "end_time",
    "name",
    "kind",
    "status",
    "attributes",
    "events",
    "links",
)
# Every property whose own implementation the direct reads stand in for.
_PROPERTIES: Final = (*FIELDS, "get_span_context", "dropped_attributes", "dropped_events", "dropped_links")
_OWN_FIELDS: Final = tuple(attrgetter(f"_{name}") for name in FIELDS)
# The SDK's own encoder asks a span for its context with get_span_context().
_PUBLIC_FIELDS: Final = (methodcaller("get_span_context"), *(attrgetter(name) for name in FIELDS[1:]))
# SpanContext is a (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid) tuple.
TRACE_ID: Final = itemgetter(0)
SPAN_ID: Final = itemgetter(1)
TRACE_STATE: Final = itemgetter(4)
# A Status's fields, read without its properties.
_STATUS_CODE: Final = attrgetter("_status_code")
_STATUS_DESCRIPTION: Final = attrgetter("_description")


@cache
def reads_own_fields(cls: type) -> bool:
    """Whether ``cls`` serves its fields through ``ReadableSpan``'s own properties (none overridden)."""
    return issubclass(cls, ReadableSpan) and all(
        getattr(cls, name, None) is getattr(ReadableSpan, name) for name in _PROPERTIES
    )


def span_fields(spans: Sequence[ReadableSpan]) -> tuple[list[list[Any]], bool]:
    """The spans' fields (:data:`FIELDS`), one list per field; and whether they were read directly.

    Read directly, ``attributes`` are the spans' ``BoundedAttributes`` and ``events`` and
    ``links`` their ``BoundedList`` (or whatever the span was given); through the properties
    they are the copies the properties make.
    """
    if all(map(reads_own_fields, set(map(type, spans)))):
        try:
            return [list(map(field, spans)) for field in _OWN_FIELDS], True
        except AttributeError:  # a subclass that never called ReadableSpan.__init__
            pass
    return [list(map(field, spans)) for field in _PUBLIC_FIELDS], False


def status_fields(statuses: Sequence[Status]) -> tuple[list[StatusCode], list[str | None]]:
    """The statuses' codes and descriptions; read directly when every one is the SDK's own ``Status``."""
    if set(map(type, statuses)) == {Status}:
        return list(map(_STATUS_CODE, statuses)), list(map(_STATUS_DESCRIPTION, statuses))
    return [status.status_code for status in statuses], [status.description for status in statuses]
