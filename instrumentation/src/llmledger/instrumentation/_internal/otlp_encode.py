"""OpenTelemetry SDK spans as the bytes of an OTLP ``ExportTraceServiceRequest``, written directly.

The SDK's encoder (opentelemetry-exporter-otlp-proto-common's ``encode_spans``) builds a
protobuf object for every span, attribute and value and then serializes them: about 110 µs
a span for llmledger's spans, nearly all of what exporting costs the app. This module writes
the protobuf wire format itself (varints, length-delimited fields, fixed-width times) and
gives the same bytes as ``encode_spans(spans).SerializeToString()``: spans grouped by
resource, then by instrumentation scope, in the order they come; every field the SDK's
encoder sets, in field-number order, each left out where protobuf leaves out a default; an
attribute whose value OTLP cannot carry (an integer past 64 bits, a string that is not
UTF-8, an unknown type) left out and logged, as there. One addition: a link's trace state,
which the OTLP message has and the SDK's encoder does not fill (the direct exporter stores
it, so both ways into the store keep it).

Most of a span is its attributes, and a batch's spans mostly share their keys: a batch is
encoded a key at a time across the spans that have the same keys in the same order (one
list, one type), so each column is turned into bytes by C loops (``map``, slicing, a table of
the few distinct values or lengths) instead of a Python call per value. Small batches, and
everything rare (events, links, mixed types, arrays, maps, bytes), go value by value.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import Any, Final, cast

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, StatusCode

from llmledger.instrumentation.span_fields import SPAN_ID as _SPAN_ID
from llmledger.instrumentation.span_fields import TRACE_ID as _TRACE_ID
from llmledger.instrumentation.span_fields import TRACE_STATE as _TRACE_STATE
from llmledger.instrumentation.span_fields import reads_own_fields as _reads_own_fields
from llmledger.instrumentation.span_fields import span_fields as _span_fields
from llmledger.instrumentation.span_fields import status_fields as _status_codes_and_descriptions

__all__ = ["encode_trace_request"]

_logger = logging.getLogger("llmledger.instrumentation.otlp_encode")

# -- the wire format ----------------------------------------------------------------------
#
# A tag is (field number << 3) | wire type: 0 varint, 1 fixed64, 2 length-delimited,
# 5 fixed32. The field numbers are opentelemetry-proto's (trace.proto, common.proto).

_UINT64: Final = 1 << 64
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT32: Final = 1 << 32
_DOUBLE: Final = struct.Struct("<d")
_FIXED64: Final = struct.Struct("<Q")
_FIXED32: Final = struct.Struct("<I")
_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(128))


def _varint(value: int) -> bytes:
    """``value`` (0 ≤ value < 2^64) as a protobuf varint."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


class _Prefixes(dict[int, bytes]):
    """``tag + varint(n)`` for a length ``n``, each computed once (a batch has few distinct lengths)."""

    __slots__ = ("_tag",)

    def __init__(self, tag: bytes) -> None:
        super().__init__()
        self._tag = tag

    def __missing__(self, length: int) -> bytes:
        if len(self) > 4096:  # bounded: lengths are few, but a process lives long
            self.clear()
        prefix = self[length] = self._tag + _varint(length)
        return prefix


def _utf8(text: object) -> bytes:
    """A protobuf ``string`` as protobuf's Python binding takes it: ``str``, or UTF-8 ``bytes``."""
    if isinstance(text, str):
        return text.encode()
    if isinstance(text, bytes):
        text.decode()  # raises UnicodeDecodeError, as protobuf does
        return text
    raise TypeError(f"expected a string, got {type(text).__name__}")


def _string_field(tag: bytes, text: object) -> bytes:
    """An optional string field: absent when ``None`` or empty (proto3 leaves out defaults)."""
    if text is None:
        return b""
    encoded = _utf8(text)
    return _field(tag, encoded) if encoded else b""


def _uint_field(tag: bytes, value: int, limit: int) -> bytes:
    """A varint field for an unsigned count: absent when 0 (or ``None``)."""
    if not value:
        return b""
    if not 0 < value < limit:
        raise ValueError(f"Value out of range: {value}")
    return tag + _varint(value)


