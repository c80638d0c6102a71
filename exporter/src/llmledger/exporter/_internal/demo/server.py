"""A deterministic OpenAI-compatible HTTP server: the demo's, and a local stand-in for trying llmledger offline.

Serves ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/completions`` and
``/v1/embeddings``, plain and streamed, and ``GET /v1/responses/{id}`` for stored (and
background) responses; the bodies and events come from :mod:`.openai_api` and have the API's
shapes, so the ``openai`` SDK and its helpers work against it unchanged. Failures are
injected deterministically: a request whose model is listed in ``failing_models`` and whose
body hashes into the failure share gets a 503, the way an overloaded primary model does.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO, cast

from llmledger.exporter._internal.demo import openai_api as api

__all__ = ["DemoOpenAIServer", "serve_demo_openai", "serve_until_stopped"]

_STORED_RESPONSES = 1000
_JSON_ROUTES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "/chat/completions": api.chat_completion,
    "/completions": api.completion,
    "/embeddings": api.embeddings,
}
_STREAM_ROUTES: dict[str, Callable[[Mapping[str, Any]], list[dict[str, Any]]]] = {
    "/chat/completions": api.chat_chunks,
    "/completions": api.completion_chunks,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmledger-demo-openai"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def _headers(self, status: int, content_type: str, request_id: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-request-id", f"req_demo{request_id % 10**12:012d}")
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", str(int(self._server.latency_s * 1000)))

    def _send_json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self._headers(status, "application/json", api.digest(body))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, events: list[dict[str, Any]], *, named: bool) -> None:
        """Server-sent events, chunked: Responses names each event and ends without a marker;
        chat and completions send bare ``data:`` lines and end with ``data: [DONE]``."""
        self._headers(200, "text/event-stream; charset=utf-8", api.digest(events[0]))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        frames = [
            (f"event: {event['type']}\n" if named else "") + f"data: {json.dumps(event)}\n\n"
            for event in events
        ]
        if not named:
            frames.append("data: [DONE]\n\n")
        for frame in frames:
            data = frame.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise api.ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            ) from None
        if not isinstance(body, dict):
            raise api.ApiError(400, "The request body must be a JSON object.")
        return cast(dict[str, Any], body)

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        path = self._route()
        prefix = "/responses/"
        if prefix not in path:
            self._send_json(404, api.ApiError(404, f"Invalid URL (GET {path})").body)
            return
        response_id = path.rsplit(prefix, 1)[1]
        stored = self._server.stored_response(response_id)
        if stored is None:
            self._send_json(404, api.ApiError(404, f"Response with id '{response_id}' not found.").body)
            return
        self._send_json(200, stored)

    def do_POST(self) -> None:
        path = self._route()
        try:
            request = self._read_body()
            self._answer(path, request)
        except api.ApiError as exc:
            self._send_json(exc.status, exc.body)

    def _answer(self, path: str, request: dict[str, Any]) -> None:
        route = next(
            (
                r
                for r in ("/chat/completions", "/completions", "/embeddings", "/responses")
                if path.endswith(r)
            ),
            None,
        )
        if route is None:
            raise api.ApiError(404, f"Invalid URL (POST {path})")
        model = api.require_model(request)
        if self._server.should_fail(model, request):
            raise api.ApiError(
                503, f"The model {model} is overloaded. Please try again.", kind="server_error"
            )
        if self._server.latency_s:
            time.sleep(self._server.latency_s)
        streamed = request.get("stream") is True
        if route == "/responses":
            self._responses(request, streamed=streamed)
        elif streamed and route in _STREAM_ROUTES:
            self._send_events(_STREAM_ROUTES[route](request), named=False)
        else:
            self._send_json(200, _JSON_ROUTES[route](request))

    def _responses(self, request: dict[str, Any], *, streamed: bool) -> None:
        if streamed:
            events = api.response_events(request)
            self._server.store_response(events[-1]["response"], request)
            self._send_events(events, named=True)
            return
        body = api.response(request)
        self._server.store_response(body, request)
        if request.get("background") is True:
            # A background response starts queued; retrieving it later finds it finished.
            body = api.response(request, status="queued")
        self._send_json(200, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], failing_models: Mapping[str, float], latency_s: float
    ) -> None:
        super().__init__(address, _Handler)
        self.failing_models = dict(failing_models)
        self.latency_s = latency_s
        self._responses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its keep-alive connection (or a stream early) is not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def should_fail(self, model: str, request: Mapping[str, Any]) -> bool:
        share = self.failing_models.get(model, 0.0)
        return share > 0 and (api.digest(request) % 1000) < share * 1000

    def store_response(self, body: dict[str, Any], request: Mapping[str, Any]) -> None:
        """Keep the finished response for ``GET /v1/responses/{id}`` unless ``store`` is false,
        as the API does; the oldest are forgotten beyond a bound."""
        if request.get("store") is False:
            return
        with self._lock:
            self._responses[str(body["id"])] = body
            while len(self._responses) > _STORED_RESPONSES:
                self._responses.popitem(last=False)

    def stored_response(self, response_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._responses.get(response_id)


class DemoOpenAIServer:
    """The server in a background thread; ``base_url`` is what ``OPENAI_BASE_URL`` should be."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        failing_models: Mapping[str, float] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self._server = _Server((host, port), failing_models or {}, latency_s)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="llmledger-demo-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> DemoOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve loop that must be running
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextmanager
def serve_demo_openai(**kwargs: Any) -> Generator[DemoOpenAIServer]:
    server = DemoOpenAIServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def serve_until_stopped(server: DemoOpenAIServer, out: TextIO) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; say how to point the SDK at it."""
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        out.write(
            f"OpenAI-compatible stand-in on {server.base_url} (Ctrl-C stops it). Point the openai SDK at it:\n"
            f"  export OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY=sk-local-stand-in\n"
        )
        out.flush()
        stopped.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0
