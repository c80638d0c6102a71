"""Chat completions, sync and async: one span per call with the contract's attributes."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]

pytestmark = pytest.mark.usefixtures("instrumented")


def test_chat_span_whole(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(19, 10, cached=8)))
    result = api.call(
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            temperature=0.2,
            max_tokens=50,
            top_p=0.9,
            seed=7,
            stop=["\n"],
        )
    )
    assert result.choices[0].message.content == "Hello! How can I help?"
    span = telemetry.only_span()
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "openai.api.type": "chat_completions",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.stream": False,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("\n",),
        "server.address": "api.openai.com",
        "server.port": 443,
        "llmledger.fallback": False,
        "llmledger.fallback.attempt": 0,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "gen_ai.response.finish_reasons": ("stop",),
        "openai.response.service_tier": "default",
        "openai.response.system_fingerprint": "fp_44709d6fcb",
        "gen_ai.usage.input_tokens": 19,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 8,
        **_cost_attributes(span.attributes),
    }
    # No message content unless the user opts in.
    assert "gen_ai.input.messages" not in (span.attributes or {})


def _cost_attributes(attrs: Any) -> dict[str, Any]:
    """Cost attributes are pricing's business (tested there); here only their presence is mirrored."""
    keys = ("gen_ai.usage.cost", "llmledger.cost.input", "llmledger.cost.output", "llmledger.cost.source")
    return {k: attrs[k] for k in keys if k in attrs}


def test_tool_calls_and_reasoning(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json(
        "/chat/completions",
        P.chat_completion(
            model="o3-mini-2025-01-31",
            content=None,
            finish_reason="tool_calls",
            tool_calls=[P.tool_call()],
            usage=P.usage_chat(120, 600, reasoning=512),
        ),
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    api.call(
        lambda c: c.chat.completions.create(
            model="o3-mini", messages=MESSAGES, tools=tools, reasoning_effort="low"
        )
    )
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs["gen_ai.usage.output_tokens"] == 600
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 512
    assert attrs["gen_ai.response.model"] == "o3-mini-2025-01-31"


def test_refusal_recorded_as_success(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(content=None, refusal="I can't help with that."))
    result = api.call(lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    assert result.choices[0].message.refusal == "I can't help with that."
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["gen_ai.usage.input_tokens"] == 19


class Answer(BaseModel):
    city: str
    temperature_c: float


def test_parse_structured_output_one_span(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json(
        "/chat/completions",
        P.chat_completion(content='{"city":"Paris","temperature_c":21.5}', model="gpt-4o-2024-08-06"),
    )
    result = api.call(
        lambda c: c.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer)
    )
    assert result.choices[0].message.parsed == Answer(city="Paris", temperature_c=21.5)
    span = telemetry.only_span()
    attrs = span.attributes or {}
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["gen_ai.usage.output_tokens"] == 10
    assert span.name == "chat gpt-4o"


def test_multiple_choices_finish_reasons(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(n=3))
    api.call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3))
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "stop", "stop")
    assert attrs["gen_ai.request.choice.count"] == 3


@pytest.mark.parametrize(
    ("status", "error_cls", "type_name"),
    [
        (400, openai.BadRequestError, "BadRequestError"),
        (401, openai.AuthenticationError, "AuthenticationError"),
        (429, openai.RateLimitError, "RateLimitError"),
        (500, openai.InternalServerError, "InternalServerError"),
        (503, openai.InternalServerError, "InternalServerError"),
    ],
)
def test_http_errors_pass_through_unchanged(
    api: Api, fake: FakeOpenAI, telemetry: Telemetry, status: int, error_cls: type[Exception], type_name: str
) -> None:
    fake.json("/chat/completions", P.error_body("boom", code="x"), status=status)
    with pytest.raises(error_cls) as info:
        api.call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert type(info.value) is error_cls
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.ERROR
    attrs = span.attributes or {}
    assert attrs["error.type"] == type_name
    assert "gen_ai.usage.input_tokens" not in attrs
    assert "gen_ai.usage.cost" not in attrs
    assert [e.name for e in span.events] == ["exception"]