def _fixed64_field(tag: bytes, value: object) -> bytes:
    if not value:
        return b""
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not 0 < value < _UINT64:
        raise ValueError(f"Value out of range: {value}")
    return tag + _FIXED64.pack(value)


# -- attribute values (AnyValue, KeyValue), value by value --------------------------------

# AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4, array_value 5,
# kvlist_value 6, bytes_value 7. ArrayValue.values and KeyValueList.values are field 1;
# KeyValue: key 1, value 2.
_TRUE: Final = b"\x10\x01"
_FALSE: Final = b"\x10\x00"


def _any_value(value: object) -> bytes:
    """The body of the ``AnyValue`` the SDK's encoder makes of ``value`` (same type tests, same order)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value % _UINT64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        items = cast("Sequence[object]", value)
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in items))
    if isinstance(value, Mapping):
        pairs = cast("Mapping[object, object]", value).items()
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in pairs))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


class _KeyHeads(dict[str, bytes]):
    """A ``KeyValue``'s bytes before its value's length: the key (field 1) and the value's tag (2).

    Keys repeat from span to span, so each is encoded once (bounded: a process lives long).
    """

    def __missing__(self, key: str) -> bytes:
        if len(self) > 4096:
            self.clear()
        head = self[key] = _field(b"\x0a", key.encode()) + b"\x12"
        return head


_HEADS: Final = _KeyHeads()


class _IntVarints(dict[int, bytes]):
    """An ``int_value``'s varint (negative numbers as 64-bit two's complement), each computed once."""

    def __missing__(self, number: int) -> bytes:
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"Value out of range: {number}")
        if len(self) > 8192:  # bounded: a process lives long
            self.clear()
        varint = self[number] = _varint(number % _UINT64)
        return varint


_INT_VARINTS: Final = _IntVarints()
# A value's length and its AnyValue, for the most common values.
_SHORT_STRING: Final = tuple(bytes((length + 2, 0x0A, length)) for length in range(126))
_TRUE_VALUE: Final = b"\x02" + _TRUE
_FALSE_VALUE: Final = b"\x02" + _FALSE
_DOUBLE_VALUE: Final = b"\x09\x21"
_SMALL_INT: Final = tuple(bytes((2, 0x18, number)) for number in range(0x80))


def _int_value(number: int) -> bytes:
    """A value's length and its AnyValue for 128 ≤ ``number`` < 16384 (a two-byte varint)."""
    return bytes((3, 0x18, (number & 0x7F) | 0x80, number >> 7))


def _key_value(key: object, value: object) -> bytes:
    """A ``KeyValue`` message (the common values without the general path's type tests)."""
    head = _HEADS[key] if type(key) is str else _field(b"\x0a", _utf8(key)) + b"\x12"
    kind = type(value)
    if kind is str:
        data = cast(str, value).encode()
        if len(data) < 126:
            return head + _SHORT_STRING[len(data)] + data
    elif kind is bool:
        return head + (_TRUE_VALUE if value else _FALSE_VALUE)
    elif kind is float:
        return head + _DOUBLE_VALUE + _DOUBLE.pack(value)
    elif kind is int and 0 <= (number := cast(int, value)) < 0x4000:
        return head + (_SMALL_INT[number] if number < 0x80 else _int_value(number))
    any_value = _any_value(value)
    return head + _varint(len(any_value)) + any_value


def _attribute_fields(tag: bytes, attributes: Mapping[Any, Any] | None, skipped: list[str]) -> bytes:
    """A message's repeated ``KeyValue`` field (``tag``) for ``attributes``, value by value.

    As the SDK's encoder does, a value that cannot be encoded leaves out its attribute (noted
    in ``skipped``, logged once a batch) and the rest are kept.
    """
    if not attributes:
        return b""
    if type(attributes) is BoundedAttributes:
        # Its backing dict is the same data without a Python call per key.
        attributes = attributes._dict  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
    fields: list[bytes] = []
    append = fields.append
    for key, value in attributes.items():  # pyright: ignore[reportOptionalMemberAccess, reportUnknownVariableType]
        try:
            kv = _key_value(key, value)
        except Exception as exc:  # the SDK's encoder catches every failure of one attribute alike
            skipped.append(f"{key!r} ({type(exc).__name__})")
            continue
        size = len(kv)
        append(tag + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + kv)
    return b"".join(fields)


