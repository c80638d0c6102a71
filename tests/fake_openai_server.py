"""A loopback HTTP server speaking OpenAI's API shapes, for tests that run a real app process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.instrumentation import api_payloads as P


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        model = request.get("model", "")
        if model.startswith("fail-"):
            self._send(
                503, json.dumps(P.error_body("overloaded", type="server_error")).encode(), "application/json"
            )
            return
        if self.path.endswith("/chat/completions"):
            if request.get("stream"):
                with_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                events = P.chat_chunks(
                    ["Hello", " from", " the", " fake"], model=model, include_usage=with_usage
                )
                self._send(200, P.sse(events), "text/event-stream")
            else:
                body = P.chat_completion(model=model, usage=P.usage_chat(42, 7, cached=10))
                self._send(200, json.dumps(body).encode(), "application/json")
        elif self.path.endswith("/embeddings"):
            self._send(
                200, json.dumps(P.embedding(model=model, prompt_tokens=5)).encode(), "application/json"
            )
        elif self.path.endswith("/responses"):
            self._send(200, json.dumps(P.response(model=model)).encode(), "application/json")
        else:
            self._send(
                404, json.dumps(P.error_body(f"unknown path {self.path}")).encode(), "application/json"
            )


@contextmanager
def fake_openai_server() -> Iterator[str]:
    """Serve on an ephemeral loopback port; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
