"""Spooled OTLP bytes into ``otel_traces`` with ClickHouse doing the decoding (embedded store).

Building rows in Python costs ~25 µs a span (20 attributes); ClickHouse reads the
spooled ``ExportTraceServiceRequest`` bytes itself (``FORMAT Protobuf`` with a trimmed
copy of the OTLP schema, ``otlp_trace.proto``) and turns them into the same rows several
times faster. The rows must be byte for byte what :class:`~llmledger.exporter._internal.rows.SpanRows`
writes, so attribute values are stringified in SQL exactly as :mod:`..stringify` does
(and as the Collector's exporter does): strings as they are, ``true``/``false``, decimal
ints, doubles in Go's ``encoding/json`` format (ClickHouse prints the same shortest digits;
only the exponent sign differs), standard base64 for bytes, and Go-style JSON for arrays of
scalars. A span with what this SQL does not reproduce — a map (``kvlist``) value, an array
nested in an array, control characters or NaN/Inf inside an array, a key repeated in one
attribute list — makes the statement fail before anything is written (``throwIf``), and
that batch goes through ``SpanRows``; so does a batch the engine's protobuf reader rejects
though it is valid protobuf (see ``_ENGINE_DECODER``). ``tests/collector`` checks both
paths give identical rows, and that a batch is refused exactly when it holds one of those.

Costs, per 50,000-span statement on one core: the engine decodes the protobuf in ~4 µs a
span, and planning this statement takes ~80 ms whatever its size, so the SQL is shaped
for both. Values are rendered from parallel arrays of the oneof members (a tuple per value
made every branch of the short-circuit ``multiIf`` filter the whole tuple), and the checks
ride on a computed column rather than a ``WHERE`` (which cost ~50 ms more to plan); the
resource is rendered in the ``ARRAY JOIN`` rather than in a subquery (~12 ms less).

The statement reads a file, so this path serves an embedded store (the file is local to
the engine); a ClickHouse server gets ``SpanRows``. The SQL below is fixed text: the only
substitution is the database identifier, and the file path is a bound parameter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Final

from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.native_block import varint
from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS
from llmledger.exporter._internal.store import run_command
from llmledger.exporter._internal.writer import deferred_index_settings

__all__ = ["READ_BLOCK_BYTES", "NativeInsert"]

_PRESENCE: Final = (
    "Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, "
    "'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7)"
)
# The engine records which member of a oneof was present only for members it reads, so
# the nested array and map members are read (as raw bytes) just to be recognised.
_SCALAR: Final = (
    "Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64, "
    f"bytes_value String, array_value_unused String, kvlist_value_unused String, value {_PRESENCE})"
)
_ANY_VALUE: Final = (
    "Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64, "
    f"bytes_value String, array_value Tuple(values Array({_SCALAR})), kvlist_value String, value {_PRESENCE})"
)
_ATTRIBUTES: Final = f"Array(Tuple(key String, value {_ANY_VALUE}))"
_STRUCTURE: Final = (
    f"resource_spans Array(Tuple(resource Tuple(attributes {_ATTRIBUTES}), scope_spans Array(Tuple("
    "scope Tuple(name String, version String), spans Array(Tuple(trace_id String, span_id String, "
    "trace_state String, parent_span_id String, name String, kind Int32, start_time_unix_nano UInt64, "
    f"end_time_unix_nano UInt64, attributes {_ATTRIBUTES}, "
    f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {_ATTRIBUTES})), "
    f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {_ATTRIBUTES})), "
    "status Tuple(message String, code Int32)))))))"
)

# Python's json encoder escapes (what stringify uses), then Go's extra HTML/JS escapes.
_JSON_ESCAPES: Final = (
    ("\\\\", "\\\\\\\\"),
    ('"', '\\\\"'),
    ("\\n", "\\\\n"),
    ("\\r", "\\\\r"),
    ("\\t", "\\\\t"),
    ("\\b", "\\\\b"),
    ("\\f", "\\\\f"),
    ("<", "\\\\u003c"),
    (">", "\\\\u003e"),
    ("&", "\\\\u0026"),
    ("\u2028", "\\\\u2028"),
    ("\u2029", "\\\\u2029"),
)


def _go_float(x: str) -> str:
    return (
        f"multiIf(isNaN({x}), 'json: unsupported value: NaN', isInfinite({x}), "
        f"if({x} > 0, 'json: unsupported value: +Inf', 'json: unsupported value: -Inf'), "
        f"replaceRegexpOne(toString({x}), 'e(\\\\d)', 'e+\\\\1'))"
    )


def _json_string(x: str) -> str:
    escaped = x
    for plain, escape in _JSON_ESCAPES:
        escaped = f"replaceAll({escaped}, '{plain}', '{escape}')"
    return f"concat('\"', {escaped}, '\"')"


# Lambda arguments for one value's oneof members, as parallel arrays (``list.value.string_value``
# and so on) rather than a tuple per value: a branch of the short-circuit multiIf then
# filters only the members it reads, not the whole tuple (2.6 -> 0.4 us a span for 20 values).
_MEMBERS: Final = ("value", "string_value", "bool_value", "int_value", "double_value", "bytes_value")


def _members(values: str, prefix: str) -> tuple[str, str]:
    """(lambda parameters, matching argument arrays) for the members of ``values`` (an array of values)."""
    names = ", ".join(f"{prefix}_{member}" for member in _MEMBERS)
    arrays = ", ".join(f"{values}.{member}" for member in _MEMBERS)
    return names, arrays


def _json_scalar(e: str) -> str:
    # One element of an array value, as Go's json.Marshal writes it.
    return (
        f"multiIf({e}_value = 'string_value', {_json_string(e + '_string_value')}, "
        f"{e}_value = 'int_value', toString({e}_int_value), "
        f"{e}_value = 'bool_value', if({e}_bool_value, 'true', 'false'), "
        f"{e}_value = 'double_value', {_go_float(e + '_double_value')}, "
        f"{e}_value = 'bytes_value', concat('\"', base64Encode({e}_bytes_value), '\"'), 'null')"
    )


def _rendered(attributes: str) -> str:
    """The values of an attribute list (``Array(Tuple(key, value))``) as strings, in order."""
    names, arrays = _members(f"{attributes}.value", "v")
    element_names, element_arrays = _members("v_array", "e")
    # Array elements are rendered outside the per-value multiIf: as a branch taking the
    # elements' member arrays, it filtered those of every value. One short string array a
    # span (llmledger's chat spans carry gen_ai.response.finish_reasons) cost the drain
    # 1.65 us a span, 1.0 this way; a span without arrays pays ~0.15 us more for it.
    elements = (
        f"arrayMap(v_array -> arrayMap(({element_names}) -> {_json_scalar('e')}, {element_arrays}), "
        f"{attributes}.value.array_value.values)"
    )
    value = (
        f"multiIf(v_value = 'string_value', v_string_value, "
        f"v_value = 'int_value', toString(v_int_value), "
        f"v_value = 'bool_value', if(v_bool_value, 'true', 'false'), "
        f"v_value = 'double_value', {_go_float('v_double_value')}, "
        f"v_value = 'bytes_value', base64Encode(v_bytes_value), "
        f"v_value = 'array_value', concat('[', arrayStringConcat(v_elements, ','), ']'), '')"
    )
    return f"arrayMap(({names}, v_elements) -> {value}, {arrays}, {elements})"


def _attributes(source: str) -> str:
    return f"mapFromArrays({source}.key, {_rendered(source)})"


def _supported(source: str) -> str:
    # Every element of every array value in the list, flattened: empty for most spans.
    elements = f"{source}.value.array_value.values"
    return (
        f"NOT has({source}.value.value, 'kvlist_value') AND arrayAll((e_value, e_double_value, e_string_value) -> "
        "e_value NOT IN ('array_value', 'kvlist_value') "
        "AND NOT (e_value = 'double_value' AND NOT isFinite(e_double_value)) "
        "AND NOT (e_value = 'string_value' AND match(e_string_value, '[\\\\x00-\\\\x07\\\\x0b\\\\x0e-\\\\x1f]')), "
        f"arrayFlatten({elements}.value), arrayFlatten({elements}.double_value), arrayFlatten({elements}.string_value))"
        # A repeated key: SpanRows keeps the last value, a Map would keep both.
        f" AND arrayUniq({source}.key) = length({source})"
    )


def _refused(source: str) -> str:
    # 0, or the statement fails: a value this SQL does not render fails the whole statement
    # (one block: nothing is written) and the batch goes through SpanRows; the same batch
    # always fails the same way.
    return f"throwIf(NOT ({_supported(source)}), '{_UNSUPPORTED}')"


def _hex_id(x: str) -> str:
    # An absent (all-zero or empty) id is written as "", as the Collector does.
    return f"if(trim(BOTH '\\0' FROM {x}) = '', '', lower(hex({x})))"


# Decoded columns per read block; see NativeInsert.
READ_BLOCK_BYTES: Final = 16 << 20

_FILE: Final = "file({path:String}, 'Protobuf', '" + _STRUCTURE.replace("'", "\\'") + "')"
_UNSUPPORTED: Final = "llmledger: a value the native insert does not render"
# In the message of an error the engine's protobuf reader raised. The receiver accepted the
# request with a full protobuf parse, so it is valid protobuf, but the engine's reader is
# stricter: an AnyValue carrying two members of its oneof (protobuf keeps the last), or a
# bool encoded as 2. Such a batch goes through SpanRows like one this SQL does not render,
# instead of failing the native path (three failures would turn it off for every batch).
_ENGINE_DECODER: Final = "ProtobufRowInputFormat"
_KINDS: Final = "['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer']"
_STATUSES: Final = "['Unset', 'Ok', 'Error']"

_SELECT: Final = f"""SELECT
    fromUnixTimestamp64Nano(toInt64(sp.start_time_unix_nano)),
    {_hex_id("sp.trace_id")},
    {_hex_id("sp.span_id")},
    {_hex_id("sp.parent_span_id")},
    sp.trace_state,
    sp.name,
    if(sp.kind BETWEEN 0 AND 5, {_KINDS}[sp.kind + 1], ''),
    resource['service.name'],
    resource,
    ss.scope.name,
    ss.scope.version,
    {_attributes("sp.attributes")},
    -- The checks ride on a column every row computes: a WHERE costs the engine ~50 ms more
    -- to plan per statement than the same throwIf in the projection.
    if(sp.end_time_unix_nano > sp.start_time_unix_nano, sp.end_time_unix_nano - sp.start_time_unix_nano, 0)
        + resource_refused + {_refused("sp.attributes")}
        + throwIf(NOT arrayAll(ev -> {_supported("ev.attributes")}, sp.events), '{_UNSUPPORTED}')
        + throwIf(NOT arrayAll(l -> {_supported("l.attributes")}, sp.links), '{_UNSUPPORTED}'),
    if(sp.status.code BETWEEN 0 AND 2, {_STATUSES}[sp.status.code + 1], ''),
    sp.status.message,
    arrayMap(ev -> fromUnixTimestamp64Nano(toInt64(ev.time_unix_nano)), sp.events),
    arrayMap(ev -> ev.name, sp.events),
    arrayMap(ev -> {_attributes("ev.attributes")}, sp.events),
    arrayMap(l -> {_hex_id("l.trace_id")}, sp.links),
    arrayMap(l -> {_hex_id("l.span_id")}, sp.links),
    arrayMap(l -> l.trace_state, sp.links),
    arrayMap(l -> {_attributes("l.attributes")}, sp.links)
