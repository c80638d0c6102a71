"""The demo's OpenAI-compatible server speaks the API: every body and stream event it sends
validates against the ``openai`` SDK's own types with no field the SDK does not know, and the
real SDK (sync and async; create, stream and parse) works against it on loopback, with and
without llmledger's instrumentation."""

from __future__ import annotations

import asyncio
import base64
import http.client
import inspect
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, TypeAdapter

from llmledger.exporter.demo import DemoOpenAIServer
from llmledger.instrumentation import LLMLedgerInstrumentor

LLMLEDGER = str(Path(sys.executable).parent / "llmledger")
USER: list[Any] = [{"role": "user", "content": "Score this lead: Northwind Traders, 250 employees."}]


class Contact(BaseModel):
    name: str
    email: str
    company: str


class Lead(BaseModel):
    company: str
    score: int
    reasons: list[str]
    contact: Contact | None


CONTACT_SCHEMA = {  # what the SDK sends for Contact
    "type": "object",
    "title": "Contact",
    "properties": {key: {"type": "string", "title": key.title()} for key in ("name", "email", "company")},
    "required": ["name", "email", "company"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
RESPONSES_WEATHER_TOOL = {"type": "function", **WEATHER_TOOL["function"]}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def server() -> Iterator[DemoOpenAIServer]:
    running = DemoOpenAIServer(failing_models={"always-overloaded": 1.0}).start()
    yield running
    running.stop()


# --- what travels on the wire -------------------------------------------------------------


def _post(base_url: str, path: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        connection.request(
            "POST", f"{url.path}{path}", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def _sse(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per server-sent event."""
    events: list[tuple[str | None, str]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append((name, "\n".join(data)))
    return events


def _unknown_fields(value: Any, where: str = "$") -> list[str]:
    """Every field, at any depth, that the SDK's type did not declare."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{where}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _unknown_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found += _unknown_fields(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _unknown_fields(item, f"{where}.{key}")
    return found


def _as_sdk(kind: Any, payload: dict[str, Any]) -> Any:
    parsed = TypeAdapter[Any](kind).validate_python(payload)
    assert _unknown_fields(parsed) == [], payload
    # Nothing lost or reshaped: the SDK's object dumps back to exactly what was sent.
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == payload
    return parsed


CHAT_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"model": "gpt-4o", "messages": USER},
    "two-choices": {"model": "gpt-4o-mini", "messages": USER, "n": 2},
    "reasoning-model": {"model": "o3", "messages": USER},
    "json-schema": {
        "model": "gpt-4o",
        "messages": USER,
        "response_format": {"type": "json_schema", "json_schema": {"name": "Contact", "schema": CONTACT_SCHEMA, "strict": True}},
    },
    "json-object": {"model": "gpt-4o", "messages": USER, "response_format": {"type": "json_object"}},
    "tool-call": {"model": "gpt-4o", "messages": USER, "tools": [WEATHER_TOOL]},
    "after-tool-result": {
        "model": "gpt-4o",
        "tools": [WEATHER_TOOL],
        "messages": [
            *USER,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"},
        ],
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(CHAT_BODIES))
def test_chat_completion_bodies_are_the_apis(server: DemoOpenAIServer, name: str) -> None:
    status, headers, raw = _post(server.base_url, "/chat/completions", CHAT_BODIES[name])
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_")
    body = _as_sdk(ChatCompletion, json.loads(raw))
    assert len(body.choices) == CHAT_BODIES[name].get("n", 1)
    usage = body.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert (usage.completion_tokens_details.reasoning_tokens > 0) == (name == "reasoning-model")
    choice = body.choices[0]
    if name == "tool-call":
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "London", "unit": "c"}
    else:
        assert choice.finish_reason == "stop"
        assert choice.message.content
    if name == "json-schema":
        Contact.model_validate_json(choice.message.content or "")


STREAM_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "with-usage": {"stream_options": {"include_usage": True}},
    "no-obfuscation": {"stream_options": {"include_usage": True, "include_obfuscation": False}},
}


@pytest.mark.parametrize("options", list(STREAM_OPTIONS))
@pytest.mark.parametrize("name", ["plain", "two-choices", "tool-call", "json-schema"])
def test_chat_streams_are_the_apis(server: DemoOpenAIServer, name: str, options: str) -> None:
    request = {**CHAT_BODIES[name], "stream": True, **STREAM_OPTIONS[options]}
    status, headers, raw = _post(server.base_url, "/chat/completions", request)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = _sse(raw)
    assert events[-1] == (None, "[DONE]")
    chunks = [_as_sdk(ChatCompletionChunk, json.loads(data)) for name_, data in events[:-1] if name_ is None]
    assert len(chunks) == len(events) - 1
    whole = _as_sdk(
        ChatCompletion, json.loads(_post(server.base_url, "/chat/completions", CHAT_BODIES[name])[2])
    )
    # One id for every chunk of an answer; each answer its own id, as the API's (a call is billed once per id).
    (stream_id,) = {c.id for c in chunks}
    assert stream_id.startswith("chatcmpl-")
    assert whole.id.startswith("chatcmpl-")
    assert whole.id != stream_id
    with_usage = options != "default"
    if with_usage:
        # Every chunk says usage: null, and one last chunk without choices carries the usage.
        assert all(c.usage is None for c in chunks[:-1])
        assert chunks[-1].choices == []
        assert chunks[-1].usage == whole.usage
        chunks = chunks[:-1]
    else:
        assert all("usage" not in c.model_fields_set for c in chunks)
    assert all((c.obfuscation is not None) == (options != "no-obfuscation") for c in chunks)
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices[0].index == choice.index]
        assert mine[0].delta.role == "assistant"
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]
        assert "".join(c.delta.content or "" for c in mine) == (choice.message.content or "")
        arguments = "".join(t.function.arguments for c in mine for t in c.delta.tool_calls or [])
        assert arguments == "".join(t.function.arguments for t in choice.message.tool_calls or [])


