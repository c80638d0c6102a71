"""A request and a result as span attributes, the "call finished" step's parts, one by one.

The functions under test touch no span and no global: they are called directly, with the
openai SDK's own request shapes and response types, and checked whole. Where they take
input from outside (the app's kwargs, the API's usage numbers) hypothesis throws anything
at them.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, cast

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import Completion, CompletionUsage, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from openai.types.responses import Response
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from pydantic import BaseModel

from llmledger.instrumentation._internal import apis, errors
from llmledger.instrumentation._internal.apis import ApiSpec, ResponseFacts
from llmledger.instrumentation._internal.finish import CallOutcome, console_line, price
from llmledger.instrumentation._internal.metrics import CallMetrics
from llmledger.instrumentation._internal.provider import Endpoint, endpoint_for
from llmledger.instrumentation._internal.span_attributes import (
    request_attributes,
    result_attributes,
    span_name,
)
from llmledger.instrumentation.pricing import CallCost, TokenUsage, cost_attributes

from . import api_payloads as P

OPENAI = endpoint_for("https://api.openai.com/v1", False)
LOCAL = endpoint_for("http://localhost:8000/v1", False)
MESSAGES = [{"role": "user", "content": "hi"}]
BASE = {
    "gen_ai.provider.name": "openai",
    "server.address": "api.openai.com",
    "server.port": 443,
    "llmledger.fallback": False,
    "llmledger.fallback.attempt": 0,
}


class Answer(BaseModel):
    text: str


# --- request → attributes -------------------------------------------------------------------

REQUESTS: list[tuple[str, ApiSpec, dict[str, Any], dict[str, Any]]] = [
    (
        "chat, every request setting",
        apis.CHAT_COMPLETIONS,
        {
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "stream": True,
            "temperature": 0.2,
            "top_p": 1,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "seed": 7,
            "n": 2,
            "max_completion_tokens": 100,
            "max_tokens": 50,  # the newer name wins
            "stop": "END",
            "service_tier": "flex",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
        },
        {
            "gen_ai.operation.name": "chat",
            "openai.api.type": "chat_completions",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.request.stream": True,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.top_p": 1.0,
            "gen_ai.request.presence_penalty": 0.5,
            "gen_ai.request.frequency_penalty": -0.5,
            "gen_ai.request.seed": 7,
            "gen_ai.request.choice.count": 2,
            "gen_ai.request.max_tokens": 100,
            "gen_ai.request.stop_sequences": ("END",),
            "openai.request.service_tier": "flex",
            "gen_ai.output.type": "json",
        },
    ),
    (
        "chat, the SDK's sentinels are not settings",
        apis.CHAT_COMPLETIONS,
        {
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "temperature": openai.NOT_GIVEN,
            "max_completion_tokens": openai.omit,
            "max_tokens": 64,
            "response_format": Answer,  # .parse(response_format=Model)
        },
        {
            "gen_ai.operation.name": "chat",
            "openai.api.type": "chat_completions",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.request.stream": False,
            "gen_ai.request.max_tokens": 64,
            "gen_ai.output.type": "json",
        },
    ),
    (
        "responses, in a conversation",
        apis.RESPONSES,
        {
            "model": "gpt-4.1",
            "input": "hi",
            "max_output_tokens": 500,
            "text": {"format": {"type": "text"}},
            "conversation": {"id": "conv_68a1"},
        },
        {
            "gen_ai.operation.name": "chat",
            "openai.api.type": "responses",
            "gen_ai.request.model": "gpt-4.1",
            "gen_ai.request.stream": False,
            "gen_ai.request.max_tokens": 500,
            "gen_ai.output.type": "text",
            "gen_ai.conversation.id": "conv_68a1",
        },
    ),
    (
        "legacy completions",
        apis.COMPLETIONS,
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say", "max_tokens": 7, "stop": ["\n", "."]},
        {
            "gen_ai.operation.name": "text_completion",
            "openai.api.type": "completions",
            "gen_ai.request.model": "gpt-3.5-turbo-instruct",
            "gen_ai.request.stream": False,
            "gen_ai.request.max_tokens": 7,
            "gen_ai.request.stop_sequences": ("\n", "."),
        },
    ),
    (
        "embeddings",
        apis.EMBEDDINGS,
        {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"},
        {
            "gen_ai.operation.name": "embeddings",
            "openai.api.type": "embeddings",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.request.stream": False,
            "gen_ai.request.encoding_formats": ("base64",),
        },
    ),
    (
        "no model given: none is invented",
        apis.CHAT_COMPLETIONS,
        {"messages": MESSAGES, "temperature": True},  # a bool is no temperature
        {
            "gen_ai.operation.name": "chat",
            "openai.api.type": "chat_completions",
            "gen_ai.request.stream": False,
        },
    ),
]


@pytest.mark.parametrize(
    ("api", "kwargs", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request_attributes(api: ApiSpec, kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert request_attributes(api, OPENAI, kwargs, attribution={}) == {**BASE, **expected}


def test_request_attributes_carry_attribution_and_the_fallback_it_replaced() -> None:
    attrs = request_attributes(
        apis.CHAT_COMPLETIONS,
        LOCAL,
        {"model": "gpt-4.1-mini", "messages": MESSAGES},
        attribution={"tenant.id": "acme", "user.id": "u-7", "llmledger.feature": "lead_scoring"},
        origin=(2, "gpt-4.1", "RateLimitError"),
    )
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "openai.api.type": "chat_completions",
        "server.address": "localhost",
        "server.port": 8000,
        "gen_ai.request.model": "gpt-4.1-mini",
        "gen_ai.request.stream": False,
        "tenant.id": "acme",
        "user.id": "u-7",
        "llmledger.feature": "lead_scoring",
        "llmledger.fallback": True,
        "llmledger.fallback.attempt": 2,
        "llmledger.fallback.from_model": "gpt-4.1",
        "llmledger.fallback.from_error": "RateLimitError",
    }


def test_request_content_only_when_captured() -> None:
    kwargs = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert "gen_ai.input.messages" not in request_attributes(
        apis.CHAT_COMPLETIONS, OPENAI, kwargs, attribution={}
    )
    captured = request_attributes(apis.CHAT_COMPLETIONS, OPENAI, kwargs, attribution={}, capture_content=True)
    assert captured["gen_ai.input.messages"] == '[{"role":"user","content":"hi"}]'


def test_span_name() -> None:
    assert span_name(apis.CHAT_COMPLETIONS, "gpt-4o-mini") == "chat gpt-4o-mini"
    assert span_name(apis.EMBEDDINGS, None) == "embeddings"


def _is_attribute_value(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(item, str) for item in value)  # pyright: ignore[reportUnknownVariableType]
    return isinstance(value, (str, bool, int, float))


_ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_KWARG_NAMES = st.sampled_from(
    [
        "model", "messages", "input", "prompt", "stream", "temperature", "top_p", "seed", "n",
        "max_tokens", "max_completion_tokens", "max_output_tokens", "stop", "service_tier",
        "response_format", "text", "text_format", "encoding_format", "conversation", "presence_penalty",
        "frequency_penalty", "tools", "background",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    api=st.sampled_from([apis.CHAT_COMPLETIONS, apis.RESPONSES, apis.COMPLETIONS, apis.EMBEDDINGS]),
    kwargs=st.dictionaries(_KWARG_NAMES, _ANY_VALUE, max_size=8),
    capture=st.booleans(),
)
def test_any_request_gives_valid_attributes(api: ApiSpec, kwargs: dict[str, Any], capture: bool) -> None:
    """Whatever the app passes, the span gets only values OpenTelemetry can carry, and the contract's."""
    attrs = request_attributes(api, OPENAI, kwargs, attribution={"tenant.id": "t"}, capture_content=capture)
    assert all(_is_attribute_value(v) for v in attrs.values()), attrs
    assert attrs["gen_ai.operation.name"] == api.operation
    assert attrs["gen_ai.request.stream"] is (kwargs.get("stream") is True)
    assert ("gen_ai.request.model" in attrs) is isinstance(kwargs.get("model"), str)
    assert attrs["tenant.id"] == "t"