FROM {_FILE}
-- The resource's attributes rendered (and checked) once per resource, not once per span.
ARRAY JOIN
    resource_spans AS rs,
    arrayMap(r -> {_attributes("r.resource.attributes")}, resource_spans) AS resource,
    arrayMap(r -> {_refused("r.resource.attributes")}, resource_spans) AS resource_refused
ARRAY JOIN rs.scope_spans AS ss
ARRAY JOIN ss.spans AS sp"""


class NativeInsert:
    """Inserts spooled requests by letting the embedded engine decode them (see the module doc)."""

    def __init__(
        self, client: Client, database: str, scratch: Path, *, read_block_bytes: int = READ_BLOCK_BYTES
    ) -> None:
        columns = ", ".join(f"`{name}`" for name, _ in OTEL_TRACES_COLUMNS)
        self._client = client
        self._insert = f"INSERT INTO `{database}`.`otel_traces` ({columns})\n{_SELECT}"
        # The batch the engine reads is a file only in name: in memory where the platform
        # allows (an anonymous memfd the engine, in this process, opens by /proc path), so
        # writing it neither reaches the disk nor holds up the spool's fsync (on ext4 an
        # fsync also flushes other files' pending data, and a batch is up to 128 MiB).
        self._memfd: int | None = None
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            self._memfd = os.memfd_create("llmledger-native-batch", os.MFD_CLOEXEC)
            scratch = Path(f"/proc/self/fd/{self._memfd}")
        self._scratch = scratch
        schema = resources.files("llmledger.exporter._internal.collector").joinpath("otlp_trace.proto")
        self._settings: dict[str, object] = {
            "format_schema": f"{schema}:ExportTraceServiceRequest",
            "input_format_protobuf_oneof_presence": 1,
            "max_threads": 1,
            "max_insert_threads": 1,
            # The file is decoded a few requests at a time (decoded columns are ~15 times the
            # protobuf bytes: 1.1 GB for 100,000 spans read as one block, 350 MB this way)...
            "input_format_max_block_size_bytes": read_block_bytes,
            "max_block_size": 10_000_000,  # (not per row count: ARRAY JOIN would cut its output)
            # ...and the rows are gathered into one block before anything is written: the
            # statement writes one part or, when it fails (throwIf), nothing; and a replayed
            # batch forms the very same block, so its deduplication token matches.
            "min_insert_block_size_rows": 1 << 40,
            "min_insert_block_size_bytes": 1 << 50,
            # Format a double only for double values, not for every attribute value.
            "short_circuit_function_evaluation": "force_enable",
            # The attribute bloom filters are built at a part's first merge (see writer).
            **deferred_index_settings(),
        }

    def _write_scratch(self, payloads: Sequence[bytes | memoryview]) -> None:
        # ``Protobuf`` input is a sequence of length-delimited messages.
        parts = (part for payload in payloads for part in (varint(len(payload)), payload))
        if self._memfd is None:
            with open(self._scratch, "wb") as file:
                file.writelines(parts)
            return
        os.ftruncate(self._memfd, 0)
        with open(self._memfd, "wb", closefd=False) as file:
            file.seek(0)
            file.writelines(parts)

    def close(self) -> None:
        """Free the in-memory batch file (the engine client is not ours to close)."""
        if self._memfd is not None:
            os.close(self._memfd)
            self._memfd = None

    def write(self, payloads: Sequence[bytes | memoryview], dedup_token: str) -> bool:
        """Insert the requests natively; ``False`` (nothing written) when they hold spans only ``SpanRows`` renders."""
        self._write_scratch(payloads)
        try:
            run_command(
                self._client,
                self._insert,
                parameters={"path": str(self._scratch)},
                settings={**self._settings, "insert_deduplication_token": dedup_token},
            )
        except Exception as exc:
            message = str(exc)
            if _UNSUPPORTED in message or _ENGINE_DECODER in message:
                return False
            raise
        finally:
            if self._memfd is not None:
                os.ftruncate(self._memfd, 0)  # between batches the drain holds no batch
        return True
