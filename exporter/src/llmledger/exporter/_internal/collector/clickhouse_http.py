"""ClickHouse's own HTTP interface over the embedded store, served by the collector that owns it.

chDB locks its store, so while the collector runs no other process can open the embedded
store. The collector therefore answers the protocol every ClickHouse tool already speaks —
clickhouse-connect, Grafana's ClickHouse plugin in HTTP mode, ``curl`` — on loopback
(default port 8123): the query in the ``query`` parameter and/or the body, ``database``,
``default_format`` or a ``FORMAT`` clause, settings as parameters, ``param_*`` query
parameters, sessions, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or basic auth, inserts with
their data in the body, and ClickHouse-shaped errors (``Code: N. DB::Exception: …`` with
``X-ClickHouse-Exception-Code`` and the server's status mapping). The engine is the real
one: each request runs on its own chDB connection to the store the collector has open; this
module only carries the protocol.

Two users: :data:`ADMIN_USER` may write; :data:`READONLY_USER` runs with ``readonly=2``
(reads and settings, no writes), which the engine itself enforces.
"""

from __future__ import annotations

import email.policy
import gzip
import hmac
import logging
import os
import re
import socket
import threading
import time
import uuid
import zlib
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, overload
from urllib.parse import parse_qsl, urlsplit

from llmledger.exporter._internal.errors import OUTSIDE_FAILURES, contain, contained
from llmledger.exporter._internal.identifiers import is_plain_identifier, quote_identifier
from llmledger.exporter._internal.store_owner import ADMIN_USER, READONLY_USER

from .chunked import ChunkedBodyError, ChunkedTooLargeError, read_chunked

__all__ = ["ClickHouseHttpServer", "EngineError", "Statement", "parse_statement"]

_logger = logging.getLogger("llmledger.collector.clickhouse_http")

_MAX_BODY_BYTES: Final = 1 << 30
_MAX_URI_BYTES: Final = 1 << 20
_ENGINE_WAIT_SECONDS: Final = 30.0
_SESSION_TIMEOUT_DEFAULT: Final = 60.0
_SESSION_TIMEOUT_MAX: Final = 3600.0
# Request parameters that are the protocol's own, not settings for the query.
_TRANSPORT_PARAMS: Final = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "quota_key",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "stacktrace",
        "add_http_cors_header",
    }
)
# Formats whose output may be sent block by block (no header or footer over the whole result).
# A SELECT whose result stays under this is answered whole, by one engine call (chDB's streaming
# API hands each of a query's blocks across threads: 1-3 ms more on a dashboard query of a few
# ms); a larger result fails fast against the limit and is run again, streamed.
_ONE_SHOT_MAX_BYTES: Final = 8 << 20
_RESULT_LIMIT_SETTINGS: Final = frozenset({"max_result_rows", "max_result_bytes", "result_overflow_mode"})
_TOO_MANY_ROWS_OR_BYTES: Final = 396
_STREAMABLE: Final = frozenset(
    {
        "Native",
        "TabSeparated",
        "TSV",
        "TabSeparatedRaw",
        "TSVRaw",
        "CSV",
        "RowBinary",
        "JSONEachRow",
        "JSONCompactEachRow",
        "Values",
    }
)
# Statements after which a connection is as it was set up (no SET, USE, temporary table …).
_STATELESS: Final = frozenset({"SELECT", "WITH", "INSERT", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})
_IDLE_PER_KEY: Final = 8
_IDLE_KEYS: Final = 32
_ERROR_CODE: Final = re.compile(r"Code: (\d+)\.")
_ERROR_NAME: Final = re.compile(r"\(([A-Z_]+)\)\s*$")

