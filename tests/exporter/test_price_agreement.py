"""Pricing is one thing: the app and the store charge a call alike, to the last digit.

For generated calls across every (provider, model) of the price book — genai-prices' bundled
data and a price file, as ``llmledger prices sync`` writes them to ``model_prices`` — on
every service tier the book prices apart (and some it does not), at times on both sides of
every date, time-of-day and input-size boundary the model's prices change at, for the
listed names, unlisted dated snapshots and longer names under prefix rules, with and
without cache reads, cache writes and reasoning: the cost llmledger's instrumentation puts
on the span (its pricing code and its cost attributes, through the store) and the cost
``llm_calls`` computes for the same span sent without a cost are identical; and an unpriced
call is unpriced in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.prices import write_prices
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import run_command, run_query
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.instrumentation.pricing import (
    PriceBook,
    PriceRow,
    TokenUsage,
    cost_attributes,
    parse_price_file,
)

from .conftest import Recorder

PRICE_FILE = """
[[price]]
provider = "openai"
model = "gpt-4.1-mini"
input = 0.3
cached_input = 0.075
output = 1.2

[[price]]
provider = "openai"
model = "gpt-4.1-mini"
service_tier = "priority"
input = 0.55
output = 2.2

[[price]]
provider = "openai"
model = "gpt-4.1-mini"
valid_from = 2026-03-01
input = 0.25
output = 1.0

[[price]]
provider = "anthropic"
model = "claude-sonnet-4-5"
input = 2.7
cached_input = 0.27
cache_write = 3.375
output = 13.5

[[price]]
provider = "openai"
model = "gpt-4o*"
service_tier = "flex"
input = 1.1
output = 4.4

