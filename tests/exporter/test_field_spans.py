"""Spans from other GenAI instrumentations, as OTLP, land in llm_calls with the right tokens,
model, provider and attribution, and are priced from model_prices when they carry no cost."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from genai_prices import Usage, calc_price

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.prices import write_prices
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.instrumentation.pricing import PriceBook, PriceRow, parse_price_file

OPENLLMETRY_CHAT: dict[str, Any] = {
    "llm.request.type": "chat",
    "gen_ai.system": "OpenAI",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.prompt_tokens": 1000,
    "gen_ai.usage.completion_tokens": 200,
    "llm.usage.total_tokens": 1200,
    "gen_ai.openai.api_base": "https://api.openai.com/v1/",
    "llm.is_streaming": True,
    "traceloop.association.properties.user_id": "u-ollm",
    "traceloop.association.properties.tenant_id": "tenant-ollm",
    "gen_ai.prompt.0.role": "user",
}
OPENLLMETRY_EMBEDDING: dict[str, Any] = {
    "llm.request.type": "embedding",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "text-embedding-3-small",
    "gen_ai.response.model": "text-embedding-3-small",
    "gen_ai.usage.prompt_tokens": 5000,
}
CONTRIB_V2_OLD: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.id": "chatcmpl-1",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 2000,
    "gen_ai.usage.output_tokens": 100,
    "gen_ai.openai.response.service_tier": "default",
    "server.address": "api.openai.com",
}
CONTRIB_V2_NEW: dict[str, Any] = {
    **{k: v for k, v in CONTRIB_V2_OLD.items() if k != "gen_ai.system"},
    "gen_ai.provider.name": "openai",
    "gen_ai.usage.cache_read.input_tokens": 1536,
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2099-01-01",  # a dated name only the base model is priced under
    "gen_ai.response.id": "chatcmpl-2",
}
OPENLIT: dict[str, Any] = {
    "gen_ai.system": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4.1",
    "gen_ai.response.model": "gpt-4.1-2025-04-14",
    "gen_ai.usage.input_tokens": 300,
    "gen_ai.usage.output_tokens": 40,
    "gen_ai.usage.total_tokens": 340,
    "gen_ai.usage.cost": 0.00092,
    "gen_ai.request.user": "u-lit",
    "gen_ai.server.ttft": 0.2,
}
UNPRICED: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "ft:acme-private-model",
    "gen_ai.usage.input_tokens": 10,
    "gen_ai.usage.output_tokens": 10,
}


def genai_cost(model: str, input_tokens: int, output_tokens: int, cached: int = 0) -> Decimal:
    """What genai-prices itself charges: the oracle the store's pricing must agree with."""
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached)
    return calc_price(usage, model_ref=model, provider_id="openai").total_price


@pytest.fixture
def priced(config: StoreConfig, store_client: Client, bundled_prices: list[PriceRow]) -> StoreConfig:
    write_prices(store_client, config.database, bundled_prices)
    return config


def land(
    make_recorder,
    to_otlp,
    store_client: Client,
    config: StoreConfig,
    spans: list[tuple[str, dict[str, Any]]],
    resource: dict[str, str] | None = None,
) -> None:
    recorder = make_recorder(resource or {"service.name": "field-app"}, "field.instrumentation")
    for name, attributes in spans:
        recorder.call(name, attributes)
    rows = SpanRows()
    rows.add_otlp(to_otlp(recorder.finished()))
    SpanWriter(store_client, config.database).write(rows)


def calls_by_model(query, config: StoreConfig) -> dict[str, dict[str, Any]]:
    return {row["request_model"]: row for row in query(f"SELECT * FROM {config.database}.llm_calls")}


