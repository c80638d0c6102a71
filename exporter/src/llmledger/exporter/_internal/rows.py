"""Spans to ``otel_traces`` rows: a pure transform, the same for SDK spans and OTLP requests.

Two sources map to the same rows: OpenTelemetry SDK ``ReadableSpan`` objects (the direct
exporter) and OTLP protobuf ``ExportTraceServiceRequest`` messages (the collector). Every
value is written exactly as the Collector's ``clickhouse`` exporter writes it (hex ids,
``Client``/``Error`` enum names, attributes through :mod:`.stringify`), so rows are the
same bytes whichever path carried the span.

Both become :class:`SpanColumns`, and every attribute value is rendered by one renderer,
:mod:`.stringify` (an OTLP ``AnyValue`` as the Python value an SDK attribute would hold). SDK
spans are converted a batch at a time, column by column: one attribute across all spans is
one list with one type, which :func:`.stringify_column` converts without a Python call per
value, and the loops stay in C (``map``, slicing, ``itertools``). An OTLP request is read span
by span (each protobuf field read is a Python-level call, whichever order they are read in;
a span's fields together measured fastest) and turned into columns once. The columns are
what the Native insert body is encoded from (:mod:`.native_block`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, compress, repeat
from operator import attrgetter, eq, sub
from typing import Any, Final, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from llmledger.exporter._internal.stringify import (
    BY_TYPE,
    Memo,
    stringify,
    stringify_any_value,
    stringify_column,
)
from llmledger.instrumentation.span_fields import (
    SPAN_ID,
    TRACE_ID,
    TRACE_STATE,
    span_fields,
    status_fields,
)

__all__ = ["OTEL_TRACES_COLUMNS", "AttributeMaps", "SpanColumns", "SpanRows", "signed_nanos"]

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

# pdata's SpanKind.String() / StatusCode.String(), which the exporter writes. Keyed by the
# members' ids: Enum hashing is a Python call, an id is not.
_SDK_KIND: Final = {
    SpanKind.INTERNAL: "Internal",
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
}
_SDK_KIND_BY_ID: Final = {id(kind): text for kind, text in _SDK_KIND.items()}
_OTLP_KIND: Final = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_SDK_STATUS: Final = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}
_SDK_STATUS_BY_ID: Final = {id(code): text for code, text in _SDK_STATUS.items()}
_OTLP_STATUS: Final = ("Unset", "Ok", "Error")

_NO_EVENTS: Final = ((), (), ())
# OTLP times are unsigned 64-bit; ``DateTime64(9)`` holds a signed one. Like the Collector's
# ``clickhouse`` exporter (``pcommon.Timestamp.AsTime``: ``time.Unix(0, int64(ts))``) and the
# native insert (``toInt64``), a time of 2^63 ns or more is taken as its two's complement:
# 2^64-1 lands as 1969-12-31 23:59:59.999999999 instead of failing the batch.
_INT64_LIMIT: Final = 1 << 63
_UINT64_RANGE: Final = 1 << 64


def signed_nanos(nanos: int) -> int:
    """An OTLP ``fixed64`` time as the signed nanoseconds ``DateTime64(9)`` stores (see above)."""
    return nanos - _UINT64_RANGE if nanos >= _INT64_LIMIT else nanos


_NO_LINKS: Final = ((), (), (), ())
_by_type = BY_TYPE.get
_dict_values: Final[Callable[[dict[str, Any]], Iterable[Any]]] = dict.values  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


class AttributeMaps:
    """One attribute-map column of a batch (``Map(LowCardinality(String), String)``), by key shape.

    Spans from one instrumentation carry the same keys in the same order, so a batch has
    a handful of distinct key tuples (*shapes*). Row ``i`` has the keys
    ``shapes[row_shapes[i]]`` and, for values, the next that many strings of ``values``
    (every row's values, row after row). The Native writer sends each shape's keys once;
    :meth:`dicts` gives the rows' maps.

    Resource attributes are one of a few whole maps: there ``shape_values`` holds each
    shape's values, every row of a shape has those, and ``values`` is only spelled out on
    demand.
    """

    __slots__ = ("_values", "row_shapes", "shape_values", "shapes")

    def __init__(
        self,
        shapes: list[tuple[str, ...]],
        row_shapes: list[int],
        values: list[str] | None = None,
        *,
        shape_values: list[list[str]] | None = None,
    ) -> None:
        if (values is None) == (shape_values is None):
            raise ValueError("give either values or shape_values")
        self.shapes = shapes
        self.row_shapes = row_shapes
        self.shape_values = shape_values
        self._values = values

    @property
    def values(self) -> list[str]:
        """Every row's values, row after row."""
        if self._values is None:
            assert self.shape_values is not None
            self._values = list(chain.from_iterable(map(self.shape_values.__getitem__, self.row_shapes)))
        return self._values

    def __len__(self) -> int:
        return len(self.row_shapes)

    def sizes(self) -> list[int]:
        """The number of entries of each row's map."""
        widths = list(map(len, self.shapes))
        if len(widths) == 1:
            return widths * len(self.row_shapes)
        return list(map(widths.__getitem__, self.row_shapes))

    def dicts(self) -> list[dict[str, str]]:
        """Each row's map, as ``SpanRows.rows`` holds it."""
        maps: list[dict[str, str]] = []
        values = self.values
        start = 0
        for keys in map(self.shapes.__getitem__, self.row_shapes):
            end = start + len(keys)
            maps.append(dict(zip(keys, values[start:end], strict=True)))
            start = end
        return maps

    @classmethod
    def from_dicts(cls, maps: Sequence[dict[str, str]]) -> AttributeMaps:
        """Maps whose values are already strings (OTLP rows, events, links)."""
        shapes, row_shapes, _ = _group_by_keys(maps)
        return cls(shapes, row_shapes, list(chain.from_iterable(map(_dict_values, maps))))

    @classmethod
    def from_attributes(cls, maps: Sequence[dict[str, Any]], memo: Memo | None = None) -> AttributeMaps:
        """SDK attribute dicts: each attribute stringified across the rows of its shape at once."""
        shapes, row_shapes, groups = _group_by_keys(maps)
        flats: list[list[Any]] = []
        for keys, group in zip(shapes, groups, strict=True):
            width = len(keys)
            flat: list[Any] = list(chain.from_iterable(map(_dict_values, group)))
            for position in range(width):
                column = flat[position::width]
                text = stringify_column(column, memo)
                if text is not column:
                    flat[position::width] = text
            flats.append(flat)
        if len(flats) == 1:
            return cls(shapes, row_shapes, flats[0])
        # Back to row order: each shape's values row by row, taken in the rows' shape order.
        rows_of_shape: list[Iterator[tuple[str, ...]]] = [
            zip(*[iter(flat)] * len(keys), strict=False) if keys else repeat(())
            for flat, keys in zip(flats, shapes, strict=True)
        ]
        next_row: Callable[[Iterator[tuple[str, ...]]], tuple[str, ...]] = next
        values = list(chain.from_iterable(map(next_row, map(rows_of_shape.__getitem__, row_shapes))))
        return cls(shapes, row_shapes, values)

    @classmethod
    def concat(cls, parts: Sequence[AttributeMaps]) -> AttributeMaps:
        """The rows of ``parts``, one after another (shapes they share are kept once)."""
        if len(parts) == 1:
            return parts[0]
        # The direct exporter collects a 20,000-span insert from 512-span exports: their
        # shapes are mostly the same few, renumbered here without a Python call per row.
        whole_maps = all(part.shape_values is not None for part in parts)
        numbering: dict[object, int] = {}
        shapes: list[tuple[str, ...]] = []
        shape_values: list[list[str]] = []
        row_shapes: list[int] = []
        for part in parts:
            renumber: list[int] = []
            for position, keys in enumerate(part.shapes):
                if whole_maps:
                    assert part.shape_values is not None
                    key: object = (keys, tuple(part.shape_values[position]))
                else:
                    key = keys
                number = numbering.get(key)
                if number is None:
                    number = numbering[key] = len(shapes)
                    shapes.append(keys)
                    if whole_maps:
                        assert part.shape_values is not None
                        shape_values.append(part.shape_values[position])
                renumber.append(number)
            row_shapes.extend(map(renumber.__getitem__, part.row_shapes))
        if whole_maps:
            return cls(shapes, row_shapes, shape_values=shape_values)
        return cls(shapes, row_shapes, list(chain.from_iterable(part.values for part in parts)))


class _Numbering(dict[tuple[str, ...], int]):
    """Numbers key tuples in order of first appearance (only a new one costs a Python call)."""

    def __missing__(self, key: tuple[str, ...]) -> int:
        number = self[key] = len(self)
        return number


_MAX_SIZE_GROUPS: Final = 8


def _group_by_keys(
    maps: Sequence[dict[str, Any]],
) -> tuple[list[tuple[str, ...]], list[int], list[Sequence[dict[str, Any]]]]:
    """(shapes, each row's shape, each shape's maps in row order)."""
    count = len(maps)
    if not count:
        return [], [], []
    sizes = list(map(len, maps))
    if sizes.count(sizes[0]) == count:
        by_size: dict[int, Sequence[dict[str, Any]]] = {sizes[0]: maps}
    else:
        distinct = dict.fromkeys(sizes)
        if len(distinct) > _MAX_SIZE_GROUPS:
            return _group_by_key_tuples(maps)
        by_size = {size: list(compress(maps, map(eq, sizes, repeat(size)))) for size in distinct}
    # Usually one size is one shape: check it by comparing every key with the first map's,
    # a key position at a time (equal keys are mostly the same object: a pointer compare).
    shapes: list[tuple[str, ...]] = []
    for size, group in by_size.items():
        keys = list(chain.from_iterable(group))
        first = keys[:size]
        rows = len(group)
        for position, key in enumerate(first):
            if keys[position::size].count(key) != rows:
                return _group_by_key_tuples(maps)
        shapes.append(tuple(first))
    if len(shapes) == 1:
        return shapes, [0] * count, list(by_size.values())
    shape_of_size = {size: number for number, size in enumerate(by_size)}
    return shapes, list(map(shape_of_size.__getitem__, sizes)), list(by_size.values())


def _group_by_key_tuples(
    maps: Sequence[dict[str, Any]],
) -> tuple[list[tuple[str, ...]], list[int], list[Sequence[dict[str, Any]]]]:
    numbering = _Numbering()
    row_shapes = list(map(numbering.__getitem__, map(tuple, maps)))
    shapes = list(numbering)
    if len(shapes) <= _MAX_SIZE_GROUPS:
        groups: list[Sequence[dict[str, Any]]] = [
            list(compress(maps, map(eq, row_shapes, repeat(number)))) for number in range(len(shapes))
        ]
    else:
        lists: list[list[dict[str, Any]]] = [[] for _ in shapes]
        for number, attributes in zip(row_shapes, maps, strict=True):
            lists[number].append(attributes)
        groups = list(lists)
    return shapes, row_shapes, groups


# ResourceAttributes and SpanAttributes: the columns SpanColumns keeps as AttributeMaps.
_RESOURCE: Final = 8
_SPAN_ATTRIBUTES: Final = 11
_MAP_COLUMNS: Final = (_RESOURCE, _SPAN_ATTRIBUTES)


class SpanColumns(NamedTuple):
    """A batch column by column, in :data:`OTEL_TRACES_COLUMNS` order (what the Native insert encodes)."""

    timestamps: Sequence[int]
    trace_ids: Sequence[str]
    span_ids: Sequence[str]
    parent_span_ids: Sequence[str]
    trace_states: Sequence[str]
    span_names: Sequence[str]
    span_kinds: Sequence[str]
    service_names: Sequence[str]
    resource_attributes: AttributeMaps
    scope_names: Sequence[str]
    scope_versions: Sequence[str]
    span_attributes: AttributeMaps
    durations: Sequence[int]
    status_codes: Sequence[str]
    status_messages: Sequence[str]
    event_timestamps: Sequence[Sequence[int]]
    event_names: Sequence[Sequence[str]]
    event_attributes: Sequence[Sequence[dict[str, str]]]
    link_trace_ids: Sequence[Sequence[str]]
    link_span_ids: Sequence[Sequence[str]]
    link_trace_states: Sequence[Sequence[str]]
    link_attributes: Sequence[Sequence[dict[str, str]]]

    def rows(self) -> list[tuple[Any, ...]]:
        """The same data row by row, attribute maps as dicts."""
        columns = [column.dicts() if isinstance(column, AttributeMaps) else column for column in self]
        return list(zip(*columns, strict=True))

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]]) -> SpanColumns:
        """Row tuples (as :meth:`SpanRows.rows` gives them) column by column."""
        if not rows:
            columns: list[Any] = [[] for _ in OTEL_TRACES_COLUMNS]
            for position in _MAP_COLUMNS:
                columns[position] = AttributeMaps([], [], [])
            return cls._make(columns)
        columns = list(zip(*rows, strict=True))
        for position in _MAP_COLUMNS:
            columns[position] = AttributeMaps.from_dicts(columns[position])
        return cls._make(columns)

    @classmethod
    def concat(cls, parts: Sequence[SpanColumns]) -> SpanColumns:
        """The rows of ``parts``, one after another."""
        if len(parts) == 1:
            return parts[0]
        columns: list[Any] = []
        for position, pieces in enumerate(zip(*parts, strict=True)):
            if position in _MAP_COLUMNS:
                columns.append(AttributeMaps.concat(pieces))
            else:
                columns.append(list(chain.from_iterable(pieces)))
        return cls._make(columns)


