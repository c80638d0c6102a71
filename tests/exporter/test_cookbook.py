"""Every SQL block in docs/sql-cookbook.md runs against a seeded store (and answers correctly where checked)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.store import run_query

from .test_report import CALLS, seed_calls

COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "sql-cookbook.md"
BLOCKS = re.findall(r"## (.+?)\n.*?```sql\n(.+?)```", COOKBOOK.read_text(), flags=re.S)


def test_cookbook_has_the_questions_teams_ask() -> None:
    titles = " | ".join(t for t, _ in BLOCKS).lower()
    for topic in (
        "per-user totals",
        "daily cost by model",
        "most expensive operations",
        "hourly cost",
        "per conversation",
    ):
        assert topic in titles
    assert len(BLOCKS) >= 10


@pytest.fixture(params=["own traces", "shared traces"])
def seeded(request: pytest.FixtureRequest, config: StoreConfig, store_client: Client) -> StoreConfig:
    """The same calls shaped both ways: each call its own trace (an app without a
    web-framework span), or the calls of a request under one request span."""
    return seed_calls(config, store_client, shared_traces=request.param == "shared traces")


@pytest.mark.parametrize(("title", "sql"), BLOCKS, ids=[t for t, _ in BLOCKS])
def test_cookbook_query_runs_and_answers_alike_both_ways(
    config: StoreConfig, store_client: Client, title: str, sql: str
) -> None:
    """Raises if the SQL is wrong for the schema; gives the same rows whether or not calls share traces."""
    answers = []
    for shared in (False, True):
        seed_calls(config, store_client, shared_traces=shared)
        client_db = store_client.database
        store_client.database = config.database
        try:
            answers.append(run_query(store_client, sql, settings={"readonly": 1}).result_rows)
        finally:
            store_client.database = client_db
        for table in ("otel_traces", "llm_call_rows", "llm_usage_hourly", "llm_usage_daily", "llm_fallbacks"):
            store_client.command(f"TRUNCATE TABLE `{config.database}`.{table}")
    own, shared_rows = answers
    if "TraceId" not in sql.split("FROM")[0]:  # trace ids differ between the two seedings
        assert own == shared_rows


def test_fallback_pairs_are_found_when_each_call_is_its_own_trace(
    seeded: StoreConfig, store_client: Client
) -> None:
    sql = dict(BLOCKS)["Fallbacks: how often, and from which model to which"]
    store_client.database = seeded.database
    try:
        rows = run_query(store_client, sql).named_results()
    finally:
        store_client.database = "default"
    assert [dict(r) for r in rows] == [
        {
            "failed_model": "gpt-4.1",
            "error": "RateLimitError",
            "fallback_model": "gpt-4.1-mini",
            "times": 1,
            "rescued": 1,
        }
    ]


def test_per_feature_cost_per_call_is_right(seeded: StoreConfig, store_client: Client) -> None:
    sql = dict(BLOCKS)["The most expensive operations (features) and their cost per call"]
    store_client.database = seeded.database
    try:
        rows = run_query(store_client, sql).named_results()
    finally:
        store_client.database = "default"
    got = {r["feature"]: (r["call_count"], Decimal(r["spend"])) for r in rows}
    want: dict[str, tuple[int, Decimal]] = {}
    for call in CALLS:
        calls, spend = want.get(call[2], (0, Decimal(0)))
        want[call[2]] = (calls + 1, spend + Decimal(call[10] or 0))
    assert got == want


def test_cost_per_conversation_is_right(seeded: StoreConfig, store_client: Client) -> None:
    sql = dict(BLOCKS)["Cost per conversation"]
    store_client.database = seeded.database
    try:
        rows = run_query(store_client, sql).named_results()
    finally:
        store_client.database = "default"
    got = {(r["tenant_id"], r["conversation_id"]): (r["calls"], r["spend"]) for r in rows}
    want: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for call in CALLS:
        if call[3]:
            calls, spend = want.get((call[0], call[3]), (0, Decimal(0)))
            want[(call[0], call[3])] = (calls + 1, spend + Decimal(call[10] or 0))
    assert {k: (c, Decimal(s or 0)) for k, (c, s) in got.items()} == want