# ClickHouse's exception-code -> HTTP status mapping (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp).
_STATUS_BY_NAME: Final[Mapping[str, int]] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"),
        403,
    ),
    **dict.fromkeys(
        (
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ),
        400,
    ),
    **dict.fromkeys(
        (
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ),
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


class EngineError(Exception):
    """A ClickHouse exception: ``Code: N. DB::Exception: … (NAME)``, raised by the engine or by this server."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        text = message.strip()
        index = text.find("Code: ")
        text = text[index:] if index > 0 else text
        if code is not None and not text.startswith("Code: "):
            text = f"Code: {code}. DB::Exception: {text}" + (f" ({name})" if name else "")
        match = _ERROR_CODE.match(text)
        self.code = code if code is not None else int(match.group(1)) if match else 1001
        found = _ERROR_NAME.search(text)
        self.name = name or (found.group(1) if found else "")
        self.text = text
        super().__init__(text)

    @property
    def status(self) -> int:
        return _STATUS_BY_NAME.get(self.name, 500)


# What a chDB call raises for the query's or the engine's sake (chDB's errors are RuntimeErrors,
# a bad bound value a ValueError); anything else reaching an engine call's handler is ours.
_ENGINE_FAILURES: Final = (*OUTSIDE_FAILURES, RuntimeError, ValueError, EngineError)


# -- the statement: what to run, which format, where INSERT data starts ---------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """One request's SQL, split the way ClickHouse's HTTP handler splits it."""

    kind: str  # the first keyword, upper-cased (SELECT, INSERT, CREATE, ...)
    sql: bytes  # the statement; for an INSERT with inline data, the part before the data
    output_format: str | None = None  # a trailing FORMAT clause of a query
    insert_format: str | None = None  # INSERT … FORMAT <name>: the format of ``data``
    data: bytes = b""  # INSERT data after the FORMAT clause
    settings_at: int | None = None  # offset in ``sql`` of an INSERT's SETTINGS clause


def _skip_quoted(text: bytes, start: int, quote: int) -> int:
    """The index after the literal/identifier that opens at ``start`` (backslash escapes, doubled quotes)."""
    index = start + 1
    size = len(text)
    while index < size:
        char = text[index]
        if char == 0x5C:  # backslash
            index += 2
            continue
        if char == quote:
            if index + 1 < size and text[index + 1] == quote:
                index += 2
                continue
            return index + 1
        index += 1
    return size


def _words(text: bytes, stop_after_format: bool) -> Iterator[tuple[str, int, int]]:
    """Top-level (outside brackets) words of ``text`` with their offsets, skipping literals and comments."""
    index = 0
    size = len(text)
    depth = 0
    while index < size:
        char = text[index]
        if char in b" \t\r\n\f\v;":
            index += 1
        elif char in b"'\"`":
            index = _skip_quoted(text, index, char)
        elif text.startswith(b"--", index) or char == 0x23:  # -- and # comments
            end = text.find(b"\n", index)
            index = size if end < 0 else end + 1
        elif text.startswith(b"/*", index):
            end = text.find(b"*/", index + 2)
            index = size if end < 0 else end + 2
        elif char in b"([{":
            depth += 1
            index += 1
        elif char in b")]}":
            depth = max(0, depth - 1)
            index += 1
        elif chr(char).isalpha() or char == 0x5F:
            end = index + 1
            while end < size and (chr(text[end]).isalnum() or text[end] == 0x5F):
                end += 1
            if depth == 0:
                yield text[index:end].decode("ascii", "replace").upper(), index, end
            index = end
        else:
            index += 1
        if stop_after_format and index >= size:
            return


def parse_statement(text: bytes) -> Statement:
    """Find the statement's kind, its output format, and for ``INSERT … FORMAT x`` where the data starts.

    As ClickHouse does: INSERT data starts after the format name, after the first newline
    if there is one, or after all the whitespace otherwise.
    """
    words = _words(text, stop_after_format=True)
    first = next(words, None)
    if first is None:
        raise EngineError("Empty query", 62, "SYNTAX_ERROR")
    kind = first[0]
    if kind == "INSERT":
        settings_at: int | None = None
        for word, start, _end in words:
            if word in ("VALUES", "SELECT", "WITH", "FROM"):
                return Statement(kind, text)  # inline VALUES, INSERT … SELECT, or its own INFILE
            if word == "SETTINGS" and settings_at is None:
                settings_at = start
            if word == "FORMAT":
                name = next(words, None)
                if name is None:
                    raise EngineError("INSERT … FORMAT needs a format name", 62, "SYNTAX_ERROR")
                fmt = text[name[1] : name[2]].decode()
                data_at = name[2]
                while data_at < len(text) and text[data_at] in b" \t\r\f\v":
                    data_at += 1
                if data_at < len(text) and text[data_at] == 0x0A:
                    data_at += 1
                return Statement(kind, text[:start], None, fmt, text[data_at:], settings_at)
        return Statement(kind, text)
    output: str | None = None
    previous = ""
    for word, start, end in words:
        if previous == "FORMAT":
            output = text[start:end].decode()
        previous = word
    return Statement(kind, text, output)


# -- the engine side ---------------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _TooLargeForOneShot(Exception):
    """A SELECT's result passed ``_ONE_SHOT_MAX_BYTES``: nothing was sent; it is run again, streamed."""


def _engine_error(exc: Exception) -> EngineError:
    """The ClickHouse error to answer for what a chDB call raised (llmledger's own bugs aside)."""
    contain("the ClickHouse HTTP interface's engine call", exc, _ENGINE_FAILURES)
    return exc if isinstance(exc, EngineError) else EngineError(str(exc))


@dataclass(slots=True)
class _Session:
    connection: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeout: float = _SESSION_TIMEOUT_DEFAULT
    expires: float = 0.0


@dataclass(frozen=True, slots=True)
class _User:
    name: str
    password: str
    readonly: bool


class ClickHouseHttpServer(ThreadingHTTPServer):
    """Serves ClickHouse's HTTP interface for the store at ``connection_string`` on ``listening``.

    ``listening`` is a bound, listening socket (the collector binds it before it reports
    ready, so a port conflict is a start-up error, and passes it to the process that owns
    the store).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        listening: socket.socket,
        connection_string: str,
        *,
        admin_password: str,
        readonly_password: str,
        engine_open: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(listening.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        self._connection_string = connection_string
        self._engine_open = engine_open
        self._probed = False
        self._users = {
            ADMIN_USER: _User(ADMIN_USER, admin_password, readonly=False),
            READONLY_USER: _User(READONLY_USER, readonly_password, readonly=True),
        }
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._sessions_lock = threading.Lock()
        self._idle: OrderedDict[tuple[object, ...], list[Any]] = OrderedDict()
        self._idle_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever, name="llmledger-clickhouse-http", daemon=True
        )
        self.timezone = "UTC"
        self.version = "unknown"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a background thread (requests wait in the backlog until then)."""
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._sessions_lock:
            connections = [session.connection for session in self._sessions.values()]
            self._sessions.clear()
        with self._idle_lock:
            for idle in self._idle.values():
                connections.extend(idle)
            self._idle.clear()
        for connection in connections:
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                connection.close()

    def connect(self) -> Any:
        """A new chDB connection to the store this process has open (cheap: the engine is shared).

        Until the drain has opened the store (at start, or while another process holds it)
        there is no engine to share: the request waits for it up to ``_ENGINE_WAIT_SECONDS``,
        then is refused as a server refuses while it cannot open its data. No second attempt
        to open the store is made here.
        """
        deadline = time.monotonic() + _ENGINE_WAIT_SECONDS
        while not self._engine_open() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._engine_open():
            raise EngineError(
                "The collector has not opened the store yet (starting, or the store is held by another "
                "process); retry shortly",
                76,
                "CANNOT_OPEN_FILE",
            )
        import chdb

        connection: Any = chdb.connect(self._connection_string)  # pyright: ignore[reportUnknownMemberType]
        if not self._probed:
            row = connection.query("SELECT timezone(), version()", "TabSeparated").bytes().decode()
            self.timezone, self.version = row.rstrip("\n").split("\t")
            self._probed = True
        return connection

    def checkout(self, key: tuple[object, ...]) -> Any | None:
        """An idle connection set up for ``key``, or ``None``."""
        with self._idle_lock:
            idle = self._idle.get(key)
            if idle:
                self._idle.move_to_end(key)
                return idle.pop()
        return None

    def checkin(self, key: tuple[object, ...], connection: Any, reusable: bool) -> None:
        """Keep ``connection`` for the next request with the same ``key``, or close it."""
        closing: list[Any] = []
        with self._idle_lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if reusable and len(idle) < _IDLE_PER_KEY:
                idle.append(connection)
            else:
                closing.append(connection)
            while len(self._idle) > _IDLE_KEYS:
                closing.extend(self._idle.popitem(last=False)[1])
        for old in closing:
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                old.close()

    def authenticate(self, name: str, password: str) -> _User:
        user = self._users.get(name)
        # Compare against something even for unknown users, so timing says nothing about names.
        expected = user.password if user is not None else secrets_placeholder()
        if user is None or not hmac.compare_digest(password.encode(), expected.encode()):
            raise EngineError(
                f"{name}: Authentication failed: password is incorrect, or there is no user with such name.",
                516,
                "AUTHENTICATION_FAILED",
            )
        return user

    # -- sessions ---------------------------------------------------------------------------

    def session(self, user: _User, session_id: str, timeout: float, check: bool) -> _Session:
        now = time.monotonic()
        expired: list[_Session] = []
        with self._sessions_lock:
            for key, session in list(self._sessions.items()):
                if session.expires < now and not session.lock.locked():
                    expired.append(self._sessions.pop(key))
            session = self._sessions.get((user.name, session_id))
            if session is None:
                if check:
                    raise EngineError(f"Session {session_id} not found", 372, "SESSION_NOT_FOUND")
                session = _Session(self.connect(), timeout=timeout)
                if user.readonly:
                    session.connection.query("SET readonly = 2", "TabSeparated")
                self._sessions[(user.name, session_id)] = session
            session.timeout = timeout
            session.expires = now + timeout
        for old in expired:
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                old.connection.close()
        return session


def secrets_placeholder() -> str:
    return "\x00" * 32


# -- the protocol --------------------------------------------------------------------------


def _content_type(fmt: str) -> str:
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        return "text/csv; charset=UTF-8; header=absent"
    if fmt.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if fmt.startswith(("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "Protobuf", "MsgPack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def _decompress(body: bytes, encoding: str) -> bytes:
    """Undo the request's Content-Encoding (what clickhouse-connect and curl send)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        # The client library's own codecs: whatever it compresses with, it can undo.
        from clickhouse_connect.driver import compression

        available: list[str] = compression.available_compression  # pyright: ignore[reportUnknownMemberType]
        if encoding == "lz4" and "lz4" in available:
            return bytes(compression._require_lz4().decompress(body))  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType, reportUnknownArgumentType]
        if encoding == "zstd" and "zstd" in available:
            return bytes(compression._zstd_decompress(body))  # pyright: ignore[reportPrivateUsage]
    except Exception as exc:
        raise EngineError(
            f"Cannot decompress the request body ({encoding}): {exc}",
            27,
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        ) from exc
    raise EngineError(f"Unknown HTTP compression method {encoding}", 38, "UNKNOWN_COMPRESSION_METHOD")


_MAX_HEADER_LINE: Final = 65536
_MAX_HEADERS: Final = 100


class _Headers:
    """A request's headers, looked up case-insensitively (a repeated header: its last value).

    What the handler reads of ``email.message.Message``, without the e-mail parser that
    ``BaseHTTPRequestHandler`` runs on every request (~0.1 ms, a third of the interface's own
    cost on a small query).
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._values[name.lower()] = value

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._values

    def get_content_type(self) -> str:
        media = self._values.get("content-type", "").partition(";")[0].strip().lower()
        return media if media.count("/") == 1 else "text/plain"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmledger-collector"
    sys_version = ""
    timeout = 300.0
    # Headers and body go out as separate writes; with Nagle's algorithm the body waits for
    # the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    server: ClickHouseHttpServer  # pyright: ignore[reportIncompatibleVariableOverride]
    headers: _Headers  # pyright: ignore[reportIncompatibleVariableOverride]

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s " + format, self.address_string(), *args)

    def handle_one_request(self) -> None:
        # As BaseHTTPRequestHandler's, with ClickHouse's URI limit (http_max_uri_size, 1 MiB)
        # instead of 64 KiB: clients put query parameters in the URL.
        try:
            self.raw_requestline = self.rfile.readline(_MAX_URI_BYTES + 1)
            if len(self.raw_requestline) > _MAX_URI_BYTES:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            handler = getattr(self, "do_" + self.command, None)
            if handler is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            handler()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def parse_request(self) -> bool:
        """The request line and headers of an HTTP/1.x request, as the base class reads them.

        HTTP/1.1 keeps the connection unless ``Connection: close``; HTTP/1.0 closes it unless
        ``Connection: keep-alive``; ``Expect: 100-continue`` is answered before the body.
        """
        self.command = ""
        self.request_version = "HTTP/1.0"
        self.close_connection = True
        line = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        self.requestline = line
        words = line.split(" ")
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400 if len(words) != 3 else 505, f"Bad request line {line[:200]!r}")
            return False
        self.command, self.path, self.request_version = words
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # as the base class: not a network path
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(raw) > _MAX_HEADER_LINE:
                self.send_error(431, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                self.send_error(400, f"Malformed header line {raw[:200]!r}")
                return False
            headers.add(name, value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # pyright: ignore[reportIncompatibleVariableOverride]
        connection = (headers.get("Connection") or "").lower()
        if self.request_version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        if self.request_version == "HTTP/1.1" and (headers.get("Expect") or "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- plumbing -------------------------------------------------------------------------

    def _headers(self, status: int, content_type: str, extra: Mapping[str, str], length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-ClickHouse-Server-Display-Name", "llmledger-collector")
        self.send_header("X-ClickHouse-Timezone", self.server.timezone)
        for name, value in extra.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _reply(
        self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self._headers(status, content_type, extra or {}, len(body))
        self.wfile.write(body)

    def _error(self, error: EngineError, query_id: str) -> None:
        body = f"{error.text} (version {self.server.version})\n".encode()
        self._reply(
            error.status,
            body,
            "text/plain; charset=UTF-8",
            {"X-ClickHouse-Exception-Code": str(error.code), "X-ClickHouse-Query-Id": query_id},
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            try:
                body = read_chunked(self.rfile, _MAX_BODY_BYTES)
            except ChunkedTooLargeError:
                raise EngineError("Request body is too large", 202, "QUERY_IS_TOO_LARGE") from None
            except ChunkedBodyError as exc:
                raise EngineError(
                    f"Malformed chunked request body: {exc}", 27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"
                ) from None
        else:
            try:
                length = int(self.headers.get("Content-Length") or "0")
            except ValueError:
                length = -1
            if length < 0:
                raise EngineError("Bad Content-Length", 36, "BAD_ARGUMENTS")
            if length > _MAX_BODY_BYTES:
                raise EngineError("Request body is too large", 202, "QUERY_IS_TOO_LARGE")
            body = self.rfile.read(length) if length else b""
            if len(body) != length:
                raise EngineError("The request body ended early", 27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED")
        return _decompress(body, self.headers.get("Content-Encoding", ""))

    def _credentials(self, params: Mapping[str, str]) -> tuple[str, str]:
        user = self.headers.get("X-ClickHouse-User")
        key = self.headers.get("X-ClickHouse-Key")
        authorization = self.headers.get("Authorization", "")
        if user is None and authorization.lower().startswith("basic "):
            try:
                user, _, key = b64decode(authorization[6:].strip()).decode().partition(":")
            except ValueError:
                raise EngineError("Malformed basic authorization header", 36, "BAD_ARGUMENTS") from None
        if user is None:
            user = params.get("user")
            key = params.get("password", key)
        return user or "default", key or ""

    # -- one request -------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            if url.path in ("/ping", "/replicas_status"):
                self._reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
                return
            if url.path not in ("", "/"):
                raise EngineError(f"There is no handle {url.path}", 0, "")
            body = self._read_body() if method == "POST" else b""
            if self.headers.get_content_type() == "multipart/form-data":
                # Large query parameters come as form fields (clickhouse-connect does this itself).
                params.update(_form_fields(self.headers.get("Content-Type", ""), body))
                body = b""
            query = params.get("query", "").encode()
            if not query and not body:
                self._reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
                return
            user = self.server.authenticate(*self._credentials(params))
            text = query + b"\n" + body if query and body else query or body
            self._execute(method, user, params, parse_statement(text), query_id)
        except EngineError as error:
            if error.code == 0 and not error.name:  # an unknown path: ClickHouse answers 404 plain text
                self._reply(404, f"{error.text}\n".encode(), "text/plain; charset=UTF-8")
                return
            self.close_connection = True
            self._error(error, query_id)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _execute(
        self, method: str, user: _User, params: Mapping[str, str], statement: Statement, query_id: str
    ) -> None:
        server = self.server
        settings = {
            k: v for k, v in params.items() if k not in _TRANSPORT_PARAMS and not k.startswith("param_")
        }
        for name in settings:
            if not is_plain_identifier(name):
                raise EngineError(f"Unknown setting '{name}'", 115, "UNKNOWN_SETTING")
        if params.get("decompress") in ("1", "true"):
            raise EngineError(
                "decompress=1 (ClickHouse block compression) is not supported here", 48, "NOT_IMPLEMENTED"
            )
        requested_readonly = settings.pop("readonly", None)
        readonly = 2 if user.readonly or method == "GET" else 0
        if requested_readonly is not None:
            try:
                wanted = int(requested_readonly)
            except ValueError:
                raise EngineError(
                    f"Cannot parse readonly={requested_readonly!r}", 72, "CANNOT_PARSE_NUMBER"
                ) from None
            if readonly and wanted == 0:
                raise EngineError(
                    f"{user.name}: Cannot modify 'readonly' setting in readonly mode", 164, "READONLY"
                )
            readonly = wanted if not readonly else min(max(wanted, 1), 2)
        bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        database = params.get("database")
        if database is not None and not is_plain_identifier(database):
            raise EngineError(f"Database {database} does not exist", 81, "UNKNOWN_DATABASE")
        session_id = params.get("session_id")
        if session_id:
            try:
                timeout = min(
                    float(params.get("session_timeout") or _SESSION_TIMEOUT_DEFAULT), _SESSION_TIMEOUT_MAX
                )
            except ValueError:
                raise EngineError("Invalid session timeout", 36, "BAD_ARGUMENTS") from None
            session = server.session(user, session_id, timeout, params.get("session_check") in ("1", "true"))
            if not session.lock.acquire(blocking=False):
                raise EngineError(
                    f"Session {session_id} is locked by a concurrent client", 373, "SESSION_IS_LOCKED"
                )
            try:
                self._run_in_session(
                    session.connection, settings, readonly, database, bind, statement, query_id
                )
            finally:
                session.lock.release()
            return
        default_format = params.get("default_format")
        fmt = statement.output_format or default_format or "TabSeparated"
        one_shot = self._streams(statement, fmt) and not _RESULT_LIMIT_SETTINGS & settings.keys()
        if one_shot:
            try:
                self._pooled(
                    user, database, settings, readonly, bind, statement, query_id, default_format, True
                )
                return
            except _TooLargeForOneShot:
                pass  # nothing was sent: the same query again, streamed
        self._pooled(user, database, settings, readonly, bind, statement, query_id, default_format, False)

    def _pooled(
        self,
        user: _User,
        database: str | None,
        settings: Mapping[str, str],
        readonly: int,
        bind: Mapping[str, str],
        statement: Statement,
        query_id: str,
        default_format: str | None,
        one_shot: bool,
    ) -> None:
        """Run ``statement`` on a pooled connection set up for this user, database and settings."""
        server = self.server
        # A connection set up with exactly this user, database and settings is reused: the
        # setup (a USE and a SET each) costs as much as a small query.
        key = (user.name, database or "", tuple(settings.items()), readonly, one_shot)
        connection = server.checkout(key)
        reusable = statement.kind in _STATELESS
        try:
            if connection is None:
                connection = server.connect()
                try:
                    if database:
                        connection.query(f"USE {quote_identifier(database)}", "TabSeparated")
                    for name, value in settings.items():
                        connection.query(f"SET {name} = {_quote(value)}", "TabSeparated")
                    if one_shot:
                        connection.query(f"SET max_result_bytes = {_ONE_SHOT_MAX_BYTES}", "TabSeparated")
                        connection.query("SET result_overflow_mode = 'throw'", "TabSeparated")
                    if readonly:
                        connection.query(f"SET readonly = {readonly}", "TabSeparated")
                except Exception as exc:
                    reusable = False
                    raise _engine_error(exc) from exc
            self._run(connection, bind, statement, query_id, default_format, one_shot=one_shot)
        except (EngineError, _TooLargeForOneShot):
            # chDB keeps a failed query's partial output on its connection and hands it out with
            # the next query's result: a connection that saw an error is not lent again.
            reusable = False
            raise
        except (ConnectionError, TimeoutError):
            reusable = False  # the client left mid-answer: the connection may hold an open stream
            raise
        finally:
            if connection is not None:
                server.checkin(key, connection, reusable)

    def _run_in_session(
        self,
        connection: Any,
        settings: Mapping[str, str],
        readonly: int,
        database: str | None,
        bind: Mapping[str, str],
        statement: Statement,
        query_id: str,
    ) -> None:
        # Settings given with one request apply to that request only: note and restore them.
        del readonly  # a session keeps the profile's readonly level from its first request
        previous: dict[str, str] = {}
        try:
            if settings:
                names = ", ".join(_quote(name) for name in settings)
                rows = (
                    connection.query(
                        f"SELECT name, value FROM system.settings WHERE name IN ({names})", "TabSeparated"
                    )
                    .bytes()
                    .decode()
                )
                previous = dict(line.split("\t", 1) for line in rows.splitlines() if "\t" in line)
            if database:
                connection.query(f"USE {quote_identifier(database)}", "TabSeparated")
            for name, value in settings.items():
                connection.query(f"SET {name} = {_quote(value)}", "TabSeparated")
        except Exception as exc:
            raise _engine_error(exc) from exc
        try:
            self._run(connection, bind, statement, query_id, None)
        except EngineError:
            # A session keeps its connection: a throwaway query takes up what the failed one left
            # on it (see _execute), so the session's next answer is its own.
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                connection.query("SELECT 1", "TabSeparated")
            raise
        finally:
            for name, value in previous.items():
                with contained(
                    "the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES
                ):
                    connection.query(f"SET {name} = {_quote(value)}", "TabSeparated")

    def _run(
        self,
        connection: Any,
        bind: Mapping[str, str],
        statement: Statement,
        query_id: str,
        default_format: str | None,
        *,
        one_shot: bool = False,
    ) -> None:
        started = time.monotonic_ns()
        headers = {"X-ClickHouse-Query-Id": query_id}
        if statement.insert_format is not None:
            written = self._insert(connection, bind, statement)
            headers["X-ClickHouse-Summary"] = _summary(written, written, started)
            self._reply(200, b"", "text/plain; charset=UTF-8", headers)
            return
        fmt = statement.output_format or default_format or "TabSeparated"
        sql = statement.sql.decode("utf-8", "surrogateescape")
        if self._streams(statement, fmt) and not one_shot:
            self._stream(connection, sql, fmt, bind, headers, started)
            return
        try:
            result = connection.query(sql, fmt, params=dict(bind))
        except Exception as exc:
            error = _engine_error(exc)
            if one_shot and error.code == _TOO_MANY_ROWS_OR_BYTES:
                raise _TooLargeForOneShot from exc
            raise error from exc
        payload = result.bytes() or b""
        headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = _summary(_rows_read(result), 0, started)
        self._reply(200, payload, _content_type(fmt), headers)

    def _streams(self, statement: Statement, fmt: str) -> bool:
        """Whether the result may be sent as it comes: chunks, which HTTP/1.0 does not have."""
        return (
            statement.kind in ("SELECT", "WITH") and fmt in _STREAMABLE and self.request_version == "HTTP/1.1"
        )

    def _insert(self, connection: Any, bind: Mapping[str, str], statement: Statement) -> int:
        # The engine reads the data from a memory-backed file: INSERT … FROM INFILE takes any format.
        fd = os.memfd_create("llmledger-insert", os.MFD_CLOEXEC)
        try:
            view = memoryview(statement.data)
            while view:
                view = view[os.write(fd, view) :]
            head = statement.sql
            at = statement.settings_at if statement.settings_at is not None else len(head)
            infile = f" FROM INFILE '/proc/self/fd/{fd}' ".encode()
            sql = (
                head[:at].rstrip()
                + infile
                + head[at:].rstrip()
                + f" FORMAT {statement.insert_format}".encode()
            )
            try:
                result = connection.query(
                    sql.decode("utf-8", "surrogateescape"), "TabSeparated", params=dict(bind)
                )
            except Exception as exc:
                raise _engine_error(exc) from exc
            return _rows_read(result)
        finally:
            os.close(fd)

    def _stream(
        self,
        connection: Any,
        sql: str,
        fmt: str,
        bind: Mapping[str, str],
        headers: dict[str, str],
        started: int,
    ) -> None:
        try:
            stream = connection.send_query(sql, fmt, params=dict(bind))
            first = stream.fetch()
        except Exception as exc:
            raise _engine_error(exc) from exc
        if first is None:
            # No rows: nothing to send, as a server sends nothing for an empty result in these formats.
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                stream.close()
            headers["X-ClickHouse-Format"] = fmt
            headers["X-ClickHouse-Summary"] = _summary(0, 0, started)
            self._reply(200, b"", _content_type(fmt), headers)
            return
        headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = _summary(0, 0, started)
        self._headers(200, _content_type(fmt), headers, None)
        try:
            chunk: Any = first
            while chunk is not None:
                data: bytes = chunk.bytes()
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                chunk = stream.fetch()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                stream.close()
            return
        except Exception as exc:
            # Past the headers, ClickHouse writes the exception into the body and ends the stream.
            text = f"{_engine_error(exc).text} (version {self.server.version})\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(text), text))
            self.close_connection = True
        finally:
            with contained("the ClickHouse HTTP interface letting a chDB connection go", _ENGINE_FAILURES):
                stream.close()
        self.wfile.write(b"0\r\n\r\n")


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body (``query``, ``param_*``); files are not taken."""
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    if not message.is_multipart():
        raise EngineError("Malformed multipart/form-data body", 36, "BAD_ARGUMENTS")
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            raise EngineError("External tables (form files) are not supported here", 48, "NOT_IMPLEMENTED")
        payload = part.get_payload(decode=True)
        fields[name] = payload.decode("utf-8", "surrogateescape") if isinstance(payload, bytes) else ""
    return fields


def _rows_read(result: Any) -> int:
    try:
        return int(result.rows_read())
    except Exception as exc:
        contain("the ClickHouse HTTP interface's rows_read", exc, _ENGINE_FAILURES)
        return 0


def _summary(read_rows: int, written_rows: int, started_ns: int) -> str:
    # json.dumps of the dict costs ~20 us a request; the keys are fixed and the values integers.
    return (
        f'{{"read_rows":"{read_rows}","read_bytes":"0","written_rows":"{written_rows}",'
        f'"written_bytes":"0","total_rows_to_read":"{read_rows}","result_rows":"{written_rows}",'
        f'"result_bytes":"0","elapsed_ns":"{time.monotonic_ns() - started_ns}"}}'
    )