class SpanRows:
    """Rows for ``otel_traces`` (see :data:`OTEL_TRACES_COLUMNS`), collected batch by batch.

    SDK spans and OTLP requests alike are kept as :class:`SpanColumns` (converted a column
    at a time); :meth:`rows` and :attr:`columns` give them row by row or column by column.
    """

    __slots__ = ("_count", "_memo", "_parts")

    def __init__(self) -> None:
        self._parts: list[SpanColumns] = []
        self._count = 0
        # One batch's int and float strings, shared by its add_sdk_spans calls (the direct
        # exporter adds 512-span exports until an insert's worth): token counts repeat.
        self._memo: Memo = {}

    def __len__(self) -> int:
        return self._count

    @property
    def columns(self) -> list[tuple[Any, ...]]:
        """The data column by column, in :data:`OTEL_TRACES_COLUMNS` order, attribute maps as dicts."""
        rows = self.rows()
        if not rows:
            return [() for _ in OTEL_TRACES_COLUMNS]
        return list(zip(*rows, strict=True))

    def rows(self) -> list[tuple[Any, ...]]:
        """The data row by row."""
        return list(chain.from_iterable(part.rows() for part in self._parts))

    def span_columns(self) -> SpanColumns:
        """Every row, column by column: what the Native insert body is built from."""
        return SpanColumns.concat(self._parts or [SpanColumns.from_rows([])])

    def dedup_token(self) -> str:
        """A deterministic insert_deduplication_token: the same spans in the same order give the same token.

        A retried batch carries the same token, so ClickHouse drops it in ``otel_traces``
        and in every materialized view downstream.
        """
        digest = hashlib.blake2b(digest_size=16)
        for part in self._parts:
            digest.update(
                "".join(chain.from_iterable(zip(part.trace_ids, part.span_ids, strict=True))).encode()
            )
        return f"llmledger-{len(self)}-{digest.hexdigest()}"

    def add_sdk_spans(self, spans: Iterable[ReadableSpan]) -> None:
        """Append OpenTelemetry SDK spans (what a ``SpanExporter`` receives)."""
        columns = _sdk_columns(spans, self._memo)
        if columns is not None:
            self._parts.append(columns)
            self._count += len(columns.timestamps)

    def add_otlp(self, request: ExportTraceServiceRequest) -> None:
        """Append the spans of an OTLP ``ExportTraceServiceRequest``."""
        columns = _otlp_columns(request)
        if columns is not None:
            self._parts.append(columns)
            self._count += len(columns.timestamps)


