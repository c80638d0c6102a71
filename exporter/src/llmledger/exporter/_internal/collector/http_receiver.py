"""OTLP/HTTP on one port: ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs``, plus ``/healthz``, ``/readyz``, ``/metrics``.

HTTP/1.1 with keep-alive on a thread per connection (the standard library's threading
server; at OTLP batch sizes a few hundred requests a second carry 50k+ spans, far below
what it parses). Statuses follow the OTLP specification: 200 with a partial success when
some spans were refused, 400 for malformed bodies, 413 over the size limit, 415 for
content types other than protobuf and JSON, 401 without the bearer token, and the
retryable 429 (spool full) and 503 (disk error, overload, shutting down) with
``Retry-After``. Bodies come with ``Content-Length`` or ``Transfer-Encoding: chunked``
(what Node's exporters send), under the same size limit. Profiles answer 404 with a
``Status`` that says so; an OTLP exporter treats that as final, not retryable.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Final

from llmledger.exporter._internal.errors import internal_error

from .chunked import ChunkedBodyError, ChunkedTooLargeError, read_chunked
from .ingest import RETRY_AFTER_SECONDS, Ingest, Outcome, RefusedError
from .otlp import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    InvalidRequestError,
    TooLargeError,
    UnsupportedMediaError,
    decode_http_body,
    encode_response,
    encode_status,
)
from .otlp_signals import Signal, decode_signal_http_body, encode_signal_response

__all__ = ["OtlpHttpServer"]

_logger = logging.getLogger("llmledger.collector.http")

# google.rpc.Code values used in Status bodies.
_INVALID_ARGUMENT: Final = 3
_NOT_FOUND: Final = 5
_RESOURCE_EXHAUSTED: Final = 8
_UNIMPLEMENTED: Final = 12
_INTERNAL: Final = 13
_UNAVAILABLE: Final = 14
_UNAUTHENTICATED: Final = 16

_OUTCOME_STATUS: Final = {
    Outcome.INVALID: (400, _INVALID_ARGUMENT),
    Outcome.TOO_LARGE: (413, _INVALID_ARGUMENT),
    Outcome.UNSUPPORTED_MEDIA: (415, _INVALID_ARGUMENT),
    Outcome.UNAUTHENTICATED: (401, _UNAUTHENTICATED),
    Outcome.SPOOL_FULL: (429, _RESOURCE_EXHAUSTED),
    Outcome.UNAVAILABLE: (503, _UNAVAILABLE),
}
_SIGNALS: Final = {signal.http_path: signal for signal in Signal}
_OTHER_SIGNALS: Final = ("/v1/profiles", "/v1development/profiles")
_IDLE_TIMEOUT: Final = 60.0
_DISCARD_FACTOR: Final = 4

StatusCheck = Callable[[], tuple[bool, str]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmledger-collector"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    server: OtlpHttpServer  # pyright: ignore[reportIncompatibleVariableOverride]

    # -- plumbing ------------------------------------------------------------------------

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_status(
        self,
        http_code: int,
        rpc_code: int,
        message: str,
        json_body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        content_type = CONTENT_TYPE_JSON if json_body else CONTENT_TYPE_PROTOBUF
        self._send(http_code, encode_status(json_body, rpc_code, message), content_type, headers)

    def _refused(self, error: RefusedError, json_body: bool) -> None:
        http_code, rpc_code = _OUTCOME_STATUS[error.outcome]
        headers: dict[str, str] = {}
        if error.retryable:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if error.outcome is Outcome.UNAUTHENTICATED:
            headers["WWW-Authenticate"] = 'Bearer realm="llmledger"'
        self._send_status(http_code, rpc_code, error.message, json_body, headers)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    # -- endpoints -----------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        server = self.server
        if path == "/healthz":
            healthy, detail = server.health_check()
            self._send(200 if healthy else 500, (detail + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready, detail = server.ready_check()
            self._send(200 if ready else 503, (detail + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/metrics":
            body = server.metrics_text().encode()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif path in _SIGNALS:
            self._send_status(405, _UNIMPLEMENTED, f"use POST for {path}", True, {"Allow": "POST"})
        else:
            self._send_status(404, _NOT_FOUND, f"no such endpoint {path}", True)

    def do_POST(self) -> None:
        try:
            self._post()
        except (OSError, ssl.SSLError):
            raise  # the connection broke: nothing to answer
        except Exception as exc:
            # Our bug, not the sender's: answered, and logged with its traceback (raised under our tests).
            self.close_connection = True
            try:
                self._send_status(500, _INTERNAL, "internal error in the collector (logged)", True)
            finally:
                internal_error(f"the collector's OTLP/HTTP receiver ({self.path})", exc)

    def _post(self) -> None:
        path = self._path()
        content_type = self.headers.get("Content-Type", "")
        # Protobuf answers only to a protobuf request; JSON (readable) to anything else.
        json_body = content_type.split(";", 1)[0].strip().lower() != CONTENT_TYPE_PROTOBUF
        ingest = self.server.ingest
        signal = _SIGNALS.get(path)
        if signal is None or not ingest.accepts(signal):
            self._discard_body()
            if path in _OTHER_SIGNALS:
                message = f"this llmledger collector does not accept {path}"
            else:
                message = f"no such endpoint {path}; OTLP goes to POST /v1/traces, /v1/metrics, /v1/logs"
            self._send_status(404, _NOT_FOUND, message, json_body)
            return
        try:
            if not ingest.authorized(self.headers.get("Authorization")):
                self.close_connection = True
                raise RefusedError(Outcome.UNAUTHENTICATED, "missing or wrong bearer token")
            body = self._read_body(ingest.max_request_bytes)
            with ingest.admit(timeout=5.0):
                encoding = self.headers.get("Content-Encoding", "")
                try:
                    if signal is Signal.TRACES:
                        decoded = decode_http_body(content_type, encoding, body, ingest.max_request_bytes)
                    else:
                        decoded = decode_signal_http_body(
                            signal, content_type, encoding, body, ingest.max_request_bytes
                        )
                except TooLargeError as exc:
                    raise RefusedError(Outcome.TOO_LARGE, str(exc)) from exc
                except UnsupportedMediaError as exc:
                    raise RefusedError(Outcome.UNSUPPORTED_MEDIA, str(exc)) from exc
                except InvalidRequestError as exc:
                    raise RefusedError(Outcome.INVALID, str(exc)) from exc
                del body
                ingest.store(decoded, signal)
        except RefusedError as error:
            ingest.refuse(error)
            if not error.retryable:
                _logger.info("refused a request from %s: %s", self.client_address[0], error.message)
            self._refused(error, json_body)
            return
        answer = (
            encode_response(json_body, decoded.rejected_spans, decoded.rejection_message)
            if signal is Signal.TRACES
            else encode_signal_response(signal, json_body)
        )
        self._send(200, answer, CONTENT_TYPE_JSON if json_body else CONTENT_TYPE_PROTOBUF)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body(limit)
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise RefusedError(
                Outcome.INVALID, "a valid Content-Length header (or Transfer-Encoding: chunked) is required"
            )
        if length > limit:
            # Read (and drop) a moderately oversize body so the sender sees the 413 rather
            # than a reset; past that, answer and close without reading.
            self.close_connection = True
            if length <= _DISCARD_FACTOR * limit:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            raise RefusedError(Outcome.TOO_LARGE, f"the body ({length} bytes) is over the {limit}-byte limit")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RefusedError(Outcome.INVALID, "the connection closed before the whole body arrived")
        return body

    def _read_chunked_body(self, limit: int) -> bytes:
        # The same limit as a Content-Length body (on the wire, before any gunzip),
        # counted while reading. A refused chunked body leaves the connection's framing
        # unknown, so the connection is closed after the answer.
        try:
            return read_chunked(self.rfile, limit)
        except ChunkedTooLargeError as exc:
            self.close_connection = True
            raise RefusedError(Outcome.TOO_LARGE, str(exc)) from exc
        except ChunkedBodyError as exc:
            self.close_connection = True
            raise RefusedError(Outcome.INVALID, str(exc)) from exc

    def _discard_body(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # not read: the connection cannot carry another request
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= self.server.ingest.max_request_bytes:
            self.rfile.read(length)
        elif length:
            self.close_connection = True


class OtlpHttpServer(ThreadingHTTPServer):
    """The OTLP/HTTP receiver (see the module doc); ``serve_forever`` in a thread of its own."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    max_connections: ClassVar[int] = 512

    def __init__(
        self,
        address: tuple[str, int],
        ingest: Ingest,
        metrics_text: Callable[[], str],
        ready_check: StatusCheck,
        health_check: StatusCheck,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ingest = ingest
        self.metrics_text = metrics_text
        self.ready_check = ready_check
        self.health_check = health_check
        self._connections = 0
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            if self._connections >= self.max_connections:
                self.shutdown_request(request)
                return
            self._connections += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        _logger.debug("connection from %s ended with an error", client_address, exc_info=True)