# -- attribute columns: one key across the spans that share a shape ------------------------
#
# A span attribute is a ``Span.attributes`` (field 9) KeyValue: 0x4a, its length, then
# ``head`` (the key: 0x0a, length, UTF-8; and 0x12, the value's tag), the AnyValue's length
# and the AnyValue. For one key, a string's bytes before its UTF-8 depend only on the
# string's byte length, a double's on nothing: those columns cost a few C loops.

_SPAN_ATTRIBUTE: Final = b"\x4a"
_SMALL_BATCH: Final = 8
"""Below this many spans, columns cost more than they save: spans go one by one."""


def _span_attribute(head: bytes, value: bytes) -> bytes:
    kv = head + _varint(len(value)) + value
    return _SPAN_ATTRIBUTE + _varint(len(kv)) + kv


def _string_prefix(head: bytes, length: int) -> bytes:
    """Everything of a string attribute's field before its ``length`` bytes of UTF-8."""
    value_length = 1 + len(_varint(length)) + length
    kv_length = len(head) + len(_varint(value_length)) + value_length
    return _SPAN_ATTRIBUTE + _varint(kv_length) + head + _varint(value_length) + b"\x0a" + _varint(length)


def _column_fields(
    key: object, column: list[Any], skipped: list[str]
) -> tuple[list[bytes], list[bytes] | None]:
    """One attribute across spans: each span's field as a prefix and the rest (``None``: no rest)."""
    kinds = set(map(type, column))
    if type(key) is str and len(kinds) == 1:
        try:
            fields = _typed_column(_HEADS[key], kinds.pop(), column)
        except (UnicodeEncodeError, ValueError):  # a key or a value that OTLP cannot carry: see below
            fields = None
        if fields is not None:
            return fields
    # Mixed types, rarer types, and what cannot be encoded (left out and noted): value by value.
    return [_attribute_fields(_SPAN_ATTRIBUTE, {key: value}, skipped) for value in column], None


def _typed_column(
    head: bytes, kind: type, column: list[Any]
) -> tuple[list[bytes], list[bytes] | None] | None:
    """The fields of a column of one common type (``None`` for any other)."""
    if kind is str:
        distinct = set(column)
        if len(distinct) * 4 <= len(column):
            known = {text: _span_attribute(head, _any_value(text)) for text in distinct}
            return list(map(known.__getitem__, column)), None
        encoded = list(map(str.encode, column))
        lengths = list(map(len, encoded))
        prefixes = {length: _string_prefix(head, length) for length in set(lengths)}
        return list(map(prefixes.__getitem__, lengths)), encoded
    if kind is float:
        # 0.0 and -0.0 are equal but not the same bytes: packing each value needs no table.
        prefix = _span_attribute(head, b"\x21" + bytes(8))[:-8]
        return [prefix] * len(column), list(map(_DOUBLE.pack, column))
    if kind is bool:
        known = {True: _span_attribute(head, _TRUE), False: _span_attribute(head, _FALSE)}
        return list(map(known.__getitem__, column)), None
    if kind is int:
        # Counts (tokens, ports) repeat from batch to batch: their varints are kept.
        varints = list(map(_INT_VARINTS.__getitem__, column))
        lengths = list(map(len, varints))
        prefixes = {
            length: _span_attribute(head, b"\x18" + bytes(length))[:-length] for length in set(lengths)
        }
        return list(map(prefixes.__getitem__, lengths)), varints
    if kind is tuple:
        # Equal tuples of strings are the same bytes (a tuple equal to one of strings holds
        # strings); equal tuples of numbers may not be (1 == True, 0.0 == -0.0).
        try:
            distinct = set(column)
        except TypeError:  # holds something unhashable
            return None
        if not all(type(item) is str for item in chain.from_iterable(distinct)):
            return None
        known = {items: _span_attribute(head, _any_value(items)) for items in distinct}
        return list(map(known.__getitem__, column)), None
    return None


class _Numbering(dict[tuple[Any, ...], int]):
    """Numbers key tuples in order of first appearance."""

    def __missing__(self, key: tuple[Any, ...]) -> int:
        number = self[key] = len(self)
        return number