def test_openllmetry_spans_are_understood_and_priced(
    make_recorder, to_otlp, store_client, priced, query
) -> None:
    land(
        make_recorder,
        to_otlp,
        store_client,
        priced,
        [("openai.chat", OPENLLMETRY_CHAT), ("openai.embeddings", OPENLLMETRY_EMBEDDING)],
    )
    calls = calls_by_model(query, priced)

    chat = calls["gpt-4o-mini"]
    assert (chat["provider"], chat["operation"]) == ("openai", "chat")
    assert chat["response_model"] == "gpt-4o-mini-2024-07-18"
    assert (chat["input_tokens"], chat["output_tokens"], chat["cached_input_tokens"]) == (1000, 200, 0)
    assert (chat["tenant_id"], chat["user_id"]) == ("tenant-ollm", "u-ollm")
    assert chat["stream"] is True
    assert chat["cost_usd"] == genai_cost("gpt-4o-mini", 1000, 200)
    assert chat["cost_source"] == "model_prices:genai-prices"

    embedding = calls["text-embedding-3-small"]
    assert embedding["operation"] == "embeddings"
    assert embedding["input_tokens"] == 5000
    assert embedding["cost_usd"] == genai_cost("text-embedding-3-small", 5000, 0)


def test_contrib_openai_v2_old_and_new_names(make_recorder, to_otlp, store_client, priced, query) -> None:
    land(
        make_recorder,
        to_otlp,
        store_client,
        priced,
        [("chat gpt-4o", CONTRIB_V2_OLD), ("chat gpt-4o-mini", CONTRIB_V2_NEW)],
        resource={"service.name": "svc", "tenant.id": "from-resource"},
    )
    calls = calls_by_model(query, priced)

    old = calls["gpt-4o"]
    assert (old["provider"], old["operation"], old["response_model"]) == (
        "openai",
        "chat",
        "gpt-4o-2024-08-06",
    )
    assert (old["input_tokens"], old["output_tokens"]) == (2000, 100)
    assert old["tenant_id"] == "from-resource"
    assert old["cost_usd"] == genai_cost("gpt-4o-2024-08-06", 2000, 100)

    new = calls["gpt-4o-mini"]
    assert new["provider"] == "openai"
    assert (new["input_tokens"], new["cached_input_tokens"]) == (2000, 1536)
    # Priced as gpt-4o-mini: the date suffix is dropped when only the base name has a price.
    assert new["cost_usd"] == genai_cost("gpt-4o-mini", 2000, 100, cached=1536)


def test_openlit_reported_cost_is_kept_exactly(make_recorder, to_otlp, store_client, priced, query) -> None:
    land(
        make_recorder,
        to_otlp,
        store_client,
        priced,
        [("chat gpt-4.1", OPENLIT)],
        resource={"service.name": "lit", "telemetry.sdk.name": "openlit"},
    )
    (call,) = query(f"SELECT * FROM {priced.database}.llm_calls")
    assert (call["provider"], call["operation"], call["user_id"]) == ("openai", "chat", "u-lit")
    assert (call["input_tokens"], call["output_tokens"]) == (300, 40)
    assert call["cost_usd"] == Decimal("0.00092")
    assert call["cost_source"] == "reported"


def test_unknown_model_stays_unpriced_never_zero(make_recorder, to_otlp, store_client, priced, query) -> None:
    land(make_recorder, to_otlp, store_client, priced, [("chat ft", UNPRICED)])
    (call,) = query(f"SELECT cost_usd, cost_source FROM {priced.database}.llm_calls")
    assert call == {"cost_usd": None, "cost_source": "unpriced"}
    (hour,) = query(
        f"SELECT sum(calls) AS calls, sum(unpriced_calls) AS unpriced FROM {priced.database}.llm_usage_hourly"
    )
    assert hour == {"calls": 1, "unpriced": 1}


def test_without_prices_synced_nothing_is_priced(make_recorder, to_otlp, store_client, config, query) -> None:
    land(make_recorder, to_otlp, store_client, config, [("openai.chat", OPENLLMETRY_CHAT)])
    assert query(f"SELECT cost_usd, cost_source FROM {config.database}.llm_calls") == [
        {"cost_usd": None, "cost_source": "unpriced"}
    ]


