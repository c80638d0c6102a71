"""The Native insert body SpanWriter builds reads back exactly as clickhouse-connect's own.

The same batch goes into two bare copies of ``otel_traces``: one through our body
(:mod:`.native_block`, ``raw_insert``), one through clickhouse-connect's generic Native
writer (what SpanWriter used before); the tables must hold the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal import native_block
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, SpanRows
from llmledger.exporter._internal.store import run_command, run_query
from llmledger.exporter._internal.writer import SpanWriter

from .span_strategies import START, span_batches, texts


def utf8_column(values: list[str]) -> bytes:
    """A String column the obvious way: varint byte length, then the bytes."""
    out = bytearray()
    for value in values:
        encoded = value.encode()
        size = len(encoded)
        while size > 0x7F:
            out.append(0x80 | (size & 0x7F))
            size >>= 7
        out.append(size)
        out += encoded
    return bytes(out)


@given(
    st.one_of(
        st.lists(texts, max_size=50),
        st.lists(st.text(min_size=3, max_size=3), max_size=50),  # one length for all
        st.lists(st.integers(16_000, 17_000).map(lambda size: "ab" * size), max_size=2),  # three-byte lengths
    )
)
def test_string_column_is_varint_lengths_and_utf8(values: list[str]) -> None:
    assert native_block.string_column(values) == utf8_column(values)


def test_string_columns_longer_than_a_chunk_are_whole() -> None:
    values = [str(number) * (number % 5) for number in range(10_000)] + ["é"] + ["x"] * 5_000
    assert native_block.string_column(values) == utf8_column(values)


@pytest.fixture(scope="module")
def plain_database(store_client: Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database with two bare copies of otel_traces (no views): ``otel_traces`` and ``reference``."""
    del tmp_path_factory
    schema = StoreConfig(url="chdb://unused", database=f"s_{uuid.uuid4().hex[:12]}")
    plain = f"p_{uuid.uuid4().hex[:12]}"
    apply_migrations(store_client, schema)
    run_command(store_client, f"CREATE DATABASE `{plain}`")
    for table in ("otel_traces", "reference"):
        run_command(store_client, f"CREATE TABLE `{plain}`.`{table}` AS `{schema.database}`.`otel_traces`")
    run_command(store_client, f"DROP DATABASE `{schema.database}`")
    yield plain
    run_command(store_client, f"DROP DATABASE IF EXISTS `{plain}`")


def insert_with_clickhouse_connect(client: Client, database: str, rows: SpanRows) -> None:
    """What SpanWriter did before it built the body itself."""
    context = client.create_insert_context(
        table="reference",
        database=database,
        column_names=[name for name, _ in OTEL_TRACES_COLUMNS],
        column_type_names=[type_name for _, type_name in OTEL_TRACES_COLUMNS],
        column_oriented=True,
    )
    context.data = rows.columns
    context.settings["insert_deduplication_token"] = uuid.uuid4().hex
    client.insert(context=context)


def table_rows(client: Client, database: str, table: str) -> list[Sequence[Any]]:
    result = run_query(client, f"SELECT * FROM `{database}`.`{table}`")
    return sorted(result.result_rows, key=repr)


def assert_same_as_clickhouse_connect(client: Client, database: str, rows: SpanRows) -> None:
    for table in ("otel_traces", "reference"):
        run_command(client, f"TRUNCATE TABLE `{database}`.`{table}`")
    SpanWriter(client, database).write(rows, dedup_token=uuid.uuid4().hex)
    insert_with_clickhouse_connect(client, database, rows)
    ours = table_rows(client, database, "otel_traces")
    assert len(ours) == len(rows)
    assert ours == table_rows(client, database, "reference")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(span_batches(max_size=20))
def test_native_body_reads_back_as_clickhouse_connects(
    store_client: Client, plain_database: str, spans: list[ReadableSpan]
) -> None:
    rows = SpanRows()
    rows.add_sdk_spans(spans)
    if len(rows):
        assert_same_as_clickhouse_connect(store_client, plain_database, rows)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(span_batches(max_size=10))
def test_otlp_rows_read_back_as_clickhouse_connects(
    store_client: Client, plain_database: str, spans: list[ReadableSpan]
) -> None:
    rows = SpanRows()
    rows.add_otlp(encode_spans([span for span in spans if span.context is not None]))
    if len(rows):
        assert_same_as_clickhouse_connect(store_client, plain_database, rows)


def test_wide_dictionaries_and_long_values_read_back(store_client: Client, plain_database: str) -> None:
    # 300 distinct keys and span names (two-byte LowCardinality indexes), values past 16 KiB.
    spans = [
        ReadableSpan(
            f"span {number}",
            context=SpanContext(number + 1, number + 1, False),
            attributes={
                f"key.{number}": "v" * (number * 60),
                "shared": number,
                "text": "日本" * (number % 4),
            },
            start_time=START + number,
            end_time=START + 2 * number,
        )
        for number in range(300)
    ]
    rows = SpanRows()
    rows.add_sdk_spans(spans)
    assert_same_as_clickhouse_connect(store_client, plain_database, rows)


def test_four_byte_low_cardinality_indexes_read_back(store_client: Client, plain_database: str) -> None:
    values = [f"name-{number}" for number in range(70_000)] + ["name-1"]
    run_command(
        store_client, f"CREATE TABLE `{plain_database}`.lc (s LowCardinality(String)) ENGINE = Memory"
    )
    body = b"".join((
        b"\x01",
        native_block.varint(len(values)),
        native_block.string_column(["s"]),
        native_block.string_column(["LowCardinality(String)"]),
        native_block._LC_VERSION,  # pyright: ignore[reportPrivateUsage]
        native_block._low_cardinality(values),  # pyright: ignore[reportPrivateUsage]
    ))  # fmt: skip
    store_client.raw_insert(f"`{plain_database}`.lc", ["s"], insert_block=body, fmt="Native")  # pyright: ignore[reportUnknownMemberType]
    result = run_query(store_client, f"SELECT s FROM `{plain_database}`.lc")
    assert [row[0] for row in result.result_rows] == values


class RecordingClient:
    """Stands in for a clickhouse-connect client: records what SpanWriter asks it to insert."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def raw_insert(self, table: str, column_names: Sequence[str] | None = None, **rest: Any) -> None:
        self.calls.append({"table": table, "column_names": list(column_names or []), **rest})


def test_the_writer_sends_a_raw_native_insert_any_client_takes() -> None:
    # raw_insert is the one call the chDB backend and the HTTP client both implement: an
    # INSERT INTO ... (columns) FORMAT Native with the body, and the settings as settings.
    spans = [ReadableSpan("chat", context=SpanContext(1, 2, False), start_time=START, end_time=START + 5)]
    rows = SpanRows()
    rows.add_sdk_spans(spans)
    client = RecordingClient()
    assert SpanWriter(cast(Client, client), "llmledger").write(rows) == 1
    assert SpanWriter(cast(Client, client), "llmledger").write(SpanRows()) == 0
    (call,) = client.calls
    assert call == {
        "table": "`llmledger`.`otel_traces`",
        "column_names": [name for name, _ in OTEL_TRACES_COLUMNS],
        "insert_block": native_block.encode_block(rows.span_columns()),
        "settings": {"insert_deduplication_token": rows.dedup_token()},
        "fmt": "Native",
    }