@pytest.mark.parametrize(
    ("seed", "recorded"), [(7, 7), (7.0, 7), (float("nan"), None), (float("inf"), None), (7.5, None)]
)
def test_a_seed_is_recorded_only_as_a_whole_number(seed: float, recorded: int | None) -> None:
    # Found by the property test above: int(nan) and int(inf) raise.
    attrs = request_attributes(
        apis.CHAT_COMPLETIONS, OPENAI, {"model": "m", "seed": seed}, attribution={}, capture_content=False
    )
    assert attrs.get("gen_ai.request.seed") == recorded
    assert type(attrs.get("gen_ai.request.seed")) is type(recorded)


# --- result → attributes, from the SDK's own response types -------------------------------------


def _facts(api: ApiSpec, response: Any, capture: bool = False) -> ResponseFacts:
    facts = ResponseFacts()
    api.apply_response(facts, response, capture)
    return facts


def test_chat_completion_result() -> None:
    body = P.chat_completion(usage=P.usage_chat(1200, 300, cached=1024, reasoning=128), service_tier="flex")
    facts = _facts(apis.CHAT_COMPLETIONS, ChatCompletion.model_validate(body))
    cost = CallCost(
        total=Decimal("0.000435"), input=Decimal("0.000255"), output=Decimal("0.00018"), source="custom"
    )
    assert result_attributes(facts, facts.usage, cost) == {
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "gen_ai.response.finish_reasons": ("stop",),
        "openai.response.service_tier": "flex",
        "openai.response.system_fingerprint": "fp_44709d6fcb",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.reasoning.output_tokens": 128,
        "gen_ai.usage.cost": 0.000435,
        "llmledger.cost.input": 0.000255,
        "llmledger.cost.output": 0.00018,
        "llmledger.cost.source": "custom",
    }