[[price]]
provider = "self_hosted"
model = "our-long-context-model"
input = { base = 2.5, tiers = [{ start = 272000, price = 5 }] }
cached_input = { base = 0.25, tiers = [{ start = 272000, price = 0.5 }] }
output = { base = 15, tiers = [{ start = 272000, price = 22.5 }] }
"""

BOOK = PriceBook(parse_price_file(PRICE_FILE, "prices.toml"), azure_deployments={"prod-chat": "gpt-4o"})
ROWS = list(BOOK.price_rows())
USD_12 = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class Model:
    """One (provider, model) of the book with what its prices change with."""

    provider: str
    name: str
    tiers: tuple[str, ...]
    days: tuple[date, ...]
    seconds: tuple[int, ...]
    aboves: tuple[int, ...]
    prefix: bool
    """A prefix rule starts with this name."""


def _models(rows: list[PriceRow]) -> list[Model]:
    found: dict[tuple[str, str], list[PriceRow]] = {}
    for row in rows:
        found.setdefault((row.provider, row.model), []).append(row)
    models: list[Model] = []
    for (provider, name), mine in sorted(found.items()):
        days = {day for row in mine for day in (row.valid_from, row.valid_until) if day is not None}
        models.append(
            Model(
                provider,
                name,
                tuple(sorted({row.service_tier for row in mine} - {""})),
                tuple(sorted(days)),
                tuple(sorted({s for row in mine for s in (row.day_from, row.day_until)} - {0, 86400})),
                tuple(sorted({row.rates.input_tokens_above for row in mine} - {0})),
                any(row.prefix for row in mine),
            )
        )
    return models


MODELS = _models(ROWS)
# Where most of the pricing dimensions are, so that every run meets them.
RICH = [
    m for m in MODELS if m.tiers or m.days or m.seconds or m.aboves or m.provider == "self_hosted" or m.prefix
]


def test_the_book_has_every_dimension() -> None:
    assert len(MODELS) > 4000
    assert {m.provider for m in MODELS} >= {
        "openai",
        "anthropic",
        "azure.ai.openai",
        "azure.ai.inference",
        "gcp.gen_ai",
        "mistral_ai",
        "aws.bedrock",
        "x_ai",
        "self_hosted",
    }
    assert {tier for m in MODELS for tier in m.tiers} >= {"priority", "flex", "batch", "default", "auto"}
    assert any(m.seconds for m in MODELS)  # DeepSeek's off-peak hours
    assert any(m.aboves for m in MODELS)  # long context
    assert any(m.days for m in MODELS)  # price changes
    assert {row.source for row in ROWS} == {"custom", "price_table"}
    assert {row.lookup for row in ROWS} == {"name", "dated", "compact", "prefix"}
    assert any(m.prefix for m in MODELS if m.provider == "openai")  # the price file's gpt-4o*
    assert any(row.rates.per_call for row in ROWS)
    assert any(row.rates.reasoning != row.rates.output for row in ROWS)


@dataclass(frozen=True, slots=True)
class Call:
    provider: str
    model: str
    tier: str | None
    at: datetime
    usage: TokenUsage


def _near(draw: st.DrawFn, values: tuple[int, ...], low: int, high: int) -> int:
    """A value on either side of one of ``values`` (a boundary), or anywhere in [low, high]."""
    if values and draw(st.booleans()):
        return max(low, min(high, draw(st.sampled_from(values)) + draw(st.integers(-1, 1))))
    return draw(st.integers(low, high))


@st.composite
def calls(draw: st.DrawFn) -> Call:
    model = draw(st.sampled_from(RICH) if draw(st.booleans()) else st.sampled_from(MODELS))
    name = model.name
    if model.prefix and draw(st.booleans()):
        # A longer name nothing lists, priced by a prefix rule (a fine-tune, a dated snapshot).
        name += draw(st.sampled_from(["x", "0514", "-20250514", ":acme::ft-1", "-latest"]))
    elif draw(st.integers(0, 5)) == 0:
        # A snapshot nothing lists: priced as the app finds it (a rule, the snapshot fallback, nothing).
        name += draw(st.sampled_from(["-2099-01-01", "-20990101", "-2031-07-15", "-20310715"]))
    tier = draw(st.sampled_from([None, *model.tiers, "scale", "Priority"]))
    epoch = date(2024, 1, 1)
    day = epoch + timedelta(days=_near(draw, tuple((d - epoch).days for d in model.days), 0, 4 * 365))
    second = _near(draw, model.seconds, 0, 86_399)
    at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=second)
    input_tokens = _near(draw, model.aboves, 0, 2_000_000)
    cached = draw(st.one_of(st.just(0), st.integers(0, input_tokens)))
    written = draw(st.one_of(st.just(0), st.integers(0, input_tokens - cached)))
    output = draw(st.integers(0, 200_000))
    reasoning = draw(st.one_of(st.just(0), st.integers(0, output)))
    usage = TokenUsage(
        input_tokens,
        output,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
    )
    return Call(model.provider, name, tier, at, usage)


@pytest.fixture(scope="module")
def priced_store(store_client: Client, store_url: str) -> Iterator[StoreConfig]:
    config = StoreConfig(url=store_url, database="price_agreement")
    run_command(store_client, "DROP DATABASE IF EXISTS price_agreement")
    apply_migrations(store_client, config)
    write_prices(store_client, config.database, ROWS)
    yield config
    run_command(store_client, "DROP DATABASE IF EXISTS price_agreement")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(calls(), min_size=1, max_size=40))
def test_span_cost_equals_view_cost(
    priced_store: StoreConfig, store_client: Client, generated: list[Call]
) -> None:
    db = priced_store.database
    # Each example's calls are new: forget the calls (and the index they are found by).
    run_command(store_client, f"TRUNCATE TABLE `{db}`.llm_call_rows")
    run_command(store_client, f"TRUNCATE TABLE `{db}`.llm_call_index")
    recorder = Recorder({"service.name": "agreement"}, "llmledger.instrumentation")
    expected: dict[str, tuple[Decimal | None, str]] = {}
    for index, call in enumerate(generated):
        cost = BOOK.price_call(call.provider, call.model, call.usage, service_tier=call.tier, at=call.at)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": call.provider,
            "gen_ai.request.model": call.model,
            "gen_ai.usage.input_tokens": call.usage.input_tokens,
            "gen_ai.usage.output_tokens": call.usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": call.usage.cached_input_tokens,
            "gen_ai.usage.cache_creation.input_tokens": call.usage.cache_write_tokens,
            "gen_ai.usage.reasoning.output_tokens": call.usage.reasoning_tokens,
        }
        if call.tier is not None:
            attributes["openai.response.service_tier"] = call.tier
        start_ns = int(call.at.timestamp()) * 1_000_000_000
        # cost_usd keeps 12 decimals (a few of genai-prices' rates have more).
        total = cost.total.quantize(USD_12, ROUND_DOWN) if cost is not None else None
        source = {"custom": "model_prices:custom", "price_table": "model_prices:genai-prices"}
        expected[f"store-{index}"] = (total, source[cost.source] if cost is not None else "unpriced")
        recorder.call(
            f"chat {call.model}", {**attributes, "gen_ai.response.id": f"store-{index}"}, start_ns=start_ns
        )
        if cost is not None:
            # The same call as the app's span carries it: priced in the app.
            expected[f"app-{index}"] = (total, cost.source)
            recorder.call(
                f"chat {call.model}",
                {**attributes, "gen_ai.response.id": f"app-{index}", **cost_attributes(cost)},
                start_ns=start_ns,
            )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, db).write(rows)
    got = {
        row[0]: (row[1], row[2])
        for row in run_query(
            store_client, f"SELECT response_id, cost_usd, cost_source FROM `{db}`.llm_calls"
        ).result_rows
    }
    assert got == expected
