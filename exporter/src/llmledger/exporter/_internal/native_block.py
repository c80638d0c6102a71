"""The ``otel_traces`` insert body in ClickHouse's Native format, built for our one column set.

clickhouse-connect's generic Native writer walks every value through a type object (~6 µs
a span here); for the fixed columns of :data:`~.rows.OTEL_TRACES_COLUMNS` the body is a few
joins. The layout, per the ClickHouse source (``NativeWriter``, ``SerializationString``,
``SerializationLowCardinality``, ``SerializationArray``):

- block: varint column count, varint row count, then each column as its name, its type
  name (both strings) and its data;
- ``String``: each value as a varint byte length and its UTF-8 bytes;
- ``DateTime64(9)``, ``UInt64``: little-endian 8-byte integers;
- ``Array(T)``: the cumulative end offset of each row (UInt64), then every element as a
  column of ``T``; ``Map(K, V)`` is ``Array(Tuple(K, V))``: offsets, all keys, all values;
- ``LowCardinality(String)``: a UInt64 serialization version (1) ahead of the column's
  data (ahead of any array offsets too), then per block a UInt64 of flags and index width,
  the dictionary (UInt64 size, then the strings), the UInt64 row count and one index per row.

The types sent are exactly the table's: declaring ``String`` where the table has
``LowCardinality(String)`` makes the engine convert on insert, and measured 1.7x the engine
time of an insert through the view chain. Strings are put together as text and encoded once: a value under
128 characters in a column of ASCII text has a one-byte length, which is that one
character; anything else takes the byte-wise path.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate, chain
from typing import Final, TypeVar

from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, AttributeMaps, SpanColumns

__all__ = ["encode_block", "string_column", "varint"]

_T = TypeVar("_T")


def varint(value: int) -> bytes:
    """An unsigned LEB128 varint (ClickHouse's string lengths, protobuf's length delimiters)."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS: Final = [varint(length) for length in range(1 << 14)]  # every one- and two-byte length
_LC_VERSION: Final = (1).to_bytes(8, "little")  # SharedDictionariesWithAdditionalKeys
_LC_FLAGS: Final = (1 << 9) | (1 << 10)  # HasAdditionalKeys | NeedUpdateDictionary (no global dictionary)
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_CHUNK: Final = 4096


def _uint64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _integers(values: Sequence[int], typecode: str) -> bytes:
    packed = array(typecode, values)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def string_column(values: Sequence[str]) -> bytes:
    """A ``String`` column's data: each value's varint byte length and UTF-8 bytes."""
    count = len(values)
    if not count:
        return b""
    if count > _CHUNK:
        # A slice at a time: its strings are still in cache for the join after the lengths.
        return b"".join([string_column(values[start : start + _CHUNK]) for start in range(0, count, _CHUNK)])
    lengths = list(map(len, values))
    first = lengths[0]
    try:
        if lengths.count(first) == count:
            # One length for all (ids, empty strings, a repeated name): the length is the separator.
            prefix = chr(first)
            text = prefix + prefix.join(values)
        else:
            # Lengths and values alternating; slice assignment fills the list without a tuple per value.
            pieces: list[str] = [""] * (2 * count)
            pieces[::2] = map(chr, lengths)
            pieces[1::2] = values
            text = "".join(pieces)
    except ValueError:  # a length beyond any character: not text of one-byte lengths
        return _utf8_strings(values)
    # chr(length) is one ASCII character, the varint of the length, only below 128; ASCII
    # text is its own UTF-8. Anything else (long or non-ASCII values) goes byte by byte.
    if text.isascii():
        return text.encode("ascii")
    return _utf8_strings(values)


def _utf8_strings(values: Sequence[str]) -> bytes:
    encoded = list(map(str.encode, values))
    try:
        lengths = list(map(_VARINTS.__getitem__, map(len, encoded)))
    except IndexError:  # a value of 16 KiB or more
        lengths = [varint(len(value)) for value in encoded]
    return b"".join(chain.from_iterable(zip(lengths, encoded, strict=True)))


def _index_width(size: int) -> tuple[int, str]:
    """(ClickHouse's index type code, the array typecode) for a dictionary of ``size`` entries."""
    if size <= 1 << 8:
        return 0, "B"
    if size <= 1 << 16:
        return 1, "H"
    return 2, "I"  # 4-byte indexes: 4 billion distinct values is out of reach for one batch


def _low_cardinality_data(dictionary: Sequence[str], indexes: bytes, count: int, code: int) -> bytes:
    if not count:
        return b""
    return b"".join((
        _uint64(_LC_FLAGS | code),
        _uint64(len(dictionary)),
        string_column(dictionary),
        _uint64(count),
        indexes,
    ))  # fmt: skip


