"""The Responses API: create, parse, streams and their helper, background responses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

pytestmark = pytest.mark.usefixtures("instrumented")


def test_create(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/responses", P.response(usage=P.response_usage(36, 87, cached=16, reasoning=20)))
    result = api.call(
        lambda c: c.responses.create(model="gpt-4.1", input="Tell me a story", max_output_tokens=300)
    )
    assert result.output_text.startswith("In a peaceful grove")
    span = telemetry.only_span()
    attrs = span.attributes or {}
    assert span.name == "chat gpt-4.1"
    assert attrs["openai.api.type"] == "responses"
    assert attrs["gen_ai.request.max_tokens"] == 300
    assert attrs["gen_ai.response.model"] == "gpt-4.1-2025-04-14"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == 36
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 16
    assert attrs["gen_ai.usage.output_tokens"] == 87
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 20


def test_conversation_id_from_request(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/responses", P.response())
    api.call(
        lambda c: c.responses.create(
            model="gpt-4.1", input="hi", conversation="conv_689667905b048191b4740501625afd940c7533ace33a2dab"
        )
    )
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.conversation.id"] == "conv_689667905b048191b4740501625afd940c7533ace33a2dab"


class Story(BaseModel):
    title: str


def test_parse(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/responses", P.response(text='{"title":"The Grove"}'))
    result = api.call(lambda c: c.responses.parse(model="gpt-4.1", input="story", text_format=Story))
    assert result.output_parsed == Story(title="The Grove")
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["gen_ai.usage.output_tokens"] == 87


def test_stream_completed_event_usage(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream(
        "/responses",
        P.response_events(["Hel", "lo"], usage=P.response_usage(9, 2)),
        named=True,
        done_marker=False,
    )
    events = api.stream(lambda c: c.responses.create(model="gpt-4.1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 9
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert str(attrs["gen_ai.response.id"]).startswith("resp_")
    assert "gen_ai.response.time_to_first_chunk" in attrs


def test_stream_helper_one_span(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.stream("/responses", P.response_events(["Hel", "lo"]), named=True, done_marker=False)

    def flow(client: Any) -> str:
        with client.responses.stream(model="gpt-4.1", input="hi") as stream:
            for _ in stream:
                pass
            return stream.get_final_response().output_text

    async def async_flow(client: Any) -> str:
        async with client.responses.stream(model="gpt-4.1", input="hi") as stream:
            async for _ in stream:
                pass
            return (await stream.get_final_response()).output_text

    assert api.run(flow, async_flow) == "Hello"
    assert (telemetry.only_span().attributes or {})["gen_ai.usage.output_tokens"] == 87


def test_background_billed_once_when_retrieved_complete(
    api: Api, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    queued = P.response(status="queued", background=True, id="resp_bg1")
    fake.json("/responses", queued)
    fake.reply("/responses/resp_bg1")  # replies queued below, in order
    import httpx2

    fake.replies["/responses/resp_bg1"] = [
        httpx2.Response(200, json=P.response(status="in_progress", background=True, id="resp_bg1")),
        httpx2.Response(200, json=P.response(background=True, id="resp_bg1", usage=P.response_usage(50, 60))),
        httpx2.Response(200, json=P.response(background=True, id="resp_bg1", usage=P.response_usage(50, 60))),
    ]
    api.call(lambda c: c.responses.create(model="gpt-4.1", input="long job", background=True))
    created = telemetry.only_span()
    assert "gen_ai.usage.input_tokens" not in (created.attributes or {})
    for _ in range(3):  # poll: in progress, completed, completed again
        api.call(lambda c: c.responses.retrieve("resp_bg1"))
    spans = telemetry.finished()
    assert len(spans) == 2, "one span for the create, one when the finished response was first seen"
    billed = spans[1].attributes or {}
    assert billed["gen_ai.usage.input_tokens"] == 50
    assert billed["gen_ai.usage.output_tokens"] == 60
    assert billed["gen_ai.request.model"] == "gpt-4.1"


def test_retrieve_of_unknown_response_is_not_billed(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/responses/resp_other", P.response(id="resp_other"))
    api.call(lambda c: c.responses.retrieve("resp_other"))
    assert telemetry.finished() == []


def test_beta_responses_create(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    pytest.importorskip(
        "openai.resources.beta.responses.responses", reason="client.beta.responses is newer than this openai"
    )
    fake.json("/responses", P.response(usage=P.response_usage(12, 34)))
    api.call(lambda c: c.beta.responses.create(model="gpt-4.1", input="hi"))
    assert "beta=true" in str(fake.requests[-1].url)
    attrs = telemetry.only_span().attributes or {}
    assert attrs["openai.api.type"] == "responses"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (12, 34)
