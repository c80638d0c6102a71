"""Streams: the app sees exactly the SDK's chunks; the span ends once however the stream ends."""

from __future__ import annotations

import gc
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry.trace import StatusCode

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

MESSAGES = [{"role": "user", "content": "Count to five"}]
PIECES = ["One", ", two", ", three", ", four", ", five."]


def _create(**extra: Any) -> Any:
    return lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra)


@pytest.mark.usefixtures("instrumented")
def test_usage_requested_and_usage_chunk_hidden(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES, usage=P.usage_chat(12, 5, cached=0)))
    chunks = api.stream(_create())
    assert fake.sent()["stream_options"] == {"include_usage": True}
    # Exactly what the app would have seen without us: no usage-only chunk.
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(PIECES)
    span = telemetry.only_span()
    attrs = span.attributes or {}
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.response.id"] == "chatcmpl-stream-1"
    assert "llmledger.usage.estimated" not in attrs
    ttft = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float)
    assert 0 < ttft * 1e9 <= (span.end_time or 0) - (span.start_time or 0)
    (point,) = telemetry.metric_points("gen_ai.client.operation.time_to_first_chunk")
    assert point.count == 1


@pytest.mark.usefixtures("instrumented")
def test_user_asked_for_usage_sees_usage_chunk(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))
    chunks = api.stream(_create(stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (telemetry.only_span().attributes or {})["gen_ai.usage.output_tokens"] == len(PIECES)


@pytest.mark.usefixtures("instrumented")
def test_user_stream_options_respected(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES, include_usage=False))
    api.stream(_create(stream_options={"include_obfuscation": False}))
    assert fake.sent()["stream_options"] == {"include_obfuscation": False}
    attrs = telemetry.only_span().attributes or {}
    # No usage from the API: counted locally and flagged.
    assert attrs["llmledger.usage.estimated"] is True
    assert attrs["gen_ai.usage.output_tokens"] == _o200k("".join(PIECES))


def _o200k(text: str) -> int:
    import tiktoken

    return len(tiktoken.get_encoding("o200k_base").encode(text))


def test_stream_usage_injection_can_be_turned_off(
    instrument: Any, api: Api, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    instrument(stream_usage=False)
    fake.stream("/chat/completions", P.chat_chunks(PIECES, include_usage=False))
    api.stream(_create())
    assert "stream_options" not in fake.sent()


@pytest.mark.usefixtures("instrumented")
def test_broken_off_then_closed(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))
    client = Api("sync", fake)._client()
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    assert telemetry.finished() == []
    stream.close()
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.UNSET
    # The usage chunk never arrived: what was received is counted locally, and flagged.
    assert (span.attributes or {})["llmledger.usage.estimated"] is True
    stream.close()  # idempotent: still one span
    assert len(telemetry.finished()) == 1


@pytest.mark.usefixtures("instrumented")
def test_with_block_exit_ends_span(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))

    def sync_flow(client: Any) -> None:
        with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
            next(stream)
        assert len(telemetry.finished()) == 1

    async def async_flow(client: Any) -> None:
        async with await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as stream:
            await stream.__anext__()
        assert len(telemetry.finished()) == 1

    api.run(sync_flow, async_flow)
    assert len(telemetry.finished()) == 1


@pytest.mark.usefixtures("instrumented")
def test_garbage_collected_stream_ends_span(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))
    client = Api("sync", fake)._client()

    def consume_two() -> None:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        next(stream)
        next(stream)

    consume_two()
    gc.collect()
    assert len(telemetry.finished()) == 1


@pytest.mark.usefixtures("instrumented")
def test_error_mid_stream(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    chunks = P.chat_chunks(PIECES)[:3]
    body = (
        P.sse(chunks, done_marker=False)
        + b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    )
    fake.reply(
        "/chat/completions", httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    with pytest.raises(openai.APIError) as info:
        api.stream(_create())
    assert "overloaded" in str(info.value)
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "APIError"


@pytest.mark.usefixtures("instrumented")
def test_stream_helper_one_span(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))

    def sync_flow(client: Any) -> str:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion().choices[0].message.content

    async def async_flow(client: Any) -> str:
        async with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
            return final.choices[0].message.content

    assert api.run(sync_flow, async_flow) == "".join(PIECES)
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.usage.output_tokens"] == len(PIECES)


@pytest.mark.usefixtures("instrumented")
def test_stream_helper_closed_early_ends_span_at_close(
    api: Api, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))

    def sync_flow(client: Any) -> None:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            for _ in stream:
                break
        # The helper closes the HTTP response, not our proxy: the span must end here anyway.
        assert len(telemetry.finished()) == 1

    async def async_flow(client: Any) -> None:
        async with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            async for _ in stream:
                break
        assert len(telemetry.finished()) == 1

    api.run(sync_flow, async_flow)


@pytest.mark.usefixtures("instrumented")
def test_stream_response_attribute_passes_through(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/chat/completions", P.chat_chunks(PIECES))
    client = Api("sync", fake)._client()
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"] == "text/event-stream"
    list(stream)
    assert len(telemetry.finished()) == 1


@pytest.mark.usefixtures("instrumented")
def test_legacy_completions_stream(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/completions", P.completion_chunks(["Hello", " there"]))
    chunks = api.stream(
        lambda c: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True)
    )
    assert [c.choices[0].text for c in chunks] == ["Hello", " there", ""]
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert attrs["gen_ai.usage.input_tokens"] == 4
    assert attrs["gen_ai.usage.output_tokens"] == 2