def _low_cardinality(values: Sequence[str]) -> bytes:
    """A ``LowCardinality(String)`` column's data, without the version prefix."""
    dictionary = list(dict.fromkeys(values))
    code, typecode = _index_width(len(dictionary))
    if len(dictionary) == 1:
        indexes = bytes(len(values) * array(typecode).itemsize)
    else:
        number = {value: position for position, value in enumerate(dictionary)}
        positions = map(number.__getitem__, values)
        indexes = bytes(positions) if typecode == "B" else _integers(list(positions), typecode)
    return _low_cardinality_data(dictionary, indexes, len(values), code)


def _offsets(sizes: Sequence[int]) -> bytes:
    return _integers(list(accumulate(sizes)), "Q")


def _map_data(maps: AttributeMaps) -> bytes:
    """A ``Map(LowCardinality(String), String)`` column's data, without the version prefix."""
    shapes = maps.shapes
    sizes = maps.sizes()
    # Keys: one dictionary for the batch; each shape's indexes are built once and repeated.
    dictionary = list(dict.fromkeys(chain.from_iterable(shapes)))
    number = {key: position for position, key in enumerate(dictionary)}
    code, typecode = _index_width(len(dictionary))
    shape_indexes = [_integers([number[key] for key in keys], typecode) for keys in shapes]
    if len(shapes) == 1:
        indexes = shape_indexes[0] * len(maps)
    else:
        indexes = b"".join(map(shape_indexes.__getitem__, maps.row_shapes))
    if maps.shape_values is not None:
        # Whole maps repeated (resources): each shape's values are encoded once.
        encoded = [string_column(values) for values in maps.shape_values]
        values = (
            encoded[0] * len(maps)
            if len(encoded) == 1
            else b"".join(map(encoded.__getitem__, maps.row_shapes))
        )
    else:
        values = string_column(maps.values)
    return b"".join((
        _offsets(sizes),
        _low_cardinality_data(dictionary, indexes, sum(sizes), code),
        values,
    ))  # fmt: skip


def _arrays(rows: Sequence[Sequence[_T]]) -> tuple[bytes, list[_T]]:
    """(offsets, the elements flattened) of an ``Array`` column."""
    sizes = list(map(len, rows))
    if not any(sizes):  # no span has events (or links): the usual case
        return bytes(8 * len(rows)), []
    return _offsets(sizes), list(chain.from_iterable(rows))


def encode_block(columns: SpanColumns) -> bytes:
    """The Native-format block for ``columns`` (one block: every row of the batch)."""
    count = len(columns.timestamps)
    event_offsets, event_times = _arrays(columns.event_timestamps)
    _, event_names = _arrays(columns.event_names)
    _, event_maps = _arrays(columns.event_attributes)
    link_offsets, link_trace_ids = _arrays(columns.link_trace_ids)
    _, link_span_ids = _arrays(columns.link_span_ids)
    _, link_states = _arrays(columns.link_trace_states)
    _, link_maps = _arrays(columns.link_attributes)
    data: tuple[bytes, ...] = (
        _integers(columns.timestamps, "q"),
        string_column(columns.trace_ids),
        string_column(columns.span_ids),
        string_column(columns.parent_span_ids),
        string_column(columns.trace_states),
        _LC_VERSION + _low_cardinality(columns.span_names),
        _LC_VERSION + _low_cardinality(columns.span_kinds),
        _LC_VERSION + _low_cardinality(columns.service_names),
        _LC_VERSION + _map_data(columns.resource_attributes),
        string_column(columns.scope_names),
        string_column(columns.scope_versions),
        _LC_VERSION + _map_data(columns.span_attributes),
        _integers(columns.durations, "Q"),
        _LC_VERSION + _low_cardinality(columns.status_codes),
        string_column(columns.status_messages),
        event_offsets + _integers(event_times, "q"),
        _LC_VERSION + event_offsets + _low_cardinality(event_names),
        _LC_VERSION + event_offsets + _map_data(AttributeMaps.from_dicts(event_maps)),
        link_offsets + string_column(link_trace_ids),
        link_offsets + string_column(link_span_ids),
        link_offsets + string_column(link_states),
        _LC_VERSION + link_offsets + _map_data(AttributeMaps.from_dicts(link_maps)),
    )
    parts = [varint(len(OTEL_TRACES_COLUMNS)), varint(count)]
    for (name, type_name), body in zip(_COLUMN_HEADERS, data, strict=True):
        parts.append(name)
        parts.append(type_name)
        parts.append(body)
    return b"".join(parts)


_COLUMN_HEADERS: Final = [
    (string_column([name]), string_column([type_name])) for name, type_name in OTEL_TRACES_COLUMNS
]