def _attribute_blocks(maps: list[Mapping[Any, Any]], skipped: list[str]) -> list[bytes]:
    """Each span's ``attributes`` fields, joined, a column at a time for each shape of keys."""
    count = len(maps)
    numbering = _Numbering()
    row_shapes = list(map(numbering.__getitem__, map(tuple, maps)))
    shapes = list(numbering)
    blocks: list[bytes] = [b""] * count
    for number, keys in enumerate(shapes):
        width = len(keys)
        if not width:
            continue
        if len(shapes) == 1:
            members = range(count)
            group = maps
        else:
            members = list(compress(range(count), [shape == number for shape in row_shapes]))
            group = list(map(maps.__getitem__, members))
        flat: list[Any] = list(chain.from_iterable(map(_map_values, group)))
        parts: list[bytes] = [b""] * (2 * len(flat))
        for position, key in enumerate(keys):
            prefixes, rests = _column_fields(key, flat[position::width], skipped)
            parts[2 * position :: 2 * width] = prefixes
            if rests is not None:
                parts[2 * position + 1 :: 2 * width] = rests
        joined = list(map(b"".join, zip(*[iter(parts)] * (2 * width), strict=True)))
        if len(shapes) == 1:
            return joined
        for index, block in zip(members, joined, strict=True):
            blocks[index] = block
    return blocks


def _map_values(attributes: Mapping[Any, Any]) -> Iterable[Any]:
    return attributes.values()


# -- spans --------------------------------------------------------------------------------

_DICT: Final = attrgetter("_dict")
_DROPPED: Final = attrgetter("dropped")
_DEQUE: Final = attrgetter("_dq")

# Span.SpanKind numbers, keyed by the members' ids (hashing an Enum is a Python call).
_KIND_NUMBER: Final = {
    id(SpanKind.INTERNAL): 1,
    id(SpanKind.SERVER): 2,
    id(SpanKind.CLIENT): 3,
    id(SpanKind.PRODUCER): 4,
    id(SpanKind.CONSUMER): 5,
}
# kind (6, varint), start_time_unix_nano (7, fixed64), end_time_unix_nano (8, fixed64).
_KIND_AND_TIMES: Final = struct.Struct("<BBBQBQ")
_IDS: Final = struct.Struct("<2s16s2s8s")
_TRACE_ID_TAG: Final = b"\x0a\x10"
_SPAN_ID_TAG: Final = b"\x12\x08"
# flags (16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, plus _IS_REMOTE for a remote parent.
_FLAGS_TAG: Final = b"\x85\x01"
_LOCAL_PARENT: Final = _FLAGS_TAG + _FIXED32.pack(0x100)
_REMOTE_PARENT: Final = _FLAGS_TAG + _FIXED32.pack(0x300)
_SPAN_PREFIXES: Final = _Prefixes(b"\x12")  # ScopeSpans.spans (2)


def _flags(context: Any) -> bytes:
    return _REMOTE_PARENT if context is not None and context.is_remote else _LOCAL_PARENT


def _parent_field(parent: Any) -> bytes:
    return b"" if parent is None else b"\x22\x08" + parent.span_id.to_bytes(8)


def _trace_state(tag: bytes, state: Any) -> bytes:
    if not state:
        return b""
    return _string_field(tag, ",".join([f"{key}={value}" for key, value in state.items()]))


def _status_field(code: StatusCode, description: str | None) -> bytes:
    # Status: message (2), code (3).
    body = _string_field(b"\x12", description) + (b"\x18" + _varint(code.value) if code.value else b"")
    return _field(b"\x7a", body)


class _Statuses(dict[tuple[int, object], bytes]):
    __slots__ = ("_codes",)

    def __init__(self, codes: dict[int, StatusCode]) -> None:
        super().__init__()
        self._codes = codes

    def __missing__(self, key: tuple[int, object]) -> bytes:
        field = self[key] = _status_field(self._codes[key[0]], key[1])  # pyright: ignore[reportArgumentType]
        return field