RESPONSE_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"model": "gpt-4.1", "input": "Summarize: renewal call with Acme."},
    "instructions": {"model": "gpt-4.1-mini", "input": [{"role": "user", "content": "Hi"}],
                     "instructions": "Be brief.", "temperature": 0.2, "max_output_tokens": 200,
                     "metadata": {"ticket": "42"}},
    "reasoning-model": {"model": "o4-mini", "input": "Plan a migration.", "reasoning": {"effort": "low"}},
    "json-schema": {"model": "gpt-4.1", "input": "Extract the contact.",
                    "text": {"format": {"type": "json_schema", "name": "Contact", "schema": CONTACT_SCHEMA,
                                        "strict": True}}},
    "tool-call": {"model": "gpt-4.1", "input": "Weather in London?", "tools": [RESPONSES_WEATHER_TOOL]},
    "after-tool-result": {"model": "gpt-4.1", "tools": [RESPONSES_WEATHER_TOOL], "input": [
        {"role": "user", "content": "Weather in London?"},
        {"type": "function_call_output", "call_id": "call_1", "output": "12 C, rain"}]},
}  # fmt: skip


@pytest.mark.parametrize("name", list(RESPONSE_BODIES))
def test_responses_are_the_apis(server: DemoOpenAIServer, name: str) -> None:
    status, _, raw = _post(server.base_url, "/responses", RESPONSE_BODIES[name])
    assert status == 200
    body = _as_sdk(Response, json.loads(raw))
    assert body.status == "completed"
    assert body.usage is not None
    assert body.usage.total_tokens == body.usage.input_tokens + body.usage.output_tokens
    kinds = [item.type for item in body.output]
    expected = {"tool-call": ["function_call"], "reasoning-model": ["reasoning", "message"]}.get(
        name, ["message"]
    )
    assert kinds == expected
    assert (body.usage.output_tokens_details.reasoning_tokens > 0) == (name == "reasoning-model")
    if name == "json-schema":
        Contact.model_validate_json(body.output_text)
    if name == "instructions":
        assert (body.instructions, body.temperature, body.max_output_tokens, body.metadata) == (
            "Be brief.", 0.2, 200, {"ticket": "42"},
        )  # fmt: skip