def test_a_custom_price_outranks_genai_prices(make_recorder, to_otlp, store_client, priced, query) -> None:
    custom = parse_price_file(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o-mini-2024-07-18"\ninput = 1.5\noutput = 2.25\n'
    )
    write_prices(store_client, priced.database, PriceBook(custom).price_rows())
    land(make_recorder, to_otlp, store_client, priced, [("openai.chat", OPENLLMETRY_CHAT)])
    (call,) = query(f"SELECT cost_usd, cost_source FROM {priced.database}.llm_calls")
    assert call["cost_usd"] == (1000 * Decimal("1.5") + 200 * Decimal("2.25")) / 1_000_000
    assert call["cost_source"] == "model_prices:custom"


# --- dialects, cache writes, reported costs (migration 0011) ----------------------------------

ANTHROPIC_CACHE_WRITE: dict[str, Any] = {
    # OpenLLMetry's anthropic instrumentation: input includes cache reads and writes.
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "Anthropic",
    "gen_ai.request.model": "claude-sonnet-4-20250514",
    "gen_ai.response.model": "claude-sonnet-4-20250514",
    "gen_ai.response.id": "msg_01",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.cache_creation_input_tokens": 600,
    "gen_ai.usage.cache_read_input_tokens": 200,
    "gen_ai.usage.output_tokens": 50,
    "gen_ai.user": "u-anthropic",
    "gen_ai.is_streaming": True,
}
OPENINFERENCE: dict[str, Any] = {
    "openinference.span.kind": "LLM",
    "llm.provider": "openai",
    "llm.system": "openai",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.token_count.prompt": 1200,
    "llm.token_count.completion": 30,
    "llm.token_count.total": 1230,
    "llm.token_count.prompt_details.cache_read": 1024,
    "user.id": "u-oi",
    "session.id": "s-oi",
}
OPENINFERENCE_EMBEDDING: dict[str, Any] = {
    "openinference.span.kind": "EMBEDDING",
    "llm.provider": "azure",
    "embedding.model_name": "text-embedding-3-small",
    "llm.model_name": "text-embedding-3-small",
    "llm.token_count.prompt": 40,
}


