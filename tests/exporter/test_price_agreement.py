"""The app and the store price a call alike: for generated usages across the models, providers
and cache shapes of the price book, the cost llmledger's instrumentation puts on a span equals,
to the last digit, the cost llm_calls computes for the same span sent without a cost.

Covered: every model with flat per-token prices in genai-prices' bundled data as
``llmledger prices sync`` loads it, under every semconv provider name that maps to its
provider, with and without cache reads and writes. Not yet covered: prices that change
with the input size (tiers, long context), the service tier or the time of day —
``model_prices`` holds one price per model (docs/pricing.md).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.prices import genai_price_rows, write_prices
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import run_command, run_query
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.instrumentation.pricing import PROVIDER_IDS, PriceBook, TokenUsage

from .conftest import Recorder

BOOK = PriceBook()
NAMES: dict[str, list[str]] = {}
for _name, _provider_id in PROVIDER_IDS.items():
    NAMES.setdefault(_provider_id, []).append(_name)


def _flat(provider: str, model: str) -> bool:
    explanation = BOOK.explain(provider, model)
    return (
        explanation.source is not None
        and len(explanation.bands) == 1
        and not any("time of day" in step or "fallback" in step for step in explanation.steps)
    )


# (semconv provider, model) pairs the store can price by exact name and the app prices flat.
MODELS = sorted(
    {
        (name, row.model)
        for row in genai_price_rows()
        for name in NAMES.get(row.provider, [row.provider])
        if row.model == row.model.lower() and _flat(name, row.model)
    }
)


@st.composite
def usages(draw: st.DrawFn) -> tuple[str, str, TokenUsage]:
    provider, model = draw(st.sampled_from(MODELS))
    input_tokens = draw(st.integers(0, 2_000_000))
    cached = draw(st.one_of(st.just(0), st.integers(0, input_tokens)))
    written = draw(st.one_of(st.just(0), st.integers(0, input_tokens - cached)))
    output = draw(st.integers(0, 200_000))
    return (
        provider,
        model,
        TokenUsage(input_tokens, output, cached_input_tokens=cached, cache_write_tokens=written),
    )


def test_the_price_book_has_models_to_check() -> None:
    assert len(MODELS) > 100
    assert {provider for provider, _ in MODELS} >= {"openai", "anthropic", "azure.ai.openai", "mistral_ai"}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(usages(), min_size=1, max_size=40))
def test_span_cost_equals_view_cost(
    blank_config: StoreConfig, store_client: Client, calls: list[tuple[str, str, TokenUsage]]
) -> None:
    db = blank_config.database
    if not run_query(store_client, f"EXISTS DATABASE `{db}`").result_rows[0][0]:
        apply_migrations(store_client, blank_config)
        write_prices(store_client, db, genai_price_rows())
    run_command(store_client, f"TRUNCATE TABLE `{db}`.llm_call_rows")
    recorder = Recorder({"service.name": "agreement"}, "agreement")
    expected: dict[str, Decimal | None] = {}
    for index, (provider, model, usage) in enumerate(calls):
        cost = BOOK.price_call(provider, model, usage)
        expected[f"r{index}"] = cost.total if cost is not None else None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.id": f"r{index}",
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cached_input_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
        }
        recorder.call(f"chat {model}", attributes)
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, db).write(rows)
    got = {
        row[0]: row[1]
        for row in run_query(store_client, f"SELECT response_id, cost_usd FROM `{db}`.llm_calls").result_rows
    }
    assert got == expected
