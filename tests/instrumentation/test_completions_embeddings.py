"""Legacy completions and embeddings."""

from __future__ import annotations

import pytest

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

pytestmark = pytest.mark.usefixtures("instrumented")


def test_embeddings(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/embeddings", P.embedding(n=2, prompt_tokens=8))
    result = api.call(
        lambda c: c.embeddings.create(
            model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
        )
    )
    assert len(result.data) == 2
    span = telemetry.only_span()
    attrs = span.attributes or {}
    assert span.name == "embeddings text-embedding-3-small"
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["openai.api.type"] == "embeddings"
    assert attrs["gen_ai.request.encoding_formats"] == ("float",)
    assert attrs["gen_ai.usage.input_tokens"] == 8
    assert attrs["gen_ai.usage.output_tokens"] == 0
    tokens = telemetry.metric_points("gen_ai.client.token.usage")
    assert [p.attributes["gen_ai.token.type"] for p in tokens] == ["input"]


def test_legacy_completion(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/completions", P.completion())
    api.call(
        lambda c: c.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7
        )
    )
    span = telemetry.only_span()
    attrs = span.attributes or {}
    assert span.name == "text_completion gpt-3.5-turbo-instruct"
    assert attrs["openai.api.type"] == "completions"
    assert attrs["gen_ai.request.max_tokens"] == 7
    assert attrs["gen_ai.response.finish_reasons"] == ("length",)
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (5, 7)