def test_same_exception_object_reaches_app(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    boom = httpx2.ConnectError("connection refused")
    fake.reply("/chat/completions", boom)
    client = openai.OpenAI(
        api_key="k", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler))
    )
    with pytest.raises(openai.APIConnectionError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.__cause__ is boom
    assert (telemetry.only_span().attributes or {})["error.type"] == "APIConnectionError"


def test_timeout_is_an_error(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.reply("/chat/completions", httpx2.ReadTimeout("timed out"))
    with pytest.raises(openai.APITimeoutError):
        api.call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert (telemetry.only_span().attributes or {})["error.type"] == "APITimeoutError"


def test_sdk_retries_are_one_span(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.reply(
        "/chat/completions",
        httpx2.Response(503, json=P.error_body("busy"), headers={"retry-after-ms": "1"}),
        httpx2.Response(200, json=P.chat_completion()),
    )
    client = openai.OpenAI(
        api_key="k", max_retries=2, http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler))
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(fake.requests) == 2
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["llmledger.fallback"] is False


@pytest.mark.parametrize(
    ("base_url", "provider", "address", "port"),
    [
        ("https://api.groq.com/openai/v1", "groq", "api.groq.com", 443),
        ("https://api.deepseek.com/v1", "deepseek", "api.deepseek.com", 443),
        ("https://api.mistral.ai/v1", "mistral_ai", "api.mistral.ai", 443),
        ("https://api.x.ai/v1", "x_ai", "api.x.ai", 443),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "gcp.gemini",
            "generativelanguage.googleapis.com",
            443,
        ),
        ("https://openrouter.ai/api/v1", "openrouter", "openrouter.ai", 443),
        ("http://localhost:11434/v1", "openai", "localhost", 11434),
    ],
)
def test_provider_from_base_url(
    fake: FakeOpenAI, telemetry: Telemetry, base_url: str, provider: str, address: str, port: int
) -> None:
    fake.json("/chat/completions", P.chat_completion(model="some-model"))
    Api("sync", fake, base_url=base_url).call(
        lambda c: c.chat.completions.create(model="some-model", messages=MESSAGES)
    )
    attrs = telemetry.only_span().attributes or {}
    assert (attrs["gen_ai.provider.name"], attrs["server.address"], attrs["server.port"]) == (
        provider,
        address,
        port,
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_azure_deployment(mode: str, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(model="gpt-4o-2024-11-20"))
    azure = Api(mode, fake, base_url="https://contoso.openai.azure.com", azure=True)
    azure.call(lambda c: c.chat.completions.create(model="contoso-gpt4o-prod", messages=MESSAGES))
    assert "/openai/deployments/contoso-gpt4o-prod/chat/completions" in str(fake.requests[-1].url)
    span = telemetry.only_span()
    attrs = span.attributes or {}
    assert span.name == "chat contoso-gpt4o-prod"
    assert attrs["gen_ai.provider.name"] == "azure.ai.openai"
    assert attrs["server.address"] == "contoso.openai.azure.com"
    assert attrs["gen_ai.response.model"] == "gpt-4o-2024-11-20"


def test_metrics_semconv(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(19, 10)))
    api.call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    tokens = telemetry.metric_points("gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens}
    assert by_type["input"].sum == 19
    assert by_type["output"].sum == 10
    assert list(by_type["input"].explicit_bounds) == [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144,
                                                      1048576, 4194304, 16777216, 67108864]  # fmt: skip
    (duration,) = telemetry.metric_points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert list(duration.explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert dict(duration.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    assert telemetry.metric_points("gen_ai.client.operation.time_to_first_chunk") == []


def test_error_metric_has_error_type(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.error_body("slow down"), status=429)
    with pytest.raises(openai.RateLimitError):
        api.call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    (duration,) = telemetry.metric_points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "RateLimitError"


def test_cost_counter_sums_exactly_per_attribute_set(
    api: Api, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    from decimal import Decimal

    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(1234, 567, cached=1024)))
    for _ in range(7):
        api.call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    spans = telemetry.finished()
    per_call = {Decimal(repr((s.attributes or {})["gen_ai.usage.cost"])) for s in spans}
    assert len(per_call) == 1
    (point,) = telemetry.metric_points("llmledger.client.cost")
    assert Decimal(repr(point.value)) == per_call.pop() * 7
    assert point.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert telemetry.metric_points("llmledger.client.unpriced_calls") == []


def test_unpriced_calls_are_counted_not_costed(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion(model="my-self-hosted-llm"))
    for _ in range(3):
        api.call(lambda c: c.chat.completions.create(model="my-self-hosted-llm", messages=MESSAGES))
    assert all("gen_ai.usage.cost" not in (s.attributes or {}) for s in telemetry.finished())
    (point,) = telemetry.metric_points("llmledger.client.unpriced_calls")
    assert point.value == 3
    assert telemetry.metric_points("llmledger.client.cost") == []