def anthropic_cost(input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> Decimal:
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    return calc_price(usage, model_ref="claude-sonnet-4-20250514", provider_id="anthropic").total_price


def test_cache_writes_are_counted_and_priced_at_their_rate(
    make_recorder, to_otlp, store_client, priced, query
) -> None:
    current = {**ANTHROPIC_CACHE_WRITE, "gen_ai.request.model": "claude-sonnet-4-0"}
    del current["gen_ai.usage.cache_creation_input_tokens"]
    current["gen_ai.usage.cache_creation.input_tokens"] = 600  # the semconv spelling
    current["gen_ai.response.model"] = "claude-sonnet-4-0"
    current["gen_ai.response.id"] = "msg_02"  # another call (the same id would be the same call)
    land(
        make_recorder,
        to_otlp,
        store_client,
        priced,
        [("anthropic.chat", ANTHROPIC_CACHE_WRITE), ("chat claude", current)],
    )
    calls = calls_by_model(query, priced)
    for call in calls.values():
        assert call["provider"] == "anthropic"
        assert (call["input_tokens"], call["cached_input_tokens"], call["cache_write_input_tokens"]) == (
            1000,
            200,
            600,
        )
        # 200 uncached x $3 + 600 written x $3.75 + 200 read x $0.30 + 50 out x $15, per million
        assert call["cost_usd"] == anthropic_cost(1000, 50, 200, 600) == Decimal("0.00366")
    old = calls["claude-sonnet-4-20250514"]
    assert (old["user_id"], old["stream"]) == ("u-anthropic", True)
    (hour,) = query(
        f"SELECT sum(cache_write_input_tokens) AS w, sum(cost_usd) AS cost FROM {priced.database}.llm_usage_hourly"
    )
    assert hour == {"w": 1200, "cost": Decimal("0.00732")}
    (day,) = query(f"SELECT sum(cache_write_input_tokens) AS w FROM {priced.database}.llm_usage_daily")
    assert day == {"w": 1200}


def test_openinference_spans_reach_llm_calls(make_recorder, to_otlp, store_client, priced, query) -> None:
    land(
        make_recorder,
        to_otlp,
        store_client,
        priced,
        [("ChatCompletion", OPENINFERENCE), ("CreateEmbeddings", OPENINFERENCE_EMBEDDING)],
    )
    calls = calls_by_model(query, priced)
    chat = calls["gpt-4o-mini-2024-07-18"]
    assert (chat["provider"], chat["operation"], chat["response_model"]) == (
        "openai",
        "chat",
        "gpt-4o-mini-2024-07-18",
    )
    assert (chat["input_tokens"], chat["cached_input_tokens"], chat["output_tokens"]) == (1200, 1024, 30)
    assert (chat["user_id"], chat["session_id"]) == ("u-oi", "s-oi")
    assert chat["cost_usd"] == genai_cost("gpt-4o-mini-2024-07-18", 1200, 30, cached=1024)
    embedding = calls["text-embedding-3-small"]
    assert (embedding["provider"], embedding["operation"], embedding["input_tokens"]) == (
        "azure.ai.openai",
        "embeddings",
        40,
    )


@pytest.mark.parametrize(
    ("extra", "cost", "source"),
    [
        # OpenLIT's 0 for a model it cannot price is not a price: model_prices prices it.
        ({"gen_ai.usage.cost": 0.0}, "list", "model_prices:genai-prices (reported 0 ignored)"),
        # llmledger's own 0 is a price (a free model in the user's price file).
        ({"gen_ai.usage.cost": 0.0, "llmledger.cost.source": "custom"}, "0", "custom"),
        # A provider's own 0 is a price too.
        (
            {"gen_ai.usage.cost.amount": 0.0, "gen_ai.usage.cost.source": "provider"},
            "0",
            "provider",
        ),
        # Proposed semconv cost attributes, in USD.
        ({"gen_ai.usage.cost.amount": 0.00123, "gen_ai.usage.cost.currency": "USD"}, "0.00123", "reported"),
        # pydantic-ai / logfire.
        ({"operation.cost": 0.00042}, "0.00042", "reported"),
        # A cost in euros never enters a USD sum: priced from model_prices, and said so.
        (
            {"gen_ai.usage.cost.amount": 0.5, "gen_ai.usage.cost.currency": "EUR"},
            "list",
            "model_prices:genai-prices (reported EUR ignored)",
        ),
    ],
)
def test_reported_costs(
    make_recorder, to_otlp, store_client, priced, query, extra: dict[str, Any], cost: str, source: str
) -> None:
    span = {**OPENLIT, "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini"}
    del span["gen_ai.usage.cost"]
    land(make_recorder, to_otlp, store_client, priced, [("chat gpt-4o-mini", {**span, **extra})])
    (call,) = query(f"SELECT cost_usd, cost_source FROM {priced.database}.llm_calls")
    want = genai_cost("gpt-4o-mini", 300, 40) if cost == "list" else Decimal(cost)
    assert call == {"cost_usd": want, "cost_source": source}
    (hour,) = query(
        f"SELECT sum(cost_usd) AS cost, sum(unpriced_calls) AS u FROM {priced.database}.llm_usage_hourly"
    )
    assert hour == {"cost": want, "u": 0}


def test_a_foreign_currency_without_a_price_stays_unpriced(
    make_recorder, to_otlp, store_client, priced, query
) -> None:
    span = {**UNPRICED, "gen_ai.usage.cost.amount": 0.5, "gen_ai.usage.cost.currency": "eur"}
    land(make_recorder, to_otlp, store_client, priced, [("chat ft", span)])
    (call,) = query(f"SELECT cost_usd, cost_source FROM {priced.database}.llm_calls")
    assert call == {"cost_usd": None, "cost_source": "unpriced (reported EUR ignored)"}
