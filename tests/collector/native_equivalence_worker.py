"""Run in a child process: the native insert writes exactly the rows ``SpanRows`` writes.

``python -m tests.collector.native_equivalence_worker <dir> <batches>`` inserts the same
random OTLP batches both ways into two databases of one embedded store, compares every
column of every row, and prints a JSON summary.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmledger.exporter._internal.collector.native_insert import NativeInsert
from llmledger.exporter._internal.collector.spool import SpoolBatch, SpoolRecord
from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.native_block import varint
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import open_store, run_query
from llmledger.exporter._internal.writer import SpanWriter
from tests.store_checks import built_skip_indexes

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

TEXT = ["", "plain", "ünïcødé ✓", 'quote " and \\ backslash', "<b>&amp;</b>", "line\nbreak\ttab\r", "\u2028\u2029", "bell\x07", "emoji 🎉", "/slash/"]  # fmt: skip
DOUBLES = [0.0, -0.0, 0.000435, 1e-7, 1.5e-6, 1e-6, 123.456, 3.0, 1e21, 1e20, -2.5e22, 5e-324, 1.7976931348623157e308, float("nan"), float("inf"), float("-inf")]  # fmt: skip


def scalar(value: AnyValue, rng: random.Random, allow_special: bool = True) -> None:
    kind = rng.randrange(6)
    if kind == 0:
        value.string_value = rng.choice(TEXT if allow_special else TEXT[:7] + TEXT[8:])
    elif kind == 1:
        value.bool_value = rng.random() < 0.5
    elif kind == 2:
        value.int_value = rng.choice([0, -1, 7, 2**63 - 1, -(2**63), rng.randrange(-(10**12), 10**12)])
    elif kind == 3:
        choices = DOUBLES if allow_special else [d for d in DOUBLES if math.isfinite(d)]
        value.double_value = rng.choice([*choices, rng.uniform(-1, 1) * 10 ** rng.randint(-12, 25)])
    elif kind == 4:
        value.bytes_value = rng.randbytes(rng.randrange(6))
    # kind 5: no value at all


def any_value(value: AnyValue, rng: random.Random, unsupported: float) -> None:
    roll = rng.random()
    if roll < unsupported:
        kind = rng.randrange(4)
        if kind == 0:
            entry = value.kvlist_value.values.add()
            entry.key = "k"
            scalar(entry.value, rng)
        elif kind == 1:
            scalar(value.array_value.values.add().array_value.values.add(), rng)
        elif kind == 2:
            value.array_value.values.add().double_value = rng.choice(
                [float("nan"), float("inf"), float("-inf")]
            )
        else:
            value.array_value.values.add().string_value = rng.choice(["bell\x07", "\x00", "esc\x1b["])
    elif roll < 0.25:
        array = value.array_value
        array.SetInParent()
        for _ in range(rng.randrange(4)):
            scalar(array.values.add(), rng, allow_special=False)
    else:
        scalar(value, rng)


def attributes(target: object, rng: random.Random, count: int, unsupported: float) -> None:
    for index in range(count):
        kv = target.add()  # type: ignore[attr-defined]
        kv.key = rng.choice(["service.name", "gen_ai.usage.cost", "tenant.id", "k.<&>", "ключ"]) + str(index)
        if rng.random() < unsupported:
            kv.key = "repeated"  # twice or more in one list only now and then
        any_value(kv.value, rng, unsupported)


def make_request(rng: random.Random, unsupported: float) -> tuple[bytes, int]:
    request = ExportTraceServiceRequest()
    spans = 0
    for _ in range(rng.randrange(1, 3)):
        resource_spans = request.resource_spans.add()
        if rng.random() < 0.8:
            kv = resource_spans.resource.attributes.add()
            kv.key, kv.value.string_value = "service.name", rng.choice(["svc", "ünï", ""])
        attributes(resource_spans.resource.attributes, rng, rng.randrange(3), unsupported)
        for _ in range(rng.randrange(1, 3)):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = rng.choice(["", "llmledger", "opentelemetry.instrumentation.openai_v2"])
            scope_spans.scope.version = rng.choice(["", "1.2.3"])
            for _ in range(rng.randrange(1, 5)):
                span = scope_spans.spans.add()
                spans += 1
                span.trace_id = rng.randbytes(16)
                span.span_id = rng.randbytes(8)
                span.parent_span_id = rng.choice([b"", bytes(8), rng.randbytes(8)])
                span.trace_state = rng.choice(["", "vendor=a,other=b"])
                span.name = rng.choice(["chat gpt-4o", "embeddings text-embedding-3-small", ""])
                span.kind = rng.choice([0, 1, 2, 3, 4, 5, 9])  # type: ignore[assignment]
                span.start_time_unix_nano = rng.randrange(
                    1_600_000_000, 1_900_000_000
                ) * 10**9 + rng.randrange(10**9)
                span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(-(10**6), 10**10)
                span.status.code = rng.choice([0, 1, 2, 5])  # type: ignore[assignment]
                span.status.message = rng.choice(["", "boom <x>"])
                attributes(span.attributes, rng, rng.randrange(25), unsupported)
                for _ in range(rng.randrange(3)):
                    event = span.events.add()
                    event.time_unix_nano = span.start_time_unix_nano + rng.randrange(10**9)
                    event.name = rng.choice(["gen_ai.choice", "exception", ""])
                    attributes(event.attributes, rng, rng.randrange(3), unsupported)
                for _ in range(rng.randrange(2)):
                    link = span.links.add()
                    link.trace_id = rng.choice([rng.randbytes(16), bytes(16)])
                    link.span_id = rng.randbytes(8)
                    link.trace_state = rng.choice(["", "k=v"])
                    attributes(link.attributes, rng, rng.randrange(3), unsupported)
    return request.SerializeToString(), spans


_CONTROL = {*range(0x08), 0x0B, *range(0x0E, 0x20)}


def _renders(values: Sequence[KeyValue]) -> bool:
    """Whether the native insert renders this attribute list (else the batch must be refused)."""
    if len({kv.key for kv in values}) != len(values):
        return False
    for kv in values:
        kind = kv.value.WhichOneof("value")
        if kind == "kvlist_value":
            return False
        if kind == "array_value":
            for element in kv.value.array_value.values:
                inner = element.WhichOneof("value")
                if inner in ("array_value", "kvlist_value"):
                    return False
                if inner == "double_value" and not math.isfinite(element.double_value):
                    return False
                if inner == "string_value" and _CONTROL.intersection(map(ord, element.string_value)):
                    return False
    return True


def renders_natively(payload: bytes) -> bool:
    """What the native insert should accept, worked out independently of its SQL."""
    request = ExportTraceServiceRequest.FromString(payload)
    for resource_spans in request.resource_spans:
        if not _renders(resource_spans.resource.attributes):
            return False
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lists = [
                    span.attributes,
                    *(e.attributes for e in span.events),
                    *(x.attributes for x in span.links),
                ]
                if not all(_renders(attributes) for attributes in lists):
                    return False
    return True


def write_natively(native: NativeInsert, batch: SpoolBatch) -> bool:
    """A claimed batch through the native insert, as the drain sends it."""
    return native.write([record.payload for record in batch.records], batch.dedup_token)


def check_read_in_blocks(client: Client, root: Path, rng: random.Random) -> dict[str, object]:
    """A batch decoded one request at a time still writes one part, or nothing, and replays as a duplicate."""
    config = StoreConfig(url=f"chdb://{root / 'store'}", database="by_blocks")
    apply_migrations(client, config)
    native = NativeInsert(client, config.database, root / "blocks-batch.pb", read_block_bytes=1)

    def batch(number: int, last_unsupported: bool) -> SpoolBatch:
        records = [
            SpoolRecord(0, 0, spans, 0, payload)
            for payload, spans in (make_request(rng, 0.0) for _ in range(6))
        ]
        if last_unsupported:
            while renders_natively(payload := make_request(rng, 0.5)[0]):
                pass
            records.append(SpoolRecord(0, 0, 1, 0, payload))
        return SpoolBatch(1, number, number + 1, tuple(records), f"blocks-{number}")

    def counts() -> tuple[int, int, int]:
        """Rows, active parts, and the parts one block per statement makes (one per day)."""
        rows, days, parts = run_query(
            client,
            "SELECT count(), uniqExact(toDate(Timestamp)), (SELECT count() FROM system.parts "
            "WHERE database = 'by_blocks' AND table = 'otel_traces' AND active) FROM by_blocks.otel_traces",
        ).result_rows[0]
        return int(rows), int(parts), int(days)

    def tenants() -> list[tuple[object, ...]]:
        # A filter the attribute bloom filters serve, read before and after they exist.
        return [
            tuple(row)
            for row in run_query(
                client,
                "SELECT SpanId FROM by_blocks.otel_traces WHERE SpanAttributes['tenant.id0'] != '' "
                "OR has(mapValues(SpanAttributes), 'plain') ORDER BY SpanId",
            ).result_rows
        ]

    good = batch(1, last_unsupported=False)
    written = write_natively(native, good)
    after_write = counts()
    indexes_on_insert = built_skip_indexes(client, config.database)
    found_before_merge = tenants()
    replayed = write_natively(native, good)
    after_replay = counts()
    refused = not write_natively(native, batch(2, last_unsupported=True))
    refused_wrote_nothing = counts() == after_write
    run_query(client, "OPTIMIZE TABLE by_blocks.otel_traces FINAL")
    return {
        "written": written and after_write[0] == good.span_count and after_write[1] == after_write[2],
        "replay_dropped": replayed and after_replay == after_write,
        "refused_wrote_nothing": refused and refused_wrote_nothing,
        "indexes_on_insert": indexes_on_insert,
        "indexes_after_merge": built_skip_indexes(client, config.database),
        "same_rows_found_after_merge": len(found_before_merge) > 0 and tenants() == found_before_merge,
    }


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


# Span attribute values encoded as no serializer writes them but every protobuf parser reads
# them: (what the encoding is, the attribute's encoded value fields).
ODD_VALUES: list[tuple[str, list[bytes]]] = [
    ("value field twice, merged", [b"\x0a\x01a", b"\x18\x05"]),
    ("value field twice, same member", [b"\x0a\x01a", b"\x0a\x02bc"]),
    ("two members in one value", [b"\x0a\x01a\x18\x07"]),
    ("unknown field after the member", [b"\x0a\x01a\x50\x01"]),
    ("non-minimal varint int", [b"\x18\x85\x00"]),
    ("non-minimal varint length", [b"\x0a\x81\x00a"]),
    ("bool 2", [b"\x10\x02"]),
    ("negative int", [b"\x18" + varint((-5) & (2**64 - 1))]),
    ("empty value", [b""]),
    ("array element with two members", [b"\x2a\x07" + _field(1, b"\x0a\x01a\x18\x01")]),
]


def odd_request(values: list[bytes]) -> bytes:
    span = Span(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="odd", start_time_unix_nano=1_700_000_000 * 10**9
    )
    key_value = _field(1, b"odd") + b"".join(_field(2, value) for value in values)
    scope_spans = _field(2, span.SerializeToString() + _field(9, key_value))
    return _field(1, _field(2, scope_spans))


def check_odd_encodings(client: Client, root: Path) -> dict[str, object]:
    """Unusual but valid encodings of attribute values: the same rows as SpanRows, natively or refused."""
    rows_db = StoreConfig(url=f"chdb://{root / 'store'}", database="odd_rows")
    native_db = StoreConfig(url=rows_db.url, database="odd_native")
    apply_migrations(client, rows_db)
    apply_migrations(client, native_db)
    native = NativeInsert(client, native_db.database, root / "odd-batch.pb")
    results: dict[str, object] = {}
    for number, (name, values) in enumerate(ODD_VALUES):
        payload = odd_request(values)
        batch = SpoolBatch(1, number, number + 1, (SpoolRecord(0, 0, 1, 0, payload),), f"odd-{number}")
        rows = SpanRows()
        rows.add_otlp(ExportTraceServiceRequest.FromString(payload))
        SpanWriter(client, rows_db.database).write(rows, batch.dedup_token)
        try:
            statement = "native" if write_natively(native, batch) else "refused"
        except Exception as exc:  # what the drain would count as a failure of the native path
            statement = f"failed: {str(exc)[:120]}"
        if statement != "native":
            SpanWriter(client, native_db.database).write(rows, batch.dedup_token)
        query = "SELECT SpanAttributes FROM `{db}`.otel_traces WHERE SpanName = 'odd' ORDER BY Timestamp"
        expected = run_query(client, query.format(db=rows_db.database)).result_rows
        actual = run_query(client, query.format(db=native_db.database)).result_rows
        results[name] = {"statement": statement, "same": expected == actual, "value": repr(actual[-1:])}
        run_query(client, f"TRUNCATE TABLE `{rows_db.database}`.otel_traces")
        run_query(client, f"TRUNCATE TABLE `{native_db.database}`.otel_traces")
    return results


def main(root: Path, batches: int) -> None:
    rows_db = StoreConfig(url=f"chdb://{root / 'store'}", database="by_rows")
    native_db = StoreConfig(url=rows_db.url, database="by_engine")
    client = open_store(rows_db, use_database=False, write=True)
    apply_migrations(client, rows_db)
    apply_migrations(client, native_db)
    writer = SpanWriter(client, rows_db.database)
    native = NativeInsert(client, native_db.database, root / "native-batch.pb")
    rng = random.Random(20261125)
    native_batches = refused = 0
    wrong_path: list[int] = []
    for number in range(batches):
        unsupported = 0.0 if number % 3 else 0.02
        records: list[SpoolRecord] = []
        for _ in range(rng.randrange(1, 6)):
            payload, spans = make_request(rng, unsupported)
            records.append(SpoolRecord(0, 0, spans, 0, payload))
        batch = SpoolBatch(1, number, number + 1, tuple(records), f"equivalence-{number}")
        rows = SpanRows()
        for record in records:
            rows.add_otlp(ExportTraceServiceRequest.FromString(bytes(record.payload)))
        writer.write(rows, batch.dedup_token)
        expected_native = all(renders_natively(bytes(record.payload)) for record in records)
        written_natively = write_natively(native, batch)
        if written_natively != expected_native:
            wrong_path.append(number)
        if written_natively:
            native_batches += 1
        else:
            refused += 1
            SpanWriter(client, native_db.database).write(rows, batch.dedup_token)

    def table(database: str) -> list[tuple[object, ...]]:
        return [
            tuple(row)
            for row in run_query(
                client, f"SELECT * FROM `{database}`.otel_traces ORDER BY SpanId, Timestamp, TraceId"
            ).result_rows
        ]

    expected, actual = table(rows_db.database), table(native_db.database)
    read_in_blocks = check_read_in_blocks(client, root, rng)
    odd_encodings = check_odd_encodings(client, root)
    differences = [
        {"rows": repr(a), "native": repr(b)} for a, b in zip(expected, actual, strict=False) if a != b
    ]
    print(
        json.dumps(
            {
                "rows": len(expected),
                "native_rows": len(actual),
                "native_batches": native_batches,
                "refused_batches": refused,
                "wrong_path": wrong_path,
                "differences": differences[:3],
                "different": len(differences),
                "read_in_blocks": read_in_blocks,
                "odd_encodings": odd_encodings,
            }
        )
    )
    client.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