# -- SDK spans, a batch at a time -------------------------------------------------------

_DICT: Final = attrgetter("_dict")
_DEQUE: Final = attrgetter("_dq")


def _sdk_columns(spans: Iterable[ReadableSpan], memo: Memo) -> SpanColumns | None:
    spans = spans if isinstance(spans, Sequence) else list(spans)
    if not spans:
        return None
    fields, _ = span_fields(spans)
    if None in fields[0]:  # no context: not a span that can be stored
        keep = [context is not None for context in fields[0]]
        fields = [list(compress(column, keep)) for column in fields]
        if not fields[0]:
            return None
    (
        contexts,
        parents,
        resources,
        scopes,
        starts,
        ends,
        names,
        kinds,
        statuses,
        attributes,
        events,
        links,
    ) = fields
    count = len(contexts)

    if None in starts:
        starts = [start or 0 for start in starts]
    if None in ends or 0 in ends:
        ends = [end or start for start, end in zip(starts, ends, strict=True)]
    durations = list(map(sub, ends, starts))
    if min(durations) < 0:
        durations = [duration if duration > 0 else 0 for duration in durations]

    trace_states = list(map(TRACE_STATE, contexts))
    first_state = trace_states[0]
    if not first_state and trace_states.count(first_state) == count:
        states = [""] * count
    else:
        states = [state.to_header() if state else "" for state in trace_states]

    if parents.count(None) == count:
        parent_ids = [""] * count
    else:
        parent_ids = _hex_ids([parent.span_id if parent is not None else 0 for parent in parents], 8)

    services, resource_attributes = _resource_columns(resources)
    scope_names, scope_versions = _scope_columns(scopes)
    status_codes, status_messages = _status_columns(statuses)
    event_columns = _nested_columns(events, _sdk_events, _NO_EVENTS)
    link_columns = _nested_columns(links, _sdk_links, _NO_LINKS)

    return SpanColumns(
        starts,
        _hex_ids(list(map(TRACE_ID, contexts)), 16),
        _hex_ids(list(map(SPAN_ID, contexts)), 8),
        parent_ids,
        states,
        names,
        list(map(_SDK_KIND_BY_ID.__getitem__, map(id, kinds))),
        services,
        resource_attributes,
        scope_names,
        scope_versions,
        AttributeMaps.from_attributes(_attribute_dicts(attributes), memo),
        durations,
        status_codes,
        status_messages,
        *event_columns,
        *link_columns,
    )


