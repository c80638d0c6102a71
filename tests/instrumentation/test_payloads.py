"""The fixtures are the API's shapes: every builder validates strictly against the SDK's own types."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from . import api_payloads as P

CASES: list[tuple[str, type[Any] | Any, Any]] = [
    ("chat", ChatCompletion, P.chat_completion()),
    (
        "chat-tools",
        ChatCompletion,
        P.chat_completion(content=None, finish_reason="tool_calls", tool_calls=[P.tool_call()]),
    ),
    ("chat-refusal", ChatCompletion, P.chat_completion(content=None, refusal="I can't help with that.")),
    (
        "chat-reasoning",
        ChatCompletion,
        P.chat_completion(model="o3-mini-2025-01-31", usage=P.usage_chat(100, 500, reasoning=384)),
    ),
    ("completion", Completion, P.completion()),
    ("embedding", CreateEmbeddingResponse, P.embedding(n=2)),
    ("response", Response, P.response()),
    ("response-queued", Response, P.response(status="queued", background=True)),
]


@pytest.mark.parametrize(("name", "model", "body"), CASES, ids=[c[0] for c in CASES])
def test_bodies_validate_against_sdk_types(name: str, model: type[Any], body: dict[str, Any]) -> None:
    parsed = model.model_validate(body, strict=False)
    # Round trip: nothing in our fixture is a field the SDK does not know.
    assert parsed.model_extra in (None, {}), f"{name}: unknown fields {parsed.model_extra}"


TOOL_STREAMS = {
    "single": P.chat_tool_call_chunks([("get_weather", ['{"', "city", '":"', "Paris", '"}'])]),
    "parallel": P.chat_tool_call_chunks(
        [("get_weather", ['{"city":', '"Paris"}']), ("get_time", ['{"tz":"', 'Europe/Paris"}'])]
    ),
    "content-before": P.chat_tool_call_chunks(
        [("get_weather", ['{"city":"Paris"}'])], content_before=["Let me ", "check."]
    ),
}


@pytest.mark.parametrize("chunks", TOOL_STREAMS.values(), ids=TOOL_STREAMS.keys())
def test_tool_call_stream_chunks_validate(chunks: list[dict[str, Any]]) -> None:
    for chunk in chunks:
        parsed = ChatCompletionChunk.model_validate(chunk, strict=False)
        assert parsed.model_extra in (None, {})
        for choice in parsed.choices:
            assert choice.model_extra in (None, {})
            assert choice.delta.model_extra in (None, {})
            for call in choice.delta.tool_calls or ():
                assert call.model_extra in (None, {})


@pytest.mark.skipif(
    tuple(int(part) for part in importlib.metadata.version("openai").split(".")[:2]) < (3, 1),
    reason="the oldest supported SDK's Responses event types predate the function-call argument events "
    "these fixtures include (validated on the current SDK)",
)
def test_stream_items_validate() -> None:
    for chunk in P.chat_chunks(["a", "b"]) + P.chat_chunks(["a"], include_usage=False):
        ChatCompletionChunk.model_validate(chunk)
    for chunk in P.completion_chunks(["a", "b"]):
        # The API streams `finish_reason: null` until the last chunk; the SDK's type (used
        # for whole completions) is stricter than the stream, so only that field is relaxed.
        relaxed = {
            **chunk,
            "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]],
        }
        Completion.model_validate(relaxed)
    adapter = TypeAdapter[Any](ResponseStreamEvent)
    events = P.response_events(["Hel", "lo"]) + P.response_function_call_events(
        [("get_weather", ['{"city":', '"Paris"}'])]
    )
    for event in events:
        parsed = adapter.validate_python(event)
        assert parsed.model_extra in (None, {}), event["type"]