@pytest.mark.parametrize("name", list(RESPONSE_BODIES))
def test_response_streams_are_the_apis(server: DemoOpenAIServer, name: str) -> None:
    status, headers, raw = _post(server.base_url, "/responses", {**RESPONSE_BODIES[name], "stream": True})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    wire = _sse(raw)
    assert all(data != "[DONE]" for _, data in wire)  # the Responses API ends without a marker
    adapter: Any = ResponseStreamEvent
    events = [_as_sdk(adapter, json.loads(data)) for _, data in wire]
    assert [event_name for event_name, _ in wire] == [e.type for e in events]  # each event is named
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[0].response.status == "in_progress"
    assert events[0].response.output == []
    final = events[-1]
    assert final.type == "response.completed"
    whole = _as_sdk(Response, json.loads(_post(server.base_url, "/responses", RESPONSE_BODIES[name])[2]))
    assert final.response == whole
    # Every output item is announced before its content and finished after it.
    for index, item in enumerate(whole.output):
        mine = [e for e in events if getattr(e, "output_index", None) == index]
        assert mine[0].type == "response.output_item.added"
        assert mine[0].item.id == item.id
        assert mine[-1].type == "response.output_item.done"
        assert mine[-1].item == item
        if item.type == "message":
            assert mine[1].type == "response.content_part.added"
            deltas = "".join(e.delta for e in mine if e.type == "response.output_text.delta")
            assert deltas == item.content[0].text
        if item.type == "function_call":
            deltas = "".join(e.delta for e in mine if e.type == "response.function_call_arguments.delta")
            assert deltas == item.arguments


COMPLETION_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"},
    "several-prompts": {"model": "gpt-3.5-turbo-instruct", "prompt": ["One", "Two"], "n": 2},
    "token-ids": {"model": "gpt-3.5-turbo-instruct", "prompt": [1212, 318, 257, 1332]},
}


@pytest.mark.parametrize("name", list(COMPLETION_BODIES))
def test_completions_and_their_streams_are_the_apis(server: DemoOpenAIServer, name: str) -> None:
    request = COMPLETION_BODIES[name]
    whole = _as_sdk(Completion, json.loads(_post(server.base_url, "/completions", request)[2]))
    assert (
        len(whole.choices) == len(request["prompt"]) * request.get("n", 1) if name == "several-prompts" else 1
    )
    if name == "token-ids":
        assert whole.usage.prompt_tokens == 4
    for with_usage in (False, True):
        options = {"stream_options": {"include_usage": True}} if with_usage else {}
        _, _, raw = _post(server.base_url, "/completions", {**request, "stream": True, **options})
        wire = _sse(raw)
        assert wire[-1] == (None, "[DONE]")
        payloads = [json.loads(data) for _, data in wire[:-1]]
        # The SDK reads stream chunks as Completion, whose finish_reason is not nullable as a
        # stream's is until its last chunk: only that field is relaxed.
        chunks = [
            _as_sdk(Completion, {**p, "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in p["choices"]]})
            for p in payloads
        ]  # fmt: skip
        if with_usage:
            assert chunks[-1].choices == []
            assert chunks[-1].usage == whole.usage
            assert all(p["usage"] is None for p in payloads[:-1])
        else:
            assert all("usage" not in p for p in payloads)
        for choice in whole.choices:
            text = "".join(
                c.choices[0].text for c in chunks if c.choices and c.choices[0].index == choice.index
            )
            assert text == choice.text


@pytest.mark.parametrize(
    ("request_", "dimensions"),
    [
        ({"model": "text-embedding-3-small", "input": "quarterly report"}, 1536),
        ({"model": "text-embedding-3-large", "input": ["a", "b", "c"]}, 3072),
        ({"model": "text-embedding-3-small", "input": ["a"], "dimensions": 256}, 256),
        (
            {"model": "text-embedding-3-small", "input": [[1212, 318], [257]], "encoding_format": "float"},
            1536,
        ),
        ({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}, 1536),
    ],
)
def test_embedding_bodies_are_the_apis(
    server: DemoOpenAIServer, request_: dict[str, Any], dimensions: int
) -> None:
    payload = json.loads(_post(server.base_url, "/embeddings", request_)[2])
    if request_.get("encoding_format") == "base64":
        # Base64 vectors are little-endian float32, which the SDK decodes before its type sees them.
        for item in payload["data"]:
            raw = base64.b64decode(item["embedding"], validate=True)
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    body = _as_sdk(CreateEmbeddingResponse, payload)
    inputs = request_["input"] if isinstance(request_["input"], list) else [request_["input"]]
    assert [d.index for d in body.data] == list(range(len(inputs)))
    for item in body.data:
        vector = item.embedding
        assert len(vector) == dimensions
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)  # unit length, as the API's
    if request_["input"] == [[1212, 318], [257]]:
        assert body.usage.prompt_tokens == 3  # token ids count as themselves


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/chat/completions", {"model": "gpt-4o"}, 400, "messages"),
        ("/chat/completions", {"messages": USER}, 400, "model"),
        ("/chat/completions", {"model": "gpt-4o", "messages": USER, "n": 0}, 400, "n"),
        ("/completions", {"model": "gpt-3.5-turbo-instruct"}, 400, "prompt"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": []}, 400, "input"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
        ("/chat/completions", {"model": "always-overloaded", "messages": USER}, 503, None),
        ("/images/generations", {"model": "dall-e-3", "prompt": "a cat"}, 404, None),
    ],
)  # fmt: skip
def test_errors_have_the_apis_shape(
    server: DemoOpenAIServer, path: str, body: Any, status: int, param: str | None
) -> None:
    got, headers, raw = _post(server.base_url, path, body)
    assert got == status
    assert headers["content-type"] == "application/json"
    error = json.loads(raw)
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["param"] == param
    assert error["error"]["type"] == ("server_error" if status == 503 else "invalid_request_error")