def _hex_ids(ids: list[int], size: int) -> list[str]:
    """Ids as fixed-width lowercase hex, an absent (0) id as "" (as the Collector writes them)."""
    if not ids:
        return []
    try:
        # One hex conversion for the batch (big-endian bytes): ~4x cheaper than format() per id.
        hexes = b"".join(map(int.to_bytes, ids, repeat(size))).hex(" ", size).split(" ")
    except OverflowError:  # not an id at all; format it as before rather than fail the batch
        return [format(value, f"0{size * 2}x") if value else "" for value in ids]
    if 0 in ids:
        return [text if value else "" for value, text in zip(ids, hexes, strict=True)]
    return hexes


def _attribute_dicts(attributes: Sequence[Any]) -> list[dict[str, Any]]:
    if set(map(type, attributes)) == {BoundedAttributes}:
        return list(map(_DICT, attributes))
    return [_plain_dict(value) for value in attributes]


def _plain_dict(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    if type(attributes) is BoundedAttributes:
        return attributes._dict  # pyright: ignore[reportPrivateUsage]
    if type(attributes) is dict:
        return attributes  # pyright: ignore[reportUnknownVariableType]
    return dict(attributes.items())


def _resource_columns(resources: Sequence[Any]) -> tuple[list[str], AttributeMaps]:
    # A batch has one resource or a few: convert each once, by identity.
    distinct = list({id(resource): resource for resource in resources}.values())
    converted = [_rendered(resource.attributes) for resource in distinct]
    shapes = [tuple(attributes) for attributes in converted]
    services = [attributes.get("service.name", "") for attributes in converted]
    values = [list(attributes.values()) for attributes in converted]
    if len(distinct) == 1:
        count = len(resources)
        return services * count, AttributeMaps(shapes, [0] * count, shape_values=values)
    number = {id(resource): position for position, resource in enumerate(distinct)}
    row_shapes = list(map(number.__getitem__, map(id, resources)))
    return list(map(services.__getitem__, row_shapes)), AttributeMaps(shapes, row_shapes, shape_values=values)


def _scope_columns(scopes: Sequence[Any]) -> tuple[list[str], list[str]]:
    distinct = {id(scope): scope for scope in scopes}
    names = {key: scope.name if scope is not None else "" for key, scope in distinct.items()}
    versions = {key: (scope.version or "") if scope is not None else "" for key, scope in distinct.items()}
    keys = list(map(id, scopes))
    return list(map(names.__getitem__, keys)), list(map(versions.__getitem__, keys))


def _status_columns(statuses: Sequence[Status]) -> tuple[list[str], list[str]]:
    codes, descriptions = status_fields(statuses)
    messages: list[str] = (
        [message or "" for message in descriptions] if None in descriptions else descriptions  # pyright: ignore[reportAssignmentType]
    )
    return list(map(_SDK_STATUS_BY_ID.__getitem__, map(id, codes))), messages


def _nested_columns(sequences: Sequence[Any], convert: Any, empty: tuple[tuple[()], ...]) -> list[list[Any]]:
    """Events or links: most spans have none, so only the spans that do are converted."""
    if set(map(type, sequences)) == {BoundedList}:
        sizes = list(map(len, map(_DEQUE, sequences)))
    else:
        sizes = list(map(len, sequences))
    columns = [[nothing] * len(sequences) for nothing in empty]
    for position in compress(range(len(sequences)), sizes):
        for column, value in zip(columns, convert(sequences[position]), strict=True):
            column[position] = value
    return columns


def _rendered(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """An SDK attribute map (a resource's, an event's, a link's) as stored, through stringify's renderers."""
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


def _sdk_events(events: Sequence[Event]) -> tuple[list[int], list[str], list[dict[str, str]]]:
    return (
        [event.timestamp for event in events],
        [event.name for event in events],
        [_rendered(event.attributes) for event in events],
    )


def _sdk_links(links: Sequence[Link]) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    return (
        [_hex_trace_id(link.context.trace_id) for link in links],
        [_hex_span_id(link.context.span_id) for link in links],
        [link.context.trace_state.to_header() if link.context.trace_state else "" for link in links],
        [_rendered(link.attributes) for link in links],
    )


def _hex_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x") if trace_id else ""


def _hex_span_id(span_id: int) -> str:
    return format(span_id, "016x") if span_id else ""


# -- OTLP requests ---------------------------------------------------------------------
#
# A request is decoded into what the SDK path reads from its spans, and its attribute
# values go through the same renderer (``stringify``; an OTLP value is rendered as the SDK
# value it decodes to, see ``stringify_any_value``). Reading a protobuf field costs a
# Python-level call whichever way it is read, and reading each span's fields together
# measured faster than a field across the spans (the SDK path's way): the spans are read
# row by row, then turned into columns once.


def _otlp_columns(request: ExportTraceServiceRequest) -> SpanColumns | None:
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    # Each resource is rendered once and its spans hold its number, as the SDK path's do.
    resource_keys: list[tuple[str, ...]] = []
    resource_values: list[list[str]] = []
    for number, resource_spans in enumerate(request.resource_spans):
        resource = _otlp_attributes(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        resource_keys.append(tuple(resource))
        resource_values.append(list(resource.values()))
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            scope_version = scope_spans.scope.version
            for span in scope_spans.spans:
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                kind = span.kind
                code = span.status.code
                append((
                    start if start < _INT64_LIMIT else start - _UINT64_RANGE,
                    _hex_id(span.trace_id),
                    _hex_id(span.span_id),
                    _hex_id(span.parent_span_id),
                    span.trace_state,
                    span.name,
                    _OTLP_KIND[kind] if 0 <= kind < len(_OTLP_KIND) else "",
                    service,
                    number,
                    scope_name,
                    scope_version,
                    _otlp_attributes(span.attributes),
                    end - start if end > start else 0,
                    _OTLP_STATUS[code] if 0 <= code < len(_OTLP_STATUS) else "",
                    span.status.message,
                    *(_otlp_events(span.events) if span.events else _NO_EVENTS),
                    *(_otlp_links(span.links) if span.links else _NO_LINKS),
                ))  # fmt: skip
    if not rows:
        return None
    columns: list[Any] = list(zip(*rows, strict=True))
    columns[_RESOURCE] = AttributeMaps(resource_keys, list(columns[_RESOURCE]), shape_values=resource_values)
    columns[_SPAN_ATTRIBUTES] = AttributeMaps.from_dicts(columns[_SPAN_ATTRIBUTES])
    return SpanColumns._make(columns)


def _otlp_attributes(attributes: Iterable[KeyValue]) -> dict[str, str]:
    """An OTLP attribute list as stored: each value decoded to its SDK-style value and rendered (``stringify``).

    A repeated key keeps its last value (as a dict of the SDK's would).
    """
    out: dict[str, str] = {}
    for kv in attributes:
        value = kv.value
        # Most values are strings: a non-empty string_value can only be the set oneof
        # member, which skips WhichOneof and the dispatch (~10% of the conversion).
        text = value.string_value
        out[kv.key] = text if text else stringify_any_value(value)
    return out


def _hex_id(raw: bytes) -> str:
    # The Collector writes an all-zero (absent) id as "".
    return raw.hex() if raw.strip(b"\x00") else ""


def _otlp_events(events: Sequence[OtlpSpan.Event]) -> tuple[list[int], list[str], list[dict[str, str]]]:
    return (
        [signed_nanos(event.time_unix_nano) for event in events],
        [event.name for event in events],
        [_otlp_attributes(event.attributes) for event in events],
    )


def _otlp_links(
    links: Sequence[OtlpSpan.Link],
) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    return (
        [_hex_id(link.trace_id) for link in links],
        [_hex_id(link.span_id) for link in links],
        [link.trace_state for link in links],
        [_otlp_attributes(link.attributes) for link in links],
    )
