"""The collector as its embedded store's server: ClickHouse's HTTP interface, spoken by real clients.

The clients are clickhouse-connect's HTTP client (what the CLI, Grafana's Python users and
most tools use) and plain HTTP as ``curl`` sends it; the engine behind the collector is the
real one. One collector serves the whole module.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import http.client
import json
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from llmledger.exporter._internal.store_owner import ADMIN_USER, READONLY_USER, OwnerRecord, current_owner

from .harness import CollectorProcess, make_request, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, OwnerRecord]]:
    root = tmp_path_factory.mktemp("served")
    collector = CollectorProcess(root / "data", f"chdb://{root / 'store'}").start()
    owner = current_owner(root / "store")
    assert owner is not None, collector.log()
    status, _, body = collector.post_traces(make_request(30, 7, tenant="acme").SerializeToString())
    assert status == 200, body
    wait_for(lambda: collector.metric("written_spans_total") >= 30, 30, "the spans written")
    yield collector, owner
    assert collector.stop() == 0, collector.log()


def _client(owner: OwnerRecord, *, write: bool, **kwargs: Any) -> Client:
    return clickhouse_connect.get_client(  # pyright: ignore[reportUnknownMemberType]
        host=owner.host,
        port=owner.port,
        username=ADMIN_USER if write else READONLY_USER,
        password=owner.admin_password if write else owner.readonly_password,
        **kwargs,
    )


@pytest.fixture(scope="module")
def admin(served: tuple[CollectorProcess, OwnerRecord]) -> Iterator[Client]:
    client = _client(served[1], write=True, database="llmledger")
    yield client
    client.close()


@pytest.fixture(scope="module")
def reader(served: tuple[CollectorProcess, OwnerRecord]) -> Iterator[Client]:
    client = _client(served[1], write=False, database="llmledger")
    yield client
    client.close()


def _http(
    owner: OwnerRecord,
    method: str,
    params: Mapping[str, str] | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    path: str = "/",
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(owner.host, owner.port, timeout=30)
    try:
        url = path + ("?" + urlencode(params) if params else "")
        connection.request(method, url, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _auth(owner: OwnerRecord) -> dict[str, str]:
    return {"X-ClickHouse-User": ADMIN_USER, "X-ClickHouse-Key": owner.admin_password}


# -- clickhouse-connect ---------------------------------------------------------------------


def test_native_queries_keep_clickhouse_types(reader: Client) -> None:
    result = reader.query(  # pyright: ignore[reportUnknownMemberType]
        "SELECT tenant_id, count() AS calls, sum(cost_usd) AS cost, max(Timestamp) AS last, "
        "groupArray(request_model)[1] AS model, map('k', 1) AS m "
        "FROM llm_calls WHERE tenant_id = {tenant:String} GROUP BY tenant_id",
        parameters={"tenant": "acme"},
    )
    assert result.column_names == ("tenant_id", "calls", "cost", "last", "model", "m")
    ((tenant, calls, cost, last, model, mapping),) = result.result_rows
    assert (tenant, calls, model, mapping) == ("acme", 30, "gpt-4o-mini", {"k": 1})
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.000435") * 30
    assert isinstance(last, dt.datetime)


def test_other_formats_clickhouse_connect_asks_for(reader: Client) -> None:
    sql = "SELECT number AS n, toString(number) AS s FROM numbers(3)"
    assert json.loads(reader.raw_query(sql, fmt="JSON"))["data"] == [  # pyright: ignore[reportUnknownMemberType]
        {"n": 0, "s": "0"},
        {"n": 1, "s": "1"},
        {"n": 2, "s": "2"},
    ]
    binary = reader.raw_query(sql, fmt="RowBinaryWithNamesAndTypes")  # pyright: ignore[reportUnknownMemberType]
    assert binary.startswith(b"\x02\x01n\x01s\x06UInt64\x06String")
    assert reader.raw_query(sql, fmt="CSV") == b'0,"0"\n1,"1"\n2,"2"\n'  # pyright: ignore[reportUnknownMemberType]
    # A result larger than one block arrives whole (the collector streams it in chunks).
    assert reader.query("SELECT number FROM numbers(250000)").row_count == 250_000  # pyright: ignore[reportUnknownMemberType]
    assert reader.query("SELECT number FROM numbers(10) WHERE number > 100").result_rows == []  # pyright: ignore[reportUnknownMemberType]


def test_inserts_and_commands_with_the_read_write_user(admin: Client) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    admin.command(
        f"CREATE TABLE {table} (id UInt32, name String, cost Decimal(38, 12)) ENGINE = MergeTree ORDER BY id"
    )  # pyright: ignore[reportUnknownMemberType]
    rows = [[i, f"name-{i}", Decimal(i) / Decimal(10**12)] for i in range(1000)]
    admin.insert(table, rows, column_names=["id", "name", "cost"])  # pyright: ignore[reportUnknownMemberType]
    admin.raw_insert(table, ["id", "name", "cost"], b"5000\tcsvish\t0.5\n", fmt="TabSeparated")  # pyright: ignore[reportUnknownMemberType]
    count, total = admin.query(f"SELECT count(), sum(cost) FROM {table}").result_rows[0]  # pyright: ignore[reportUnknownMemberType]
    assert count == 1001
    assert total == sum(Decimal(i) for i in range(1000)) / Decimal(10**12) + Decimal("0.5")
    admin.command(f"DROP TABLE {table}")  # pyright: ignore[reportUnknownMemberType]


def test_the_read_only_user_is_refused_writes_as_a_server_refuses_them(
    reader: Client, served: tuple[CollectorProcess, OwnerRecord]
) -> None:
    with pytest.raises(DatabaseError) as info:
        reader.command("CREATE TABLE nope (x UInt8) ENGINE = Memory")  # pyright: ignore[reportUnknownMemberType]
    assert "READONLY" in str(info.value)
    with pytest.raises(DatabaseError, match="READONLY"):
        reader.insert(  # pyright: ignore[reportUnknownMemberType]
            "budgets",
            [["acme", "", "monthly", Decimal(1), "soft"]],
            column_names=["tenant_id", "user_id", "period", "limit_usd", "enforcement"],
        )
    owner = served[1]
    status, headers, body = _http(
        owner,
        "POST",
        {"readonly": "0"},
        b"SELECT 1",
        {"X-ClickHouse-User": READONLY_USER, "X-ClickHouse-Key": owner.readonly_password},
    )
    assert status == 500
    assert headers["x-clickhouse-exception-code"] == "164"
    assert b"Cannot modify 'readonly' setting in readonly mode" in body


def test_errors_are_shaped_like_clickhouse_errors(
    reader: Client, served: tuple[CollectorProcess, OwnerRecord]
) -> None:
    with pytest.raises(DatabaseError) as info:
        reader.query("SELECT * FROM no_such_table")  # pyright: ignore[reportUnknownMemberType]
    assert "code: 60" in str(info.value)
    owner = served[1]
    status, headers, body = _http(owner, "POST", None, b"SELEC 1", _auth(owner))
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "62")
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error")
    status, headers, body = _http(
        owner,
        "POST",
        {"query": "SELECT 1"},
        None,
        {"X-ClickHouse-User": ADMIN_USER, "X-ClickHouse-Key": "wrong"},
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "516")
    assert b"Authentication failed" in body
    with pytest.raises(DatabaseError, match="516"):
        clickhouse_connect.get_client(host=owner.host, port=owner.port, username="default", password="")  # pyright: ignore[reportUnknownMemberType]


def test_sessions_keep_their_settings_per_client(served: tuple[CollectorProcess, OwnerRecord]) -> None:
    owner = served[1]
    first = _client(owner, write=True, autogenerate_session_id=True)
    second = _client(owner, write=True, autogenerate_session_id=True)
    try:
        first.command("SET max_threads = 3")  # pyright: ignore[reportUnknownMemberType]
        assert first.command("SELECT getSetting('max_threads')") == 3  # pyright: ignore[reportUnknownMemberType]
        assert second.command("SELECT getSetting('max_threads')") != 3  # pyright: ignore[reportUnknownMemberType]
        # A setting sent with one query applies to that query only.
        assert first.command("SELECT getSetting('max_threads')", settings={"max_threads": 5}) == 5  # pyright: ignore[reportUnknownMemberType]
        assert first.command("SELECT getSetting('max_threads')") == 3  # pyright: ignore[reportUnknownMemberType]
    finally:
        first.close()
        second.close()


# -- plain HTTP, as curl and Grafana's plugin send it --------------------------------------


def test_plain_http_query_forms(served: tuple[CollectorProcess, OwnerRecord]) -> None:
    owner = served[1]
    assert _http(owner, "GET", path="/ping")[2] == b"Ok.\n"
    basic = "Basic " + base64.b64encode(f"{READONLY_USER}:{owner.readonly_password}".encode()).decode()
    status, headers, body = _http(owner, "GET", {"query": "SELECT 1 + 1"}, None, {"Authorization": basic})
    assert (status, body) == (200, b"2\n")
    assert headers["x-clickhouse-format"] == "TabSeparated"
    status, _, body = _http(
        owner,
        "POST",
        {
            "user": ADMIN_USER,
            "password": owner.admin_password,
            "database": "llmledger",
            "default_format": "JSONEachRow",
            "param_t": "acme",
        },
        b"SELECT count() AS n FROM llm_calls WHERE tenant_id = {t:String}",
    )
    assert (status, json.loads(body)) == (200, {"n": 30})
    # The query's beginning in the URL, the rest in the body; a FORMAT clause wins over default_format.
    status, _, body = _http(
        owner,
        "POST",
        {"query": "SELECT 'a' AS x", "default_format": "CSV"},
        b"FORMAT JSONCompact",
        _auth(owner),
    )
    assert json.loads(body)["data"] == [["a"]]


def test_plain_http_inserts_gzip_and_chunked(served: tuple[CollectorProcess, OwnerRecord]) -> None:
    owner = served[1]
    table = f"p_{uuid.uuid4().hex[:8]}"
    assert (
        _http(
            owner,
            "POST",
            None,
            f"CREATE TABLE {table} (a UInt32, s String) ENGINE = MergeTree ORDER BY a".encode(),
            _auth(owner),
        )[0]
        == 200
    )
    # Statement and data in one body, as `curl --data-binary` sends it.
    assert (
        _http(owner, "POST", None, f"INSERT INTO {table} FORMAT CSV\n1,one\n2,two\n".encode(), _auth(owner))[
            0
        ]
        == 200
    )
    # Statement in the URL (with a SETTINGS clause), data gzip-compressed in the body.
    status, _, body = _http(
        owner,
        "POST",
        {"query": f"INSERT INTO {table} SETTINGS async_insert = 0 FORMAT JSONEachRow"},
        gzip.compress(b'{"a": 3, "s": "three"}\n'),
        {**_auth(owner), "Content-Encoding": "gzip"},
    )
    assert status == 200, body
    # A chunked body (no Content-Length), as streaming clients send it.
    connection = http.client.HTTPConnection(owner.host, owner.port, timeout=30)
    connection.putrequest("POST", "/?" + urlencode({"query": f"INSERT INTO {table} FORMAT TSV"}))
    for name, value in {**_auth(owner), "Transfer-Encoding": "chunked"}.items():
        connection.putheader(name, value)
    connection.endheaders()
    for piece in (b"4\tfo", b"ur\n5\tfive\n"):
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 200, response.read()
    response.read()
    connection.close()
    status, _, body = _http(
        owner,
        "POST",
        {"default_format": "TSV"},
        f"SELECT a, s FROM {table} ORDER BY a".encode(),
        _auth(owner),
    )
    assert body == b"1\tone\n2\ttwo\n3\tthree\n4\tfour\n5\tfive\n"
    _http(owner, "POST", None, f"DROP TABLE {table}".encode(), _auth(owner))


def test_owner_file_is_private_and_names_the_collector(
    served: tuple[CollectorProcess, OwnerRecord], tmp_path: Path
) -> None:
    collector, owner = served
    store = Path(collector.store_url.removeprefix("chdb://"))
    path = store.with_name(store.name + ".owner.json")
    assert path.stat().st_mode & 0o777 == 0o600
    assert owner.pid == collector.pid
    del tmp_path


def test_large_query_parameters_in_the_url_and_as_form_fields(reader: Client) -> None:
    # clickhouse-connect sends parameters in the URL, and switches to multipart form fields
    # when they grow large; both reach the engine.
    small = [f"id-{i}" for i in range(2_000)]
    assert reader.command("SELECT length({ids:Array(String)})", parameters={"ids": small}) == 2_000  # pyright: ignore[reportUnknownMemberType]
    large = [f"span-{i:016x}" for i in range(20_000)]
    result = reader.query(
        "SELECT length({ids:Array(String)}), {ids:Array(String)}[20000]", parameters={"ids": large}
    )  # pyright: ignore[reportUnknownMemberType]
    assert result.result_rows == [(20_000, large[-1])]


# -- the HTTP/1.x framing itself, as curl and old clients send it ---------------------------


def _raw(owner: OwnerRecord, data: bytes, *, then: bytes = b"") -> bytes:
    """Send ``data`` (then ``then`` after the first reply starts), read until the server closes."""
    import socket

    with socket.create_connection((owner.host, owner.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        if then:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            sock.sendall(then)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _basic(owner: OwnerRecord) -> str:
    return base64.b64encode(f"{READONLY_USER}:{owner.readonly_password}".encode()).decode()


def test_expect_100_continue_is_answered_before_the_body(
    served: tuple[CollectorProcess, OwnerRecord],
) -> None:
    owner = served[1]
    body = b"SELECT 40 + 2"
    head = (
        f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {_basic(owner)}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    reply = _raw(owner, head, then=body)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), reply[:200]
    assert reply.endswith(b"42\n") or b"\r\n42\n" in reply


def test_http_1_0_closes_unless_kept_alive_and_headers_are_case_insensitive(
    served: tuple[CollectorProcess, OwnerRecord],
) -> None:
    owner = served[1]
    request = f"GET /?query=SELECT%201 HTTP/1.0\r\nauthorization: Basic {_basic(owner)}\r\n\r\n".encode()
    reply = _raw(owner, request * 2)  # the second request is never read: the first closes
    assert reply.count(b"HTTP/1.1 200 OK") == 1
    assert reply.endswith(b"\r\n\r\n1\n")  # the whole result with its length: HTTP/1.0 has no chunks
    kept = request.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n")
    reply = _raw(owner, kept + request)
    assert reply.count(b"HTTP/1.1 200 OK") == 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
        (b"GET /\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_malformed_requests_are_refused_with_the_status_that_says_why(
    served: tuple[CollectorProcess, OwnerRecord], request_bytes: bytes, status: bytes
) -> None:
    reply = _raw(served[1], request_bytes)
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == status, reply[:200]
    # The collector serves on: a well-formed request right after is answered.
    assert (
        _http(
            served[1], "GET", {"query": "SELECT 1"}, headers={"Authorization": f"Basic {_basic(served[1])}"}
        )[0]
        == 200
    )


def test_a_query_that_fails_midway_leaves_nothing_for_the_next_one(
    served: tuple[CollectorProcess, OwnerRecord],
) -> None:
    """chDB keeps a failed query's partial output on its connection: the pool must not hand it on."""
    owner = served[1]
    headers = {"Authorization": f"Basic {_basic(owner)}"}
    failing = "SELECT number, throwIf(number = 90000) FROM numbers(100000) SETTINGS max_block_size = 1000 FORMAT JSON"
    for _ in range(3):  # whichever pooled connection answers next
        status, _, body = _http(owner, "POST", None, failing.encode(), headers)
        assert status == 500, body[:200]
        assert b"FUNCTION_THROW_IF_VALUE_IS_NON_ZERO" in body
        status, _, body = _http(owner, "POST", None, b"SELECT 41 + 1 AS n FORMAT JSON", headers)
        assert status == 200
        assert json.loads(body)["data"] == [{"n": 42}]


