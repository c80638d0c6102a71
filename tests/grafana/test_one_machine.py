"""Grafana on one machine: the dashboards read the embedded store through the collector.

The same seed is written twice: in-process into the session's store (where the other
dashboard tests read), and through the collector's ClickHouse HTTP interface, as the
read-write user, into the store the collector owns. Every panel and alert query, expanded
as the plugin expands it, must then give the same rows through the interface, as the
read-only user the local provisioning file names, as in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import clickhouse_connect
import pytest
import yaml
from clickhouse_connect.driver.client import Client

from grafana.panel_sql import QueryContext, expand
from llmledger.exporter._internal.store import run_query
from llmledger.exporter._internal.store_owner import ADMIN_USER, READONLY_USER, current_owner
from tests.collector.harness import CollectorProcess, wait_for
from tests.grafana.conftest import DASHBOARDS, GRAFANA, Seeded, alert_rules
from tests.grafana.seed import RANGE_END, seed
from tests.grafana.test_provisioning import _schema, _validate, _yaml  # pyright: ignore[reportPrivateUsage]

LOCAL = GRAFANA / "provisioning-local"


@pytest.fixture(scope="module")
def through_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("one-machine")
    collector = CollectorProcess(root / "data", f"chdb://{root / 'store'}").start()
    try:
        owner = current_owner(root / "store")
        assert owner is not None
        admin = clickhouse_connect.get_client(  # pyright: ignore[reportUnknownMemberType]
            host=owner.host, port=owner.port, username=ADMIN_USER, password=owner.admin_password
        )
        wait_for(
            lambda: (
                run_query(
                    admin, "SELECT count() FROM system.tables WHERE database = 'llmledger'"
                ).result_rows[0][0]
                > 0
            ),
            30,
            "the collector's schema",
        )
        seed(admin, "llmledger")  # the product's writer, its Native bodies over HTTP
        admin.close()
        reader = clickhouse_connect.get_client(  # pyright: ignore[reportUnknownMemberType]
            host=owner.host,
            port=owner.port,
            username=READONLY_USER,
            password=owner.readonly_password,
            database="llmledger",
        )
        yield reader
        reader.close()
    finally:
        assert collector.stop() == 0, collector.log()


def _targets() -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for uid, dashboard in DASHBOARDS.items():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target.get("rawSql"):
                    found.append((uid, panel["title"], target["rawSql"]))
    return found


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = run_query(client, sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _comparable(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as sorted text: NaN equals NaN, and ties that no ORDER BY settles may come either way."""
    return sorted(repr(row) for row in rows)


def _context(seeded: Seeded, uid: str) -> QueryContext:
    # The tenant drill-down is about one tenant; every other dashboard at All.
    return seeded.context(tenant="acme") if uid == "llmledger-tenant-drilldown" else seeded.context()


@pytest.mark.parametrize(("uid", "title", "sql"), _targets(), ids=lambda v: str(v)[:40])
def test_every_panel_answers_through_the_collector_as_in_process(
    uid: str, title: str, sql: str, seeded: Seeded, through_collector: Client
) -> None:
    del title
    context = _context(seeded, uid)
    expected = seeded.run(sql, context)
    assert _comparable(_rows(through_collector, expand(sql, context))) == _comparable(expected)


def test_every_alert_rule_answers_through_the_collector_as_in_process(
    seeded: Seeded, through_collector: Client
) -> None:
    for rule in alert_rules():
        expected = seeded.alert_rows(rule["uid"], end=RANGE_END)
        (query,) = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        window = timedelta(seconds=query["relativeTimeRange"]["from"] - query["relativeTimeRange"]["to"])
        context = QueryContext(start=RANGE_END - window, end=RANGE_END, variables={})
        actual = _rows(through_collector, expand(query["model"]["rawSql"], context))
        assert _comparable(actual) == _comparable(expected), rule["uid"]


def test_local_provisioning_points_the_plugin_at_the_collector() -> None:
    compose_side = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    local = yaml.safe_load((LOCAL / "datasources" / "llmledger.yaml").read_text())
    ((server_ds,), (local_ds,)) = (compose_side["datasources"], local["datasources"])
    assert local_ds["uid"] == server_ds["uid"]  # every dashboard and alert rule names this uid
    assert local_ds["type"] == server_ds["type"]
    data = local_ds["jsonData"]
    assert (data["host"], data["port"], data["protocol"]) == ("127.0.0.1", 8123, "http")
    assert data["username"] == READONLY_USER
    assert (
        local_ds["secureJsonData"]["password"] == "${LLMLEDGER_COLLECTOR_CLICKHOUSE_HTTP_READONLY_PASSWORD}"
    )
    # Dashboards and alert rules are the stack's own files, not copies.
    for folder in ("dashboards", "alerting"):
        assert (LOCAL / folder).resolve() == (GRAFANA / "provisioning" / folder).resolve()


@pytest.mark.parametrize(
    ("folder", "schema"),
    [
        ("datasources", "grafana-datasources.schema.json"),
        ("dashboards", "grafana-dashboard-providers.schema.json"),
    ],
)
def test_local_provisioning_files_match_their_schema(folder: str, schema: str) -> None:
    files = sorted((LOCAL / folder).glob("*.yaml"))
    assert files
    for path in files:
        _validate(_yaml(path), _schema(schema))
