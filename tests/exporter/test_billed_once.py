"""One provider response, one row, one price: however many spans describe a call, in whichever
batches they arrive and however often a batch is replayed, llm_calls and both rollups count it
once, and the rollups equal llm_calls (migration 0012)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter

from .conftest import Recorder

START = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000_000_000

# llmledger's span of an Anthropic call made through an OpenAI-compatible client...
OURS: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-0",
    "gen_ai.response.model": "claude-sonnet-4-0",
    "gen_ai.response.id": "msg_0001",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.cache_creation.input_tokens": 600,
    "gen_ai.usage.output_tokens": 50,
    "gen_ai.usage.cost": 0.00501,
    "llmledger.cost.source": "price_table",
    "tenant.id": "acme",
    "user.id": "alice",
    "llmledger.feature": "lead_scoring",
}
# ... and the same response as the provider SDK's own tracing (or OpenLLMetry) describes it:
# no tenant, no cost, the older attribute names.
THEIRS: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "Anthropic",
    "gen_ai.request.model": "claude-sonnet-4-0",
    "gen_ai.response.id": "msg_0001",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.cache_creation_input_tokens": 600,
    "gen_ai.usage.output_tokens": 50,
}
MEASURES = (
    "calls",
    "errors",
    "fallbacks",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
    "estimated_calls",
)


def batch(spans: list[tuple[str, dict[str, Any], int]]) -> SpanRows:
    """Spans as each instrumentation's tracer records them: (scope, attributes, start offset ns)."""
    rows = SpanRows()
    for scope, attributes, offset in spans:
        recorder = Recorder({"service.name": "crm"}, scope)
        recorder.call(f"chat {attributes.get('gen_ai.request.model')}", attributes, start_ns=START + offset)
        rows.add_sdk_spans(recorder.finished())
    return rows


def calls(query, config: StoreConfig) -> list[dict[str, Any]]:
    return query(
        f"SELECT tenant_id, user_id, response_id, input_tokens, cache_write_input_tokens, cost_usd, cost_source "
        f"FROM {config.database}.llm_calls ORDER BY response_id, tenant_id"
    )