def test_a_session_query_that_fails_midway_leaves_nothing_for_the_sessions_next_one(
    served: tuple[CollectorProcess, OwnerRecord],
) -> None:
    owner = served[1]
    headers = {"Authorization": f"Basic {_basic(owner)}"}
    session = {"session_id": f"s-{uuid.uuid4().hex[:8]}"}
    failing = "SELECT number, throwIf(number = 90000) FROM numbers(100000) SETTINGS max_block_size = 1000 FORMAT JSON"
    status, _, body = _http(owner, "POST", session, failing.encode(), headers)
    assert status == 500, body[:200]
    status, _, body = _http(owner, "POST", session, b"SELECT 41 + 1 AS n FORMAT JSON", headers)
    assert status == 200
    assert json.loads(body)["data"] == [{"n": 42}]


def test_small_results_come_whole_and_large_ones_streamed_all_correct(
    reader: Client, served: tuple[CollectorProcess, OwnerRecord]
) -> None:
    """A SELECT is answered in one piece up to 8 MiB (one engine call), streamed past it: same rows."""
    owner = served[1]
    headers = {"Authorization": f"Basic {_basic(owner)}"}
    status, small, body = _http(owner, "POST", None, b"SELECT number FROM numbers(1000) FORMAT TSV", headers)
    assert status == 200
    assert small.get("content-length") == str(len(body))
    assert "transfer-encoding" not in small
    assert body.split() == [str(n).encode() for n in range(1000)]
    # 3 M UInt64 values: 24 MB in the engine, past the one-shot limit, so sent in chunks.
    status, large, body = _http(
        owner, "POST", None, b"SELECT number FROM numbers(3000000) FORMAT TSV", headers
    )
    assert status == 200
    assert large.get("transfer-encoding") == "chunked"
    assert len(body.splitlines()) == 3_000_000
    result = reader.query("SELECT number, toString(number) AS s FROM numbers(3000000)")
    assert result.row_count == 3_000_000
    assert sum(row[0] for row in result.result_rows) == 3_000_000 * 2_999_999 // 2
    # The pool still answers small queries right after the large one fell back.
    assert reader.query("SELECT 1 + 1").result_rows == [(2,)]


def test_a_clients_own_result_limit_is_kept(served: tuple[CollectorProcess, OwnerRecord]) -> None:
    owner = served[1]
    headers = {"Authorization": f"Basic {_basic(owner)}"}
    params = {"max_result_rows": "10", "result_overflow_mode": "throw"}
    status, reply, body = _http(
        owner, "POST", params, b"SELECT number FROM numbers(1000) FORMAT TSV", headers
    )
    assert status == 500, body[:200]
    assert reply.get("x-clickhouse-exception-code") == "396"
    params["result_overflow_mode"] = "break"
    status, _, body = _http(owner, "POST", params, b"SELECT number FROM numbers(100000) FORMAT TSV", headers)
    assert status == 200
    assert 10 <= len(body.splitlines()) < 100000  # cut at a block boundary past the limit, as ClickHouse does