def test_responses_result() -> None:
    facts = _facts(
        apis.RESPONSES, Response.model_validate(P.response(usage=P.response_usage(36, 87, cached=6)))
    )
    assert result_attributes(facts, facts.usage, None) == {
        "gen_ai.response.model": "gpt-4.1-2025-04-14",
        "gen_ai.response.id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "gen_ai.response.finish_reasons": ("stop",),
        "openai.response.service_tier": "default",
        "gen_ai.usage.input_tokens": 36,
        "gen_ai.usage.output_tokens": 87,
        "gen_ai.usage.cache_read.input_tokens": 6,
    }


def test_completion_and_embedding_results() -> None:
    facts = _facts(apis.COMPLETIONS, Completion.model_validate(P.completion()))
    assert result_attributes(facts, facts.usage, None) == {
        "gen_ai.response.model": "gpt-3.5-turbo-instruct",
        "gen_ai.response.id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "gen_ai.response.finish_reasons": ("length",),
        "openai.response.system_fingerprint": "fp_44709d6fcb",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 7,
    }
    facts = _facts(apis.EMBEDDINGS, CreateEmbeddingResponse.model_validate(P.embedding(prompt_tokens=8)))
    assert result_attributes(facts, facts.usage, None) == {
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 8,
        "gen_ai.usage.output_tokens": 0,
    }


def test_streamed_result_with_its_text_captured() -> None:
    facts = ResponseFacts()
    for body in P.chat_chunks(["Hel", "lo"], usage=P.usage_chat(12, 2)):
        apis.CHAT_COMPLETIONS.apply_chunk(facts, ChatCompletionChunk.model_validate(body))
    attrs = result_attributes(facts, facts.usage, None, time_to_first_chunk_s=0.25, capture_content=True)
    assert attrs == {
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-stream-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "openai.response.service_tier": "default",
        "openai.response.system_fingerprint": "fp_44709d6fcb",
        "gen_ai.response.time_to_first_chunk": 0.25,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.output.messages": '[{"role":"assistant","content":"Hello"}]',
    }
    assert facts.output_messages is None  # read, not written