# --- the real SDK, sync and async --------------------------------------------------------


class Sdk:
    """One scenario through the sync or the async client, against the server on loopback."""

    def __init__(self, mode: str, base_url: str) -> None:
        self.mode = mode
        self.base_url = base_url

    def run(self, scenario: Callable[[Any], Any]) -> Any:
        if self.mode == "sync":
            with openai.OpenAI(base_url=self.base_url, api_key="sk-local", max_retries=0) as client:
                return scenario(client)

        async def run() -> Any:
            async with openai.AsyncOpenAI(
                base_url=self.base_url, api_key="sk-local", max_retries=0
            ) as client:
                result = scenario(client)
                return await result if inspect.isawaitable(result) else result

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def sdk(request: pytest.FixtureRequest, server: DemoOpenAIServer) -> Sdk:
    return Sdk(request.param, server.base_url)


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


def _read(sdk: Sdk, client: Any, stream: Any) -> Any:
    return _drain(stream) if sdk.mode == "async" else list(stream)


def test_sdk_chat_create_stream_and_parse(sdk: Sdk) -> None:
    whole = sdk.run(lambda c: c.chat.completions.create(model="gpt-4o", messages=USER))

    async def astream(c: Any) -> list[Any]:
        return await _drain(await c.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}))  # fmt: skip

    def stream(c: Any) -> list[Any]:
        return list(c.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}))  # fmt: skip

    chunks = sdk.run(astream if sdk.mode == "async" else stream)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == whole.choices[0].message.content
    )
    assert chunks[-1].usage == whole.usage

    parsed = sdk.run(lambda c: c.chat.completions.parse(model="gpt-4o", messages=USER, response_format=Lead))
    lead = parsed.choices[0].message.parsed
    assert isinstance(lead, Lead)
    assert lead.contact == Contact(name="Ada Lovelace", email="ada@example.com", company="Analytical Engines")


def test_sdk_chat_stream_helper(sdk: Sdk) -> None:
    asked = {"model": "gpt-4o", "messages": USER, "response_format": Contact,
             "stream_options": {"include_usage": True}}  # fmt: skip

    async def astream(c: Any) -> tuple[list[Any], Any]:
        async with c.chat.completions.stream(**asked) as s:
            events = [e async for e in s]
            return events, await s.get_final_completion()

    def stream(c: Any) -> tuple[list[Any], Any]:
        with c.chat.completions.stream(**asked) as s:
            return list(s), s.get_final_completion()

    events, final = sdk.run(astream if sdk.mode == "async" else stream)
    assert "content.done" in [e.type for e in events]
    assert isinstance(final.choices[0].message.parsed, Contact)
    assert final.usage is not None
    assert final.usage.total_tokens > 0


def test_sdk_chat_tool_calls_parse(sdk: Sdk) -> None:
    tools = [openai.pydantic_function_tool(Contact, name="save_contact")]
    parsed = sdk.run(lambda c: c.chat.completions.parse(model="gpt-4o", messages=USER, tools=tools))
    call = parsed.choices[0].message.tool_calls[0]
    assert call.function.name == "save_contact"
    assert isinstance(call.function.parsed_arguments, Contact)


