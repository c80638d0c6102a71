"""How the store server splits a request into statement, output format and INSERT data (outside input: fuzzed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmledger.exporter._internal.collector.clickhouse_http import EngineError, parse_statement


@pytest.mark.parametrize(
    ("text", "kind", "output"),
    [
        (b"SELECT 1", "SELECT", None),
        (b"select 1 FORMAT JSON", "SELECT", "JSON"),
        (b"SELECT 'FORMAT CSV' AS x FORMAT TSV SETTINGS max_threads = 1", "SELECT", "TSV"),
        (b"SELECT (SELECT 1 FORMAT CSV) -- FORMAT JSON\n", "SELECT", None),
        (b"/* FORMAT Pretty */ WITH 1 AS x SELECT x\n FORMAT Native", "WITH", "Native"),
        (b"SELECT `FORMAT` FROM t", "SELECT", None),
        (b"  \n SHOW TABLES", "SHOW", None),
    ],
)
def test_kind_and_output_format(text: bytes, kind: str, output: str | None) -> None:
    statement = parse_statement(text)
    assert (statement.kind, statement.output_format, statement.insert_format) == (kind, output, None)
    assert statement.sql == text


@pytest.mark.parametrize(
    ("text", "head", "fmt", "data", "settings_at"),
    [
        (b"INSERT INTO t FORMAT CSV\n1,2\n", b"INSERT INTO t ", "CSV", b"1,2\n", None),
        (b"INSERT INTO t (a, b) FORMAT TSV  \n\tx\n", b"INSERT INTO t (a, b) ", "TSV", b"\tx\n", None),
        (b'INSERT INTO t FORMAT JSONEachRow {"a": 1}', b"INSERT INTO t ", "JSONEachRow", b'{"a": 1}', None),
        (
            b"INSERT INTO t SETTINGS x = 1 FORMAT Native\n\x00\x01",
            b"INSERT INTO t SETTINGS x = 1 ",
            "Native",
            b"\x00\x01",
            14,
        ),
        (b"INSERT INTO `FORMAT` FORMAT CSV\n1\n", b"INSERT INTO `FORMAT` ", "CSV", b"1\n", None),
    ],
)
def test_insert_data_starts_where_clickhouse_starts_it(
    text: bytes, head: bytes, fmt: str, data: bytes, settings_at: int | None
) -> None:
    statement = parse_statement(text)
    assert (statement.kind, statement.sql, statement.insert_format, statement.data) == (
        "INSERT",
        head,
        fmt,
        data,
    )
    assert statement.settings_at == settings_at


@pytest.mark.parametrize(
    "text",
    [b"INSERT INTO t VALUES (1, 'FORMAT CSV')", b"INSERT INTO t SELECT * FROM u", b"INSERT INTO t (a)"],
)
def test_inserts_without_data_run_as_written(text: bytes) -> None:
    statement = parse_statement(text)
    assert (statement.sql, statement.insert_format, statement.data) == (text, None, b"")


def test_an_empty_request_is_a_syntax_error() -> None:
    with pytest.raises(EngineError) as info:
        parse_statement(b"  -- nothing\n")
    assert (info.value.code, info.value.name, info.value.status) == (62, "SYNTAX_ERROR", 400)


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_are_a_clickhouse_error(text: bytes) -> None:
    try:
        statement = parse_statement(text)
    except EngineError as error:
        assert error.status == 400  # noqa: PT017 - the property is "this error or a statement"
        return
    # Nothing is lost or invented: the statement and the data are the request, in order.
    assert text.startswith(statement.sql)
    assert text.endswith(statement.data)
    assert len(statement.sql) + len(statement.data) <= len(text)


@given(
    table=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
    fmt=st.sampled_from(["CSV", "TSV", "Native", "RowBinary", "JSONEachRow"]),
    data=st.binary(max_size=300),
)
def test_insert_data_is_kept_byte_for_byte(table: str, fmt: str, data: bytes) -> None:
    statement = parse_statement(f"INSERT INTO {table} FORMAT {fmt}\n".encode() + data)
    assert (statement.insert_format, statement.data) == (fmt, data)