def _status_fields(statuses: list[Any]) -> list[bytes]:
    if any(status is None for status in statuses):
        return [
            b"" if status is None else _status_field(status.status_code, status.description)
            for status in statuses
        ]
    codes, descriptions = _status_codes_and_descriptions(statuses)
    known = _Statuses({id(code): code for code in codes})
    try:
        return list(map(known.__getitem__, zip(map(id, codes), descriptions, strict=True)))
    except TypeError:  # an unhashable description: not a string, so encoding it fails below
        return [
            _status_field(code, description) for code, description in zip(codes, descriptions, strict=True)
        ]


def _events_field(events: Sequence[Any], skipped: list[str]) -> bytes:
    fields: list[bytes] = []
    for event in events:
        # Event: time_unix_nano (1, fixed64), name (2), attributes (3), dropped_attributes_count (4).
        body = (
            _fixed64_field(b"\x09", event.timestamp)
            + _string_field(b"\x12", event.name)
            + _attribute_fields(b"\x1a", event.attributes, skipped)
            + _uint_field(b"\x20", event.dropped_attributes, _UINT32)
        )
        fields.append(_field(b"\x5a", body))
    return b"".join(fields)


def _links_field(links: Sequence[Any], skipped: list[str]) -> bytes:
    fields: list[bytes] = []
    for link in links:
        context = link.context
        # Link: trace_id (1), span_id (2), trace_state (3), attributes (4),
        # dropped_attributes_count (5), flags (6, fixed32).
        body = (
            _TRACE_ID_TAG
            + context.trace_id.to_bytes(16)
            + _SPAN_ID_TAG
            + context.span_id.to_bytes(8)
            + _trace_state(b"\x1a", context.trace_state)
            + _attribute_fields(b"\x22", link.attributes, skipped)
            + _uint_field(b"\x28", link.dropped_attributes, _UINT32)
            + b"\x35"
            + _FIXED32.pack(0x300 if context.is_remote else 0x100)
        )
        fields.append(_field(b"\x6a", body))
    return b"".join(fields)


def _span_message(span: ReadableSpan, skipped: list[str]) -> bytes:
    """One span's ``ScopeSpans.spans`` field, field by field (what a small batch costs least)."""
    context = span.get_span_context()
    if context is None:
        raise ValueError("a span without a span context cannot be encoded")
    own = _reads_own_fields(type(span))
    parent = span.parent
    status = span.status
    body = b"".join(
        (
            _IDS.pack(
                _TRACE_ID_TAG, context.trace_id.to_bytes(16), _SPAN_ID_TAG, context.span_id.to_bytes(8)
            ),
            _trace_state(b"\x1a", context.trace_state),
            _parent_field(parent),
            _string_field(b"\x2a", span.name),
            b"\x30" + _ONE_BYTE[_KIND_NUMBER[id(span.kind)]],
            _fixed64_field(b"\x39", span.start_time),
            _fixed64_field(b"\x41", span.end_time),
            _attribute_fields(
                _SPAN_ATTRIBUTE,
                span._attributes if own else span.attributes,  # pyright: ignore[reportPrivateUsage]
                skipped,
            ),
            _uint_field(b"\x50", span.dropped_attributes, _UINT32),
            _events_field(span.events, skipped) if span.events else b"",
            _uint_field(b"\x60", span.dropped_events, _UINT32),
            _links_field(span.links, skipped) if span.links else b"",
            _uint_field(b"\x70", span.dropped_links, _UINT32),
            b"" if status is None else _status_field(status.status_code, status.description),  # pyright: ignore[reportUnnecessaryComparison]
            _flags(parent),
        )
    )
    return _SPAN_PREFIXES[len(body)] + body


