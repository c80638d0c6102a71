"""Every SQL block in docs/sql-cookbook.md runs against a seeded store (and answers correctly where checked)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.store import run_query

from .test_report import CALLS, seeded  # noqa: F401 - the seeded-store fixture

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


@pytest.mark.parametrize(("title", "sql"), BLOCKS, ids=[t for t, _ in BLOCKS])
def test_cookbook_query_runs(seeded: StoreConfig, store_client: Client, title: str, sql: str) -> None:  # noqa: F811
    """Raises if the SQL is wrong for the schema (the seeded data is dated, so windows may be empty)."""
    client_db = store_client.database
    store_client.database = seeded.database
    try:
        run_query(store_client, sql, settings={"readonly": 1})
    finally:
        store_client.database = client_db


def test_per_feature_cost_per_call_is_right(seeded: StoreConfig, store_client: Client) -> None:  # noqa: F811
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


def test_cost_per_conversation_is_right(seeded: StoreConfig, store_client: Client) -> None:  # noqa: F811
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