def assert_rollups_equal_llm_calls(query, config: StoreConfig) -> None:
    """Both rollups, grouped as they group, hold exactly what llm_calls holds."""
    db = config.database
    per_call = ", ".join(
        [
            "count() AS calls_",
            "countIf(NOT success) AS errors_",
            "countIf(is_fallback) AS fallbacks_",
            "sum(input_tokens) AS input_tokens_",
            "sum(cached_input_tokens) AS cached_input_tokens_",
            "sum(cache_write_input_tokens) AS cache_write_input_tokens_",
            "sum(output_tokens) AS output_tokens_",
            "sum(reasoning_tokens) AS reasoning_tokens_",
            "sum(ifNull(cost_usd, toDecimal128(0, 12))) AS cost_usd_",
            "countIf(cost_usd IS NULL AND success) AS unpriced_calls_",
            "countIf(tokens_estimated) AS estimated_calls_",
        ]
    )
    summed = ", ".join(f"sum({m}) AS {m}_" for m in MEASURES)  # an alias unlike the column

    def normal(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        # A group whose calls all moved elsewhere is all zeros: the same as no group.
        return {
            tuple(int(v) if isinstance(v, int) else v for v in row.values())
            for row in rows
            if any(row[m + "_"] for m in MEASURES)
        }

    hourly = query(
        f"SELECT hour, tenant_id, user_id, feature, provider, model, operation, {summed} "
        f"FROM {db}.llm_usage_hourly GROUP BY ALL"
    )
    from_calls = query(
        f"SELECT toStartOfHour(Timestamp, 'UTC') AS hour, tenant_id, user_id, feature, provider, "
        f"response_model AS model, operation, {per_call} FROM {db}.llm_calls GROUP BY ALL"
    )
    assert normal(hourly) == normal(from_calls)
    daily = query(
        f"SELECT day, tenant_id, feature, provider, model, operation, {summed} FROM {db}.llm_usage_daily GROUP BY ALL"
    )
    from_calls = query(
        f"SELECT toDate(Timestamp, 'UTC') AS day, tenant_id, feature, provider, response_model AS model, "
        f"operation, {per_call} FROM {db}.llm_calls GROUP BY ALL"
    )
    assert normal(daily) == normal(from_calls)


def test_two_spans_of_one_response_in_one_batch_are_one_call(
    config: StoreConfig, store_client: Client, query
) -> None:
    SpanWriter(store_client, config.database).write(
        batch(
            [
                ("opentelemetry.instrumentation.anthropic", THEIRS, 1000),
                ("llmledger.instrumentation", OURS, 0),
            ]
        )
    )
    assert calls(query, config) == [
        {
            "tenant_id": "acme",
            "user_id": "alice",
            "response_id": "msg_0001",
            "input_tokens": 1000,
            "cache_write_input_tokens": 600,
            "cost_usd": Decimal("0.00501"),
            "cost_source": "price_table",
        }
    ]
    assert_rollups_equal_llm_calls(query, config)


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours first", "theirs first"])
def test_spans_of_one_call_in_batches_minutes_apart_and_replayed_are_billed_once(
    config: StoreConfig, store_client: Client, query, ours_first: bool
) -> None:
    writer = SpanWriter(store_client, config.database)
    ours = batch([("llmledger.instrumentation", OURS, 0)])
    theirs = batch([("opentelemetry.instrumentation.anthropic", THEIRS, 2 * MINUTE)])
    other = batch([("llmledger.instrumentation", {**OURS, "gen_ai.response.id": "msg_0002"}, 5 * MINUTE)])
    first, second = (ours, theirs) if ours_first else (theirs, ours)
    writer.write(first)
    writer.write(other)
    writer.write(second)
    # Replays: the same batch with its token (a spool replayed after a crash), and again
    # under a new token (a writer that lost its token): the same spans change nothing.
    writer.write(second)
    writer.write(first, dedup_token="replayed-after-crash")
    writer.write(second, dedup_token="replayed-again")
    got = calls(query, config)
    assert [(c["response_id"], c["tenant_id"], c["cost_usd"]) for c in got] == [
        ("msg_0001", "acme", Decimal("0.00501")),
        ("msg_0002", "acme", Decimal("0.00501")),
    ]
    assert_rollups_equal_llm_calls(query, config)
    (totals,) = query(
        f"SELECT sum(calls) AS calls, sum(cost_usd) AS cost, sum(cache_write_input_tokens) AS written "
        f"FROM {config.database}.llm_usage_hourly"
    )
    assert totals == {"calls": 2, "cost": Decimal("0.01002"), "written": 1200}


def test_the_winner_is_ours_then_the_richest_whatever_the_order(
    config: StoreConfig, store_client: Client, query
) -> None:
    writer = SpanWriter(store_client, config.database)
    poor = {k: v for k, v in THEIRS.items() if k != "gen_ai.usage.cache_creation_input_tokens"}
    rich = {**THEIRS, "traceloop.association.properties.tenant_id": "globex"}
    writer.write(batch([("a.poor", poor, 0)]))
    writer.write(batch([("b.rich", rich, 0)]))
    writer.write(batch([("c.poor", poor, MINUTE)]))
    (call,) = calls(query, config)
    assert (call["tenant_id"], call["cache_write_input_tokens"]) == ("globex", 600)
    assert_rollups_equal_llm_calls(query, config)
    writer.write(batch([("llmledger.instrumentation", OURS, 0)]))
    (call,) = calls(query, config)
    assert (call["tenant_id"], call["cost_source"]) == ("acme", "price_table")
    assert_rollups_equal_llm_calls(query, config)


def test_spans_without_a_response_id_are_calls_of_their_own(
    config: StoreConfig, store_client: Client, query
) -> None:
    without_id = {k: v for k, v in OURS.items() if k != "gen_ai.response.id"}
    rows = batch([("llmledger.instrumentation", without_id, 0), ("llmledger.instrumentation", without_id, 0)])
    writer = SpanWriter(store_client, config.database)
    writer.write(rows)
    writer.write(rows, dedup_token="again")  # the same two spans: still two calls
    assert len(calls(query, config)) == 2
    assert_rollups_equal_llm_calls(query, config)


def test_upgrading_a_store_bills_the_calls_already_stored_once(
    blank_config: StoreConfig, store_client: Client, query
) -> None:
    apply_migrations(store_client, blank_config, target=11)
    writer = SpanWriter(store_client, blank_config.database)
    writer.write(batch([("opentelemetry.instrumentation.anthropic", THEIRS, 1000)]))
    writer.write(batch([("llmledger.instrumentation", OURS, 0)]))
    writer.write(batch([("llmledger.instrumentation", {**OURS, "gen_ai.response.id": "msg_0002"}, 0)]))
    (before,) = query(f"SELECT sum(calls) AS calls FROM {blank_config.database}.llm_usage_hourly")
    assert before == {"calls": 3}  # the old views counted the response twice

    apply_migrations(store_client, blank_config)
    got = calls(query, blank_config)
    assert [(c["response_id"], c["tenant_id"]) for c in got] == [("msg_0001", "acme"), ("msg_0002", "acme")]
    assert_rollups_equal_llm_calls(query, blank_config)
    # ... and new spans flow through the new views, still once per response.
    writer.write(
        batch([("opentelemetry.instrumentation.anthropic", {**THEIRS, "gen_ai.response.id": "msg_0002"}, 0)])
    )
    assert len(calls(query, blank_config)) == 2
    assert_rollups_equal_llm_calls(query, blank_config)
