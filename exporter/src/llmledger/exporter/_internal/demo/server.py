"""A deterministic OpenAI-compatible HTTP server for the demo (and for trying llmledger offline).

Answers ``/v1/chat/completions`` (plain and streamed), ``/v1/responses``, ``/v1/completions``
and ``/v1/embeddings`` with bodies shaped like OpenAI's, token usage included. Token counts
are a pure function of the request, so every run bills the same. Failures are injected
deterministically: a request whose model is listed in ``failing_models`` and whose body
hashes into the failure share gets a 503, the way an overloaded primary model does.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

__all__ = ["DemoOpenAIServer", "serve_demo_openai"]

_CREATED = 1_764_000_000


def _words(value: Any) -> int:
    """A stable stand-in for a tokenizer: about 4/3 tokens per word, at least 1."""
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return max(1, (len(text.split()) * 4 + 2) // 3)


def _digest(body: Mapping[str, Any]) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()[:4], "big")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_demo_{_digest(body) % 10**8:08d}")
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, events: list[Mapping[str, Any]], *, named: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            frame = b""
            if named:
                frame += f"event: {event['type']}\n".encode()
            frame += b"data: " + json.dumps(event).encode() + b"\n\n"
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        if not named:
            done = b"data: [DONE]\n\n"
            self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send_json(400, _error("request body is not JSON", "invalid_request_error"))
            return
        if not isinstance(body, dict):
            self._send_json(400, _error("request body must be a JSON object", "invalid_request_error"))
            return
        request = cast(dict[str, Any], body)
        model = str(request.get("model") or "")
        server = cast(_Server, self.server)
        if server.should_fail(model, request):
            self._send_json(
                503, _error(f"The model {model} is overloaded. Please try again.", "server_error")
            )
            return
        if server.latency_s:
            time.sleep(server.latency_s)
        path = self.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):
            self._chat(model, request)
        elif path.endswith("/responses"):
            self._responses(model, request)
        elif path.endswith("/embeddings"):
            self._send_json(200, _embedding(model, request))
        elif path.endswith("/completions"):
            self._send_json(200, _completion(model, request))
        else:
            self._send_json(404, _error(f"Unknown path {path}", "invalid_request_error"))

    def _chat(self, model: str, request: dict[str, Any]) -> None:
        prompt = _words(request.get("messages", []))
        reply = _reply_text(request)
        completion = _words(reply)
        cached = (prompt // 2) // 128 * 128  # prompt caching works in 128-token blocks
        reasoning = completion * 3 if model.startswith(("o1", "o3", "o4", "gpt-5")) else 0
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion + reasoning,
            "total_tokens": prompt + completion + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
        }
        chat_id = f"chatcmpl-demo{_digest(request) % 10**10:010d}"
        if request.get("stream"):
            base = {"id": chat_id, "object": "chat.completion.chunk", "created": _CREATED, "model": model,
                    "service_tier": "default", "system_fingerprint": "fp_demo"}  # fmt: skip
            pieces = [w + " " for w in reply.split(" ")]
            events: list[Mapping[str, Any]] = [
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                }
            ]
            events += [
                {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
                for p in pieces
            ]
            events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            options: Any = request.get("stream_options") or {}
            if isinstance(options, dict) and cast(dict[str, Any], options).get("include_usage"):
                events = [{**e, "usage": None} for e in events]
                events.append({**base, "choices": [], "usage": usage})
            self._send_events(events, named=False)
            return
        content: str = reply
        if (
            isinstance(request.get("response_format"), dict)
            and request["response_format"].get("type") == "json_schema"
        ):
            content = json.dumps(
                {"name": "Ada Lovelace", "email": "ada@example.com", "company": "Analytical Engines"}
            )
        self._send_json(200, {
            "id": chat_id, "object": "chat.completion", "created": _CREATED, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_demo",
        })  # fmt: skip

    def _responses(self, model: str, request: dict[str, Any]) -> None:
        prompt = _words(request.get("input", "")) + _words(request.get("instructions") or "")
        text = _reply_text(request)
        response: dict[str, Any] = {
            "id": f"resp_demo{_digest(request) % 10**10:010d}", "object": "response", "created_at": _CREATED,
            "status": "completed", "error": None, "incomplete_details": None, "instructions": None,
            "max_output_tokens": None, "model": model, "parallel_tool_calls": True,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "service_tier": "default", "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled", "user": None,
            "metadata": {},
            "output": [{"type": "message", "id": "msg_demo", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}],
            "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": _words(text), "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + _words(text)},
        }  # fmt: skip
        if request.get("stream"):
            events: list[Mapping[str, Any]] = [
                {"type": "response.created", "sequence_number": 0, "response": {**response, "status": "in_progress",
                                                                                 "output": [], "usage": None}},
                {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_demo",
                 "output_index": 0, "content_index": 0, "delta": text, "logprobs": []},
                {"type": "response.completed", "sequence_number": 2, "response": response},
            ]  # fmt: skip
            self._send_events(events, named=True)
            return
        self._send_json(200, response)


def _reply_text(request: Mapping[str, Any]) -> str:
    replies = (
        "Score 82: strong fit, recent funding and an active buying committee.",
        "Here is a short summary of the conversation and the customer's next steps.",
        "Thanks for reaching out! I have reset the integration token; please retry the sync.",
        "The account looks healthy; renewal risk is low given weekly active usage.",
    )
    return replies[_digest(request) % len(replies)]


def _embedding(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    raw: Any = request.get("input", "")
    inputs: list[Any] = cast(list[Any], raw) if isinstance(raw, list) else [raw]
    tokens = sum(_words(i) for i in inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [((_digest({"i": i, "t": str(t)}) % 2000) - 1000) / 1000.0
                                                             for t in range(8)]}
            for i in range(len(inputs))
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }  # fmt: skip


def _completion(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    prompt = _words(request.get("prompt", ""))
    text = _reply_text(request)
    return {
        "id": f"cmpl-demo{_digest(request) % 10**10:010d}", "object": "text_completion", "created": _CREATED,
        "model": model, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": _words(text), "total_tokens": prompt + _words(text)},
    }  # fmt: skip


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], failing_models: Mapping[str, float], latency_s: float
    ) -> None:
        super().__init__(address, _Handler)
        self.failing_models = dict(failing_models)
        self.latency_s = latency_s

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its keep-alive connection is not an error worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def should_fail(self, model: str, request: Mapping[str, Any]) -> bool:
        share = self.failing_models.get(model, 0.0)
        return share > 0 and (_digest(request) % 1000) < share * 1000


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
