"""``with_raw_response`` and ``with_streaming_response``: one span per API call, usage read."""

from __future__ import annotations

from typing import Any

import pytest

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

MESSAGES = [{"role": "user", "content": "hi"}]
pytestmark = pytest.mark.usefixtures("instrumented")


def test_with_raw_response(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(30, 4)))

    def flow(client: Any) -> Any:
        return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)

    async def async_flow(client: Any) -> Any:
        return await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)

    raw = api.run(flow, async_flow)
    assert raw.headers["x-request-id"] == "req_123"
    # The span is complete even if the app never parses the body.
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 30
    assert raw.parse().usage.completion_tokens == 4
    assert len(telemetry.finished()) == 1


def test_with_raw_response_stream(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(["a", "b"]))

    def flow(client: Any) -> list[Any]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        return list(raw.parse())

    async def async_flow(client: Any) -> list[Any]:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        return [chunk async for chunk in raw.parse()]

    chunks = api.run(flow, async_flow)
    assert all(c.choices for c in chunks)
    assert (telemetry.only_span().attributes or {})["gen_ai.usage.output_tokens"] == 2


def test_with_streaming_response_parse(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(7, 3)))

    def flow(client: Any) -> Any:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        ) as resp:
            return resp.parse()

    async def async_flow(client: Any) -> Any:
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        ) as resp:
            return await resp.parse()

    assert api.run(flow, async_flow).usage.prompt_tokens == 7
    assert (telemetry.only_span().attributes or {})["gen_ai.usage.input_tokens"] == 7


def test_with_streaming_response_read_bytes(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/embeddings", P.embedding(prompt_tokens=11))

    def flow(client: Any) -> bytes:
        with client.embeddings.with_streaming_response.create(
            model="text-embedding-3-small", input="x"
        ) as resp:
            return resp.read()

    async def async_flow(client: Any) -> bytes:
        async with client.embeddings.with_streaming_response.create(
            model="text-embedding-3-small", input="x"
        ) as resp:
            return await resp.read()

    assert b'"prompt_tokens":11' in api.run(flow, async_flow)
    assert (telemetry.only_span().attributes or {})["gen_ai.usage.input_tokens"] == 11


def test_with_streaming_response_stream(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(["x", "y", "z"]))

    def flow(client: Any) -> int:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as resp:
            return sum(1 for _ in resp.parse())

    async def async_flow(client: Any) -> int:
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as resp:
            return len([c async for c in await resp.parse()])

    assert api.run(flow, async_flow) == 5  # role chunk, three pieces, finish chunk; usage hidden
    assert (telemetry.only_span().attributes or {})["gen_ai.usage.output_tokens"] == 3


def test_with_streaming_response_closed_unread(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion())

    def flow(client: Any) -> int:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        ) as resp:
            return resp.status_code

    async def async_flow(client: Any) -> int:
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        ) as resp:
            return resp.status_code

    assert api.run(flow, async_flow) == 200
    attrs = telemetry.only_span().attributes or {}
    # Nothing was read: no counts, and no guess about an output nobody saw.
    assert not {"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "llmledger.usage.estimated"} & set(
        attrs
    )
