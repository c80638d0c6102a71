"""Read-only SQL over loopback, so the CLI can query an embedded store the collector owns.

chDB locks its store directory, so while ``llmledger collector`` runs no other process can
open the embedded store. The collector therefore answers ``POST /query`` on
``127.0.0.1`` (a random port) with each statement run ``readonly=1`` on its own
connection. Where to connect and the token to present are in an endpoint file next to the
store (``<store>.collector.json``, mode 0600, removed on shutdown); reading it proves the
caller may read the store's directory, which is the access an embedded store has anyway.

:func:`query_via_collector` is the client the CLI calls when opening the store fails with
:class:`~llmledger.exporter._internal.store.StoreLockedError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import http.client
import ipaddress
import json
import logging
import math
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from clickhouse_connect.driver.query import QueryResult

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.store import StoreError

__all__ = [
    "CollectorQueryError",
    "CollectorQueryResult",
    "QueryServer",
    "endpoint_file",
    "query_via_collector",
]

_logger = logging.getLogger("llmledger.collector.query")
_MAX_QUERY_BYTES: Final = 1 << 20

RunQuery = Callable[[str, Mapping[str, object]], QueryResult]


class CollectorQueryError(StoreError):
    """The collector could not be reached, or it refused or failed the query."""


@dataclass(frozen=True, slots=True)
class CollectorQueryResult:
    """A query's column names, ClickHouse type names and rows (values in their Python types)."""

    column_names: tuple[str, ...]
    column_types: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]


def endpoint_file(store: StoreConfig) -> Path | None:
    """Where a collector owning the embedded ``store`` says how to reach it (``None`` for servers)."""
    path = store.embedded_path
    return None if path is None else path.with_name(path.name + ".collector.json")


# -- values over JSON, types kept ---------------------------------------------------------


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, Mapping):
        return {"$map": [[_encode(k), _encode(v)] for k, v in value.items()]}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, Sequence):
        return [_encode(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(value, dict):
        return value
    items: list[tuple[str, Any]] = list(value.items())  # pyright: ignore[reportUnknownArgumentType]
    ((tag, inner),) = items
    if tag == "$decimal":
        return Decimal(inner)
    if tag == "$datetime":
        return dt.datetime.fromisoformat(inner)
    if tag == "$date":
        return dt.date.fromisoformat(inner)
    if tag == "$bytes":
        return base64.b64decode(inner)
    if tag == "$float":
        return float(inner)
    if tag == "$map":
        return {_decode(k): _decode(v) for k, v in inner}  # pyright: ignore[reportUnknownVariableType]
    raise ValueError(f"unknown value tag {tag!r}")


# -- the server ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmledger-collector-query"
    sys_version = ""
    timeout = 30.0
    server: QueryServer  # pyright: ignore[reportIncompatibleVariableOverride]

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s " + format, self.address_string(), *args)

    def _reply(self, code: int, document: object) -> None:
        body = json.dumps(document, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        presented = self.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
        if not hmac.compare_digest(presented, self.server.token.encode()):
            self.close_connection = True
            self._reply(401, {"error": "missing or wrong token"})
            return
        if self.path != "/query":
            self.close_connection = True
            self._reply(404, {"error": "POST /query"})
            return
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_QUERY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": f"the query must be at most {_MAX_QUERY_BYTES} bytes"})
            return
        try:
            request = json.loads(self.rfile.read(length))
            sql = request["sql"]
            parameters: Any = request.get("parameters") or {}
            if not isinstance(sql, str) or not isinstance(parameters, dict):
                raise TypeError("sql must be a string and parameters an object")
        except (ValueError, KeyError, TypeError) as exc:
            self._reply(400, {"error": f"bad query request: {exc}"})
            return
        try:
            result = self.server.run_query(sql, {str(k): _decode(v) for k, v in parameters.items()})  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        except Exception as exc:
            self._reply(422, {"error": str(exc)})
            return
        self._reply(
            200,
            {
                "columns": list(result.column_names),
                "types": [column_type.name for column_type in result.column_types],
                "rows": [[_encode(value) for value in row] for row in result.result_rows],
            },
        )


class QueryServer(ThreadingHTTPServer):
    """Serves ``POST /query`` on loopback and advertises itself in the store's endpoint file."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, store: StoreConfig, run_query: RunQuery) -> None:
        self.run_query = run_query
        self.token = secrets.token_urlsafe(32)
        self._file = endpoint_file(store)
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="llmledger-query", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()
        if self._file is not None:
            tmp = self._file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"pid": os.getpid(), "port": self.port, "token": self.token}, file)
            os.replace(tmp, self._file)

    def stop(self) -> None:
        if self._file is not None:
            try:
                current = json.loads(self._file.read_text(encoding="utf-8"))
                if current.get("pid") == os.getpid():
                    self._file.unlink()
            except (OSError, ValueError):
                pass
        self.shutdown()
        self.server_close()


# -- the client ---------------------------------------------------------------------------


def query_via_collector(
    store: StoreConfig,
    sql: str,
    parameters: Mapping[str, object] | None = None,
    *,
    timeout: float = 60.0,
) -> CollectorQueryResult:
    """Run a read-only query through the collector that owns the embedded ``store``.

    Raises :class:`CollectorQueryError` when no collector advertises the store, it cannot
    be reached, or the query fails (with ClickHouse's message).
    """
    path = endpoint_file(store)
    if path is None:
        raise CollectorQueryError("only an embedded store is served by a collector; connect to the server")
    try:
        endpoint = json.loads(path.read_text(encoding="utf-8"))
        port = int(endpoint["port"])
        token = str(endpoint["token"])
    except FileNotFoundError:
        raise CollectorQueryError(
            f"no running collector serves the store at {store.embedded_path} (no {path.name})"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CollectorQueryError(f"cannot read the collector endpoint file {path}: {exc}") from exc
    body = json.dumps(
        {"sql": sql, "parameters": {k: _encode(v) for k, v in (parameters or {}).items()}}
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/query",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        document = json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise CollectorQueryError(
            f"the collector for {store.embedded_path} (port {port}) did not answer: {exc}"
        ) from exc
    finally:
        connection.close()
    if response.status != 200:
        raise CollectorQueryError(
            f"the collector refused the query: {document.get('error', response.reason)}"
        )
    return CollectorQueryResult(
        tuple(document["columns"]),
        tuple(document["types"]),
        [tuple(_decode(value) for value in row) for row in document["rows"]],
    )