def test_sdk_tool_calls_stream_through_the_helpers(sdk: Sdk) -> None:
    chat_tools = [openai.pydantic_function_tool(Contact, name="save_contact")]
    responses_tool = {"type": "function", **chat_tools[0]["function"]}

    async def astreams(c: Any) -> tuple[list[Any], Any, Any]:
        async with c.chat.completions.stream(model="gpt-4o", messages=USER, tools=chat_tools) as s:
            events = [e async for e in s]
            chat = await s.get_final_completion()
        async with c.responses.stream(model="gpt-4.1", input="Save Ada.", tools=[responses_tool]) as s:
            response = await s.get_final_response()
        return events, chat, response

    def streams(c: Any) -> tuple[list[Any], Any, Any]:
        with c.chat.completions.stream(model="gpt-4o", messages=USER, tools=chat_tools) as s:
            events = list(s)
            chat = s.get_final_completion()
        with c.responses.stream(model="gpt-4.1", input="Save Ada.", tools=[responses_tool]) as s:
            response = s.get_final_response()
        return events, chat, response

    events, chat, response = sdk.run(astreams if sdk.mode == "async" else streams)
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [e.name for e in done] == ["save_contact"]
    assert isinstance(done[0].parsed_arguments, Contact)
    assert chat.choices[0].finish_reason == "tool_calls"
    assert chat.choices[0].message.tool_calls[0].function.parsed_arguments == done[0].parsed_arguments
    (call,) = response.output
    assert call.type == "function_call"
    assert call.name == "save_contact"
    assert Contact.model_validate_json(call.arguments) == done[0].parsed_arguments


def test_sdk_responses_create_stream_and_parse(sdk: Sdk) -> None:
    whole = sdk.run(lambda c: c.responses.create(model="gpt-4.1", input="Summarize the call."))

    async def astream(c: Any) -> tuple[list[Any], Any]:
        async with c.responses.stream(model="gpt-4.1", input="Summarize the call.") as s:
            return [e async for e in s], await s.get_final_response()

    def stream(c: Any) -> tuple[list[Any], Any]:
        with c.responses.stream(model="gpt-4.1", input="Summarize the call.") as s:
            return list(s), s.get_final_response()

    events, final = sdk.run(astream if sdk.mode == "async" else stream)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert final.output_text == whole.output_text
    assert final.usage == whole.usage

    async def aparse_stream(c: Any) -> Any:
        async with c.responses.stream(model="o4-mini", input="Extract.", text_format=Contact) as s:
            async for _ in s:
                pass
            return await s.get_final_response()

    def parse_stream(c: Any) -> Any:
        with c.responses.stream(model="o4-mini", input="Extract.", text_format=Contact) as s:
            for _ in s:
                pass
            return s.get_final_response()

    streamed = sdk.run(aparse_stream if sdk.mode == "async" else parse_stream)
    parsed = sdk.run(lambda c: c.responses.parse(model="o4-mini", input="Extract.", text_format=Contact))
    assert isinstance(parsed.output_parsed, Contact)
    assert streamed.output_parsed == parsed.output_parsed


def test_sdk_responses_background_and_retrieve(sdk: Sdk) -> None:
    queued = sdk.run(lambda c: c.responses.create(model="gpt-4.1", input="Long report.", background=True))
    assert queued.status == "queued"
    assert queued.usage is None
    done = sdk.run(lambda c: c.responses.retrieve(queued.id))
    assert done.status == "completed"
    assert done.output_text
    assert done.usage is not None
    with pytest.raises(openai.NotFoundError):
        sdk.run(lambda c: c.responses.retrieve("resp_unknown"))


