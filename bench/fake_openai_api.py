"""An in-process stand-in for the OpenAI HTTP API, for benchmarks.

``api_transport()`` returns an ``httpx2.MockTransport`` that answers chat completions
(plain and streamed) and embeddings with bodies shaped like the real API's, so the SDK
parses exactly what it parses in production. Bodies are built once up front: the
transport's own cost per call is a dict lookup and one ``json.loads`` of the request, the
same in every benchmark mode, so differences between modes are the instrumentation's.

The request decides the answer the way the API does: a chat stream ends with a usage-only
chunk only when ``stream_options.include_usage`` was asked for, and embeddings come back
base64-encoded or as floats according to ``encoding_format``.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from typing import Any

import httpx2

CHAT_MODEL = "gpt-4o-mini"
CHAT_MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"
EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_DIMENSIONS = 1536
STREAM_CHUNKS = 200
"""Chunks carrying a choice in every streamed answer (role, content pieces, finish)."""

_CREATED = 1764000000
_USAGE: dict[str, Any] = {
    "prompt_tokens": 1187,
    "completion_tokens": 213,
    "total_tokens": 1400,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
_HEADERS = {
    "openai-organization": "org-bench",
    "openai-processing-ms": "412",
    "openai-version": "2020-10-01",
    "x-ratelimit-limit-requests": "30000",
    "x-ratelimit-remaining-requests": "29999",
    "x-ratelimit-limit-tokens": "150000000",
    "x-ratelimit-remaining-tokens": "149998600",
}


def _json_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _chat_completion() -> bytes:
    content = "The invoice total is 1,284.50 EUR, due on 2026-12-01. " * 12
    return _json_body(
        {
            "id": "chatcmpl-BENCH0000000000000000000001",
            "object": "chat.completion",
            "created": _CREATED,
            "model": CHAT_MODEL_SNAPSHOT,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content.strip(),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_bench0001",
        }
    )


def _chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None, include_usage: bool) -> bytes:
    event: dict[str, Any] = {
        "id": "chatcmpl-BENCH0000000000000000000002",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": CHAT_MODEL_SNAPSHOT,
        "service_tier": "default",
        "system_fingerprint": "fp_bench0001",
        "choices": choices,
    }
    # With include_usage the API sends "usage": null on every chunk but the last;
    # without it the key is absent.
    if include_usage:
        event["usage"] = usage
    return b"data: " + _json_body(event) + b"\n\n"


def _chat_stream(include_usage: bool) -> bytes:
    """SSE body: a role chunk, content chunks, a finish chunk, optionally usage, [DONE]."""

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    events = [_chunk(choice({"role": "assistant", "content": "", "refusal": None}), None, include_usage)]
    events += [
        _chunk(choice({"content": f" token{i}"}), None, include_usage) for i in range(STREAM_CHUNKS - 2)
    ]
    events.append(_chunk(choice({}, "stop"), None, include_usage))
    if include_usage:
        events.append(_chunk([], _USAGE, include_usage))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def _embedding(encoding_format: str) -> bytes:
    rng = random.Random(7)
    vector = [rng.uniform(-0.1, 0.1) for _ in range(EMBEDDING_DIMENSIONS)]
    embedding: str | list[float]
    if encoding_format == "base64":
        embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    else:
        embedding = vector
    return _json_body(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
            "model": EMBEDDING_MODEL,
            "usage": {"prompt_tokens": 57, "total_tokens": 57},
        }
    )


class _FakeOpenAIAPI:
    """Pre-rendered answers keyed by what the request asks for."""

    def __init__(self) -> None:
        self._chat = _chat_completion()
        self._stream = {True: _chat_stream(include_usage=True), False: _chat_stream(include_usage=False)}
        self._embeddings = {fmt: _embedding(fmt) for fmt in ("base64", "float")}
        self._json_headers = {**_HEADERS, "content-type": "application/json"}
        self._sse_headers = {**_HEADERS, "content-type": "text/event-stream; charset=utf-8"}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body: dict[str, Any] = json.loads(request.content)
        path = request.url.path
        if path.endswith("/chat/completions"):
            if body.get("stream"):
                options = body.get("stream_options") or {}
                content = self._stream[bool(options.get("include_usage"))]
                return httpx2.Response(200, headers=self._sse_headers, content=content)
            return httpx2.Response(200, headers=self._json_headers, content=self._chat)
        if path.endswith("/embeddings"):
            content = self._embeddings[body.get("encoding_format") or "float"]
            return httpx2.Response(200, headers=self._json_headers, content=content)
        return httpx2.Response(
            404, json={"error": {"message": f"no route {path}", "type": "invalid_request"}}
        )


def api_transport() -> httpx2.MockTransport:
    """A transport serving the fake API; usable by both ``httpx2.Client`` and ``AsyncClient``."""
    return httpx2.MockTransport(_FakeOpenAIAPI())