def _span_messages(
    spans: Sequence[ReadableSpan], skipped: list[str]
) -> tuple[list[bytes], list[Any], list[Any]]:
    """Each span's ``ScopeSpans.spans`` field, and each span's resource and scope."""
    if len(spans) < _SMALL_BATCH:
        messages = [_span_message(span, skipped) for span in spans]
        return messages, [span.resource for span in spans], [span.instrumentation_scope for span in spans]
    fields, own = _span_fields(spans)
    contexts, parents, resources, scopes, starts, ends, names, kinds, statuses, attributes, events, links = (
        fields
    )
    if None in contexts:
        raise ValueError("a span without a span context cannot be encoded")
    count = len(spans)
    columns: list[Iterable[bytes]] = []

    # trace_id (1), span_id (2): 16 and 8 big-endian bytes.
    columns.append(
        map(
            _IDS.pack,
            repeat(_TRACE_ID_TAG),
            map(int.to_bytes, map(_TRACE_ID, contexts), repeat(16)),
            repeat(_SPAN_ID_TAG),
            map(int.to_bytes, map(_SPAN_ID, contexts), repeat(8)),
        )
    )
    # trace_state (3)
    states = list(map(_TRACE_STATE, contexts))
    if any(states):
        columns.append([_trace_state(b"\x1a", state) for state in states])
    # parent_span_id (4)
    if parents.count(None) != count:
        columns.append(list(map(_parent_field, parents)))
    # name (5)
    if type(names[0]) is str and len(set(map(type, names))) == 1:
        known_names = {name: _string_field(b"\x2a", name) for name in set(names)}
        columns.append(list(map(known_names.__getitem__, names)))
    else:
        columns.append([_string_field(b"\x2a", name) for name in names])
    # kind (6), start (7), end (8)
    kind_numbers = list(map(_KIND_NUMBER.__getitem__, map(id, kinds)))
    if None in starts or None in ends or min(starts) <= 0 or min(ends) <= 0 or max(starts + ends) >= _UINT64:
        columns.append(
            [
                b"\x30" + _ONE_BYTE[kind] + _fixed64_field(b"\x39", start) + _fixed64_field(b"\x41", end)
                for kind, start, end in zip(kind_numbers, starts, ends, strict=True)
            ]
        )
    else:
        columns.append(
            map(_KIND_AND_TIMES.pack, repeat(0x30), kind_numbers, repeat(0x39), starts, repeat(0x41), ends)
        )
    # attributes (9), dropped_attributes_count (10)
    bounded = set(map(type, attributes)) == {BoundedAttributes}
    maps = list(map(_DICT, attributes)) if bounded else list(map(_plain_map, attributes))
    columns.append(_attribute_blocks(maps, skipped))
    if not own:
        dropped = [span.dropped_attributes for span in spans]
    elif bounded:
        dropped = list(map(_DROPPED, attributes))
    else:
        dropped = [_dropped(attrs, BoundedAttributes) for attrs in attributes]
    if any(dropped):
        columns.append([_uint_field(b"\x50", number, _UINT32) for number in dropped])
    # events (11), dropped_events_count (12), links (13), dropped_links_count (14): rare,
    # so only the spans that have them are encoded.
    _nested(columns, spans, events, own, "events", _events_field, b"\x60", skipped)
    _nested(columns, spans, links, own, "links", _links_field, b"\x70", skipped)
    # status (15), flags (16)
    columns.append(_status_fields(statuses))
    if parents.count(None) == count:
        columns.append(repeat(_LOCAL_PARENT, count))
    else:
        columns.append(list(map(_flags, parents)))

    try:
        bodies = list(map(b"".join, zip(*columns, strict=True)))
    except struct.error as exc:  # a time that is not a whole number of nanoseconds
        raise TypeError(f"a span time cannot be encoded: {exc}") from exc
    return (
        list(map(bytes.__add__, map(_SPAN_PREFIXES.__getitem__, map(len, bodies)), bodies)),
        resources,
        scopes,
    )


def _plain_map(attributes: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    if not attributes:
        return {}
    if type(attributes) is BoundedAttributes:
        return attributes._dict  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType, reportUnknownVariableType]
    return attributes


def _dropped(container: object, kind: type) -> int:
    return container.dropped if isinstance(container, kind) else 0  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]


def _nested(
    columns: list[Iterable[bytes]],
    spans: Sequence[ReadableSpan],
    sequences: list[Any],
    own: bool,
    name: str,
    encode: Callable[[Sequence[Any], list[str]], bytes],
    dropped_tag: bytes,
    skipped: list[str],
) -> None:
    items: list[Any]
    if not own:
        items = sequences
        dropped = [getattr(span, f"dropped_{name}") for span in spans]
    elif set(map(type, sequences)) == {BoundedList}:
        items = list(map(_DEQUE, sequences))
        dropped = list(map(_DROPPED, sequences))
    else:
        items = [
            _DEQUE(container) if type(container) is BoundedList else container for container in sequences
        ]
        dropped = [_dropped(container, BoundedList) for container in sequences]
    sizes = (
        list(map(len, items))
        if None not in items
        else [len(sequence) if sequence else 0 for sequence in items]
    )
    if any(sizes):
        column = [b""] * len(items)
        for position in compress(range(len(items)), sizes):
            column[position] = encode(items[position], skipped)
        columns.append(column)
    if any(dropped):
        columns.append([_uint_field(dropped_tag, number, _UINT32) for number in dropped])