def test_sdk_completions_and_embeddings(sdk: Sdk) -> None:
    whole = sdk.run(lambda c: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi"))

    async def astream(c: Any) -> list[Any]:
        return await _drain(await c.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True, stream_options={"include_usage": True}))  # fmt: skip

    def stream(c: Any) -> list[Any]:
        return list(c.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True, stream_options={"include_usage": True}))  # fmt: skip

    chunks = sdk.run(astream if sdk.mode == "async" else stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage == whole.usage
    vectors = sdk.run(lambda c: c.embeddings.create(model="text-embedding-3-small", input=["a", "b"]))
    assert [len(d.embedding) for d in vectors.data] == [1536, 1536]


def test_sdk_errors(sdk: Sdk) -> None:
    with pytest.raises(openai.InternalServerError) as overloaded:
        sdk.run(lambda c: c.chat.completions.create(model="always-overloaded", messages=USER))
    assert overloaded.value.status_code == 503
    assert overloaded.value.type == "server_error"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.run(lambda c: c.embeddings.create(model="text-embedding-3-small", input=[]))
    assert bad.value.param == "input"


# --- with llmledger's instrumentation ----------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


def test_instrumented_streams_bill_what_the_server_reports(sdk: Sdk, spans: InMemorySpanExporter) -> None:
    async def astreams(c: Any) -> tuple[Any, Any]:
        async with c.responses.stream(model="gpt-4.1", input="Summarize.") as s:
            response = await s.get_final_response()
        async with c.chat.completions.stream(model="gpt-4o", messages=USER) as s:
            chat = await s.get_final_completion()
        return response, chat

    def streams(c: Any) -> tuple[Any, Any]:
        with c.responses.stream(model="gpt-4.1", input="Summarize.") as s:
            response = s.get_final_response()
        with c.chat.completions.stream(model="gpt-4o", messages=USER) as s:
            chat = s.get_final_completion()
        return response, chat

    response, chat = sdk.run(astreams if sdk.mode == "async" else streams)
    assert chat.usage is None  # the usage chunk llmledger asked for is hidden from the app
    unstreamed = sdk.run(lambda c: c.chat.completions.create(model="gpt-4o", messages=USER))
    finished = [dict(span.attributes or {}) for span in spans.get_finished_spans()]
    assert [(a["gen_ai.request.model"], a["gen_ai.request.stream"]) for a in finished] == [
        ("gpt-4.1", True), ("gpt-4o", True), ("gpt-4o", False),
    ]  # fmt: skip
    billed = [(a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) for a in finished]
    assert billed == [
        (response.usage.input_tokens, response.usage.output_tokens),
        (unstreamed.usage.prompt_tokens, unstreamed.usage.completion_tokens),  # a stream answers the same
        (unstreamed.usage.prompt_tokens, unstreamed.usage.completion_tokens),
    ]
    assert finished[0]["gen_ai.response.id"] == response.id
    assert all(float(str(a["gen_ai.usage.cost"])) > 0 for a in finished)


# --- `llmledger demo --serve-api` --------------------------------------------------------


@pytest.mark.subprocess
def test_serve_api_runs_the_server_on_its_own_until_interrupted(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    served = subprocess.Popen(
        [LLMLEDGER, "demo", "--serve-api", "--port", "0", "--failing-model", "gpt-4.1=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert served.stdout is not None
        banner = served.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:(\d+)/v1) ", banner)
        assert match, banner
        base_url, port = match.group(1), int(match.group(2))
        assert f"OPENAI_BASE_URL={base_url}" in served.stdout.readline()
        client = openai.OpenAI(base_url=base_url, api_key="sk-local", max_retries=0)
        assert client.chat.completions.create(model="gpt-4.1-mini", messages=USER).choices[0].message.content
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4.1", messages=USER)
        # A second server on the same port says which flag to change.
        clash = subprocess.run(
            [LLMLEDGER, "demo", "--serve-api", "--port", str(port)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert clash.returncode == 2
        assert "--port" in clash.stderr
        assert clash.stderr.count("\n") == 1  # one line, no traceback
    finally:
        served.send_signal(signal.SIGINT)
        _out, err = served.communicate(timeout=30)
    assert served.returncode == 0, err
    assert err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "9000"], "llmledger demo: --port needs --serve-api\n"),
        (["--host", "0.0.0.0", "--failing-model", "gpt-4.1=0.5"], "llmledger demo: --host, --failing-model need --serve-api\n"),
        (["--serve-api", "--dir", "/tmp/x"], "llmledger demo: --dir does not apply with --serve-api (the server keeps nothing)\n"),
    ],
)  # fmt: skip
def test_server_flags_without_serve_api_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmledger.exporter.cli import main

    assert main(["demo", *argv]) == 2
    assert capsys.readouterr().err == message


@pytest.mark.parametrize("value", ["gpt-4.1", "gpt-4.1=2", "=0.5", "gpt-4.1=half"])
def test_failing_model_must_be_a_model_and_a_share(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from llmledger.exporter.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--serve-api", "--failing-model", value])
    assert exit_.value.code == 2
    assert "expected MODEL=SHARE with SHARE from 0 to 1" in capsys.readouterr().err
