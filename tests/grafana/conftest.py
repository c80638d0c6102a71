"""Fixtures for the Grafana tests: the dashboards as files, one store, a seeded database per module.

The dashboards' queries are expanded by :mod:`grafana.panel_sql` exactly as the ClickHouse
plugin expands them and run on the embedded ClickHouse engine (chDB through
clickhouse-connect, as the product opens it), or on ``LLMLEDGER_TEST_CLICKHOUSE_URL``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from grafana.panel_sql import ALL, QueryContext, VariableValue, expand
from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import run_command, run_query
from tests.grafana.seed import RANGE_END, RANGE_START, SeedData, seed

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
SERVER_URL = os.environ.get("LLMLEDGER_TEST_CLICKHOUSE_URL")


def load_dashboards() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON of every provisioned dashboard."""
    dashboards = [json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARD_FILES]
    return {d["uid"]: d for d in dashboards}


DASHBOARDS = load_dashboards()


def panel(uid: str, title: str) -> dict[str, Any]:
    """The panel titled ``title`` on dashboard ``uid``."""
    matches = [p for p in DASHBOARDS[uid]["panels"] if p["title"] == title]
    assert len(matches) == 1, f"{uid} has {len(matches)} panels titled {title!r}"
    return matches[0]


def variable(uid: str, name: str) -> dict[str, Any]:
    matches = [v for v in DASHBOARDS[uid]["templating"]["list"] if v["name"] == name]
    assert len(matches) == 1
    return matches[0]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((GRAFANA / "provisioning" / "alerting" / "llmledger-alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_rule(uid: str) -> dict[str, Any]:
    (rule,) = [r for r in alert_rules() if r["uid"] == uid]
    return rule


# chDB hosts one engine path per process. tests/exporter opens its own session store; when
# it ran first in this process, its engine is the one to use (its path is in the error).
@pytest.fixture(scope="session")
def grafana_store(store_client: Client) -> Client:
    """The session's one store (tests/conftest.py): chDB hosts one engine path per process."""
    return store_client


@dataclass
class Seeded:
    """A database with the schema applied exactly as the product applies it, and the seed in it."""

    client: Client
    database: str
    data: SeedData

    def context(
        self,
        *,
        start: datetime = RANGE_START,
        end: datetime = RANGE_END,
        interval: timedelta = timedelta(hours=1),
        tenant: VariableValue = ALL,
        model: VariableValue = ALL,
        feature: VariableValue = ALL,
        **extra: VariableValue,
    ) -> QueryContext:
        calls = self.data.calls
        return QueryContext(
            start=start,
            end=end,
            interval=interval,
            variables={
                "datasource": "llmledger-clickhouse",
                "tenant": tenant,
                "model": model,
                "feature": feature,
                "warn_share": "0.8",
                "trace_id": "",
                **extra,
            },
            all_values={
                "tenant": sorted({c.tenant for c in calls if c.tenant}),
                "model": sorted({c.model for c in calls}),
                "feature": sorted({c.feature for c in calls}),
            },
        )

    def run(self, sql: str, context: QueryContext) -> list[dict[str, Any]]:
        """Expand ``sql`` as the plugin would in ``context``, run it, return rows as dicts.

        Queries name tables unqualified, as the datasource's default database resolves them.
        """
        self.client.database = self.database
        result = run_query(self.client, expand(sql, context))
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def panel_rows(self, uid: str, title: str, context: QueryContext) -> list[dict[str, Any]]:
        (target,) = panel(uid, title)["targets"]
        return self.run(target["rawSql"], context)

    def alert_rows(self, uid: str, *, end: datetime) -> list[dict[str, Any]]:
        """Run alert rule ``uid``'s query as Grafana would at ``end`` (no dashboard variables)."""
        rule = alert_rule(uid)
        (query,) = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        window = timedelta(seconds=query["relativeTimeRange"]["from"] - query["relativeTimeRange"]["to"])
        return self.run(query["model"]["rawSql"], QueryContext(start=end - window, end=end, variables={}))

    def sql(self, sql: str, parameters: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
        """Plain SQL against the seeded database (``{db}`` is its name), for cross-checks."""
        result = run_query(self.client, sql.replace("{db}", f"`{self.database}`"), parameters=parameters)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


@pytest.fixture(scope="module")
def seeded(grafana_store: Client, request: pytest.FixtureRequest) -> Iterator[Seeded]:
    """A fresh database for the test module, migrated by the product's migrations and seeded."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    # Only the database name and layout matter to the migrations; the client is the store.
    config = StoreConfig(
        url=SERVER_URL or "chdb:///grafana-tests", database=f"g_{module}_{uuid.uuid4().hex[:8]}"
    )
    apply_migrations(grafana_store, config)
    data = seed(grafana_store, config.database)
    yield Seeded(grafana_store, config.database, data)
    run_command(grafana_store, f"DROP DATABASE IF EXISTS `{config.database}`")


def only(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]