# -- resources and scopes -----------------------------------------------------------------


def _resource_field(resource: Any, skipped: list[str]) -> bytes:
    # ResourceSpans.resource (1): Resource.attributes (1).
    return _field(b"\x0a", _attribute_fields(b"\x0a", resource.attributes, skipped))


def _scope_field(scope: Any, skipped: list[str]) -> bytes:
    # ScopeSpans.scope (1), always present: name (1), version (2), attributes (3).
    if scope is None:
        return b"\x0a\x00"
    body = (
        _string_field(b"\x0a", scope.name)
        + _string_field(b"\x12", scope.version)
        + _attribute_fields(b"\x1a", scope.attributes, skipped)
    )
    return _field(b"\x0a", body)


def _groups(resources: list[Any], scopes: list[Any]) -> list[tuple[Any, list[tuple[Any, list[int] | None]]]]:
    """Span positions by resource, then scope, as the SDK's encoder groups them (by equality,
    in order of first appearance); ``None`` for positions means every span."""
    if len(set(map(id, resources))) == 1 and len(set(map(id, scopes))) == 1:
        return [(resources[0], [(scopes[0], None)])]
    # Each distinct object is compared once (hashing a Resource serializes its attributes),
    # then every span is a lookup by identity.
    equal_resource: dict[Any, Any] = {}
    resource_of = {key: equal_resource.setdefault(resource, resource) for key, resource in _by_id(resources)}
    equal_scope: dict[Any, Any] = {}
    scope_of = {key: equal_scope.setdefault(scope, scope) for key, scope in _by_id(scopes)}
    grouped: dict[int, tuple[Any, dict[int, tuple[Any, list[int]]]]] = {}
    for position, (resource, scope) in enumerate(zip(resources, scopes, strict=True)):
        resource = resource_of[id(resource)]
        scope = scope_of[id(scope)]
        by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
        by_scope.setdefault(id(scope), (scope, []))[1].append(position)
    return [
        (resource, [(scope, positions) for scope, positions in by_scope.values()])
        for resource, by_scope in grouped.values()
    ]


def _by_id(objects: list[Any]) -> Iterable[tuple[int, Any]]:
    return {id(item): item for item in objects}.items()


def encode_trace_request(spans: Iterable[ReadableSpan]) -> bytes:
    """The bytes of the OTLP ``ExportTraceServiceRequest`` that carries ``spans``.

    The same bytes as ``encode_spans(spans).SerializeToString()`` from
    opentelemetry-exporter-otlp-proto-common, plus each link's trace state. Raises where
    that encoder raises (a span without a context, an id or time out of range, a name
    that is not a string); an attribute that cannot be encoded is left out and logged.
    """
    spans = spans if isinstance(spans, Sequence) else list(spans)
    if not spans:
        return b""
    skipped: list[str] = []
    messages, resources, scopes = _span_messages(spans, skipped)
    out: list[bytes] = []
    for resource, scope_groups in _groups(resources, scopes):
        resource_parts = [_resource_field(resource, skipped)]
        for scope, positions in scope_groups:
            members = messages if positions is None else list(map(messages.__getitem__, positions))
            scope_spans = (
                _scope_field(scope, skipped)
                + b"".join(members)
                + (_string_field(b"\x1a", scope.schema_url) if scope is not None else b"")
            )
            resource_parts.append(_field(b"\x12", scope_spans))
        resource_parts.append(_string_field(b"\x1a", resource.schema_url))
        out.append(_field(b"\x0a", b"".join(resource_parts)))
    if skipped:
        # Once a batch, not once a value: a bad attribute tends to be on every span.
        _logger.warning(
            "OTLP encoding left out %d attribute values it cannot encode: %s",
            len(skipped),
            ", ".join(sorted(set(skipped))[:10]),
        )
    return b"".join(out)