def test_failed_call_without_response() -> None:
    assert result_attributes(ResponseFacts(), None, None, error_type="RateLimitError") == {
        "error.type": "RateLimitError"
    }


def test_estimated_counts_are_flagged() -> None:
    usage = TokenUsage(input_tokens=9, output_tokens=3, estimated=True)
    assert result_attributes(ResponseFacts(), usage, None) == {
        "gen_ai.usage.input_tokens": 9,
        "gen_ai.usage.output_tokens": 3,
        "llmledger.usage.estimated": True,
    }


_REPORTED = (
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.booleans() | st.text(max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(prompt=_REPORTED, completion=_REPORTED, cached=_REPORTED, reasoning=_REPORTED)
def test_any_reported_usage_gives_counts_or_nothing(
    prompt: Any, completion: Any, cached: Any, reasoning: Any
) -> None:
    """Whatever numbers a provider sends, a count is on the span exactly when the SDK made an integer of it."""
    usage = CompletionUsage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=None,
        prompt_tokens_details=PromptTokensDetails.model_construct(cached_tokens=cached),
        completion_tokens_details=CompletionTokensDetails.model_construct(reasoning_tokens=reasoning),
    )
    body = ChatCompletion.model_validate(P.chat_completion()).model_copy(update={"usage": usage})
    facts = _facts(apis.CHAT_COMPLETIONS, body)
    attrs = result_attributes(facts, facts.usage, None)

    def count(value: Any, *, zero_is_none: bool = False) -> int | None:
        # The SDK's own parsing may turn a field into an int (True into 1): what it holds counts.
        if type(value) is not int or (zero_is_none and value == 0):
            return None
        return value

    details = (usage.prompt_tokens_details, usage.completion_tokens_details)
    assert attrs.get("gen_ai.usage.input_tokens") == count(usage.prompt_tokens)
    assert attrs.get("gen_ai.usage.output_tokens") == count(usage.completion_tokens)
    assert attrs.get("gen_ai.usage.cache_read.input_tokens") == count(
        getattr(details[0], "cached_tokens", None), zero_is_none=True
    )
    assert attrs.get("gen_ai.usage.reasoning.output_tokens") == count(
        getattr(details[1], "reasoning_tokens", None), zero_is_none=True
    )
    assert all(_is_attribute_value(v) for v in attrs.values())


def test_cost_attributes_are_the_public_ones() -> None:
    cost = CallCost(total=Decimal("0.1"), input=Decimal("0.04"), output=Decimal("0.06"), source="price_table")
    assert cost_attributes(cost) == {
        "gen_ai.usage.cost": 0.1,
        "llmledger.cost.input": 0.04,
        "llmledger.cost.output": 0.06,
        "llmledger.cost.source": "price_table",
    }


# --- the "call finished" step's consumers -------------------------------------------------------


def _outcome(**changes: Any) -> CallOutcome:
    outcome = CallOutcome(
        operation="chat",
        endpoint=OPENAI,
        request_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        tenant="acme",
        error_type=None,
        usage=TokenUsage(input_tokens=1200, output_tokens=300, cached_input_tokens=1024),
        cost=CallCost(
            total=Decimal("0.000435"), input=Decimal("0.000255"), output=Decimal("0.00018"), source="custom"
        ),
        priced=True,
        duration_ns=1_234_000_000,
        time_to_first_chunk_ns=None,
        held=False,
        unestimated=False,
    )
    return outcome._replace(**changes)


def test_console_line() -> None:
    assert console_line(_outcome()) == (
        "[llmledger] chat gpt-4o-mini-2024-07-18 in=1200 (cached 1024) out=300 $0.000435 1234ms tenant=acme\n"
    )
    unknown = _outcome(usage=None, cost=None, priced=False, tenant=None, error_type="APITimeoutError")
    assert console_line(unknown) == (
        "[llmledger] chat gpt-4o-mini-2024-07-18 tokens=? $? (unpriced) 1234ms tenant=- ERROR APITimeoutError\n"
    )


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    # A histogram's sum, a counter's value.
                    value = (
                        point.sum
                        if isinstance(point, HistogramDataPoint)
                        else cast(NumberDataPoint, point).value
                    )
                    out.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return out


def test_one_recorder_records_every_metric_of_a_call() -> None:
    reader = InMemoryMetricReader()
    metrics = CallMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    metrics.record(_outcome(time_to_first_chunk_ns=250_000_000))
    metrics.record(
        _outcome(operation="embeddings", usage=TokenUsage(input_tokens=8, output_tokens=0), cost=None)
    )
    metrics.record(_outcome(usage=None, cost=None, priced=False, held=True, unestimated=True))
    call = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    embeddings = {**call, "gen_ai.operation.name": "embeddings"}
    assert _points(reader) == {
        "gen_ai.client.operation.duration": [(call, 1.234 * 2), (embeddings, 1.234)],
        "gen_ai.client.operation.time_to_first_chunk": [(call, 0.25)],
        "gen_ai.client.token.usage": [
            ({**call, "gen_ai.token.type": "input"}, 1200),
            ({**call, "gen_ai.token.type": "output"}, 300),
            ({**embeddings, "gen_ai.token.type": "input"}, 8),  # embeddings generate no output
        ],
        "llmledger.client.cost": [(call, 0.000435)],
        "llmledger.client.unpriced_calls": [(embeddings, 1)],
        "llmledger.client.unestimated_calls": [(call, 1)],
    }


def test_tenant_on_metrics_only_when_enabled() -> None:
    reader = InMemoryMetricReader()
    CallMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"), tenant=True).record(_outcome())
    assert all(attrs.get("tenant.id") == "acme" for points in _points(reader).values() for attrs, _ in points)


def test_a_failing_price_book_costs_only_the_price(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLMLEDGER_RAISE_INTERNAL_ERRORS", "0")
    errors.reset_internal_error_counts()

    class ExplodingPrices:
        def price_call(self, *args: Any, **kwargs: Any) -> CallCost | None:
            raise ArithmeticError("bad price row")

    usage = TokenUsage(input_tokens=1, output_tokens=1)
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        assert price(ExplodingPrices(), "openai", "gpt-4o-mini", usage, None) is None
        assert price(ExplodingPrices(), "openai", "gpt-4o-mini", usage, None) is None
    assert errors.internal_error_counts() == {"pricing": 2}  # counted every time
    assert len(caplog.records) == 1  # logged once
    assert price(None, "openai", "gpt-4o-mini", usage, None) is None  # no price book: unknown, not 0


def test_a_failing_price_book_fails_loudly_under_tests() -> None:
    class ExplodingPrices:
        def price_call(self, *args: Any, **kwargs: Any) -> CallCost | None:
            raise ArithmeticError("bad price row")

    with pytest.raises(ArithmeticError):
        price(ExplodingPrices(), "openai", "gpt-4o-mini", TokenUsage(input_tokens=1, output_tokens=1), None)


def test_endpoint_is_part_of_the_metric_set() -> None:
    reader = InMemoryMetricReader()
    metrics = CallMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    azure = Endpoint("azure.ai.openai", "acme.openai.azure.com", 443)
    metrics.record(_outcome(endpoint=azure, cost=None, priced=False))
    [(attrs, _)] = _points(reader)["gen_ai.client.operation.duration"]
    assert attrs["gen_ai.provider.name"] == "azure.ai.openai"
    assert attrs["server.address"] == "acme.openai.azure.com"
