"""The dashboard JSON files, structurally: what Grafana needs to load and wire them."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest

from grafana import build
from grafana.panel_sql import ALL, QueryContext, expand
from tests.grafana.conftest import DASHBOARD_FILES, DASHBOARDS, GRAFANA, alert_rules
from tests.grafana.seed import RANGE_END, RANGE_START

DATASOURCE_UID = "llmledger-clickhouse"
PANEL_TYPES = {"stat", "timeseries", "table", "piechart", "traces"}
ROLLUP_ONLY_EXCEPTIONS = {
    # Per-call detail llm_usage_hourly cannot answer.
    "Conversations by spend",
    "Most expensive calls",
    "Trace",
    "Error rate by error type",
    "Errors by type and model",
    "Which models fall back to which",
    # The app's own metrics, not the spans.
    "Latency by model from the SDK's histograms",
}
# Panels answered by a purpose-built table (neither the rollups nor llm_calls).
OWN_TABLE = {
    "Which models fall back to which": "llm_fallbacks",
    "Latency by model from the SDK's histograms": "otel_metrics_histogram",
}


def test_the_committed_files_are_what_build_writes() -> None:
    for name, text in build.render().items():
        assert (GRAFANA / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: python grafana/build.py"
        )


def test_four_dashboards_with_fixed_unique_uids() -> None:
    assert len(DASHBOARD_FILES) == 4
    assert set(DASHBOARDS) == {
        "llmledger-spend-overview",
        "llmledger-tenant-drilldown",
        "llmledger-reliability",
        "llmledger-budgets",
    }


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(uid, p) for uid, d in DASHBOARDS.items() for p in d["panels"]]


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_panel_ids_unique_and_titles_distinct(uid: str) -> None:
    panels = DASHBOARDS[uid]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels)
    assert all(isinstance(p["id"], int) and p["id"] > 0 for p in panels)


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_panels_fit_the_grid_without_overlapping(uid: str) -> None:
    boxes = [(p["title"], p["gridPos"]) for p in DASHBOARDS[uid]["panels"]]
    for title, g in boxes:
        assert min(g["x"], g["y"]) >= 0, title
        assert min(g["w"], g["h"]) > 0, title
        assert g["x"] + g["w"] <= 24, f"{title} runs past column 24"
    for (a, ga), (b, gb) in combinations(boxes, 2):
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{a!r} and {b!r} overlap"


def _panel_params() -> list[Any]:
    return [pytest.param(uid, p, id=f"{uid}: {p['title']}") for uid, p in _panels()]


@pytest.mark.parametrize(("uid", "panel"), _panel_params())
def test_every_panel_and_target_uses_the_datasource_variable(uid: str, panel: dict[str, Any]) -> None:
    assert panel["type"] in PANEL_TYPES
    assert panel["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
    assert panel["targets"], "a panel without a query"
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(set(ref_ids)) == len(ref_ids)
    for target in panel["targets"]:
        assert target["refId"]
        assert target["datasource"] == panel["datasource"]
        assert target["editorType"] == "sql"
        assert target["format"] in (0, 1, 3)
        expected_type = {0: "timeseries", 1: "table", 3: "traces"}[target["format"]]
        assert target["queryType"] == expected_type
        assert target["rawSql"].strip()
    if panel["type"] == "timeseries":
        assert all(t["format"] == 0 for t in panel["targets"])
    if panel["type"] == "traces":
        assert all(t["format"] == 3 for t in panel["targets"])


@pytest.mark.parametrize(("uid", "panel"), _panel_params())
def test_rollup_answers_unless_the_question_is_per_call(uid: str, panel: dict[str, Any]) -> None:
    (target,) = panel["targets"]
    sql = target["rawSql"]
    reads_calls = re.search(r"\bllm_calls\b", sql) is not None
    own_table = OWN_TABLE.get(panel["title"])
    if own_table is not None:
        assert re.search(rf"\bFROM {own_table}\b", sql)
    assert reads_calls == (
        panel["title"] in ROLLUP_ONLY_EXCEPTIONS and panel["title"] != "Trace" and own_table is None
    )
    if panel["title"] not in ROLLUP_ONLY_EXCEPTIONS:
        assert "llm_usage_hourly" in sql
    # Tables unqualified: the datasource's default database resolves them.
    assert not re.search(
        r"\b\w+\.(llm_calls|llm_usage_hourly|llm_fallbacks|otel_traces|budgets|model_prices)\b", sql
    )


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_variables(uid: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[uid]["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "grafana-clickhouse-datasource"
    assert ds["current"]["value"] == DATASOURCE_UID
    expected = {"tenant", "model", "feature"} if uid != "llmledger-budgets" else {"tenant"}
    assert expected <= set(variables)
    for name in expected:
        v = variables[name]
        assert v["type"] == "query"
        assert v["datasource"]["uid"] == "${datasource}"
        assert v["query"]["refId"]
        assert v["query"]["format"] == 1
        assert v["query"]["rawSql"] == v["definition"]
        single = uid == "llmledger-tenant-drilldown" and name == "tenant"
        assert v["multi"] is (not single)
        assert v["includeAll"] is (not single)
        assert "allValue" not in v  # All must stay $__all for $__conditionalAll
    used = " ".join(t["rawSql"] for p in DASHBOARDS[uid]["panels"] for t in p["targets"])
    for name in variables:
        if name != "datasource":
            assert f"${name}" in used or f"${{{name}" in used, f"${name} is never used"


def _all_queries() -> list[Any]:
    queries = [(uid, f"{uid}: {p['title']}", t["rawSql"]) for uid, p in _panels() for t in p["targets"]]
    queries += [
        (uid, f"{uid}: ${v['name']}", v["query"]["rawSql"])
        for uid, d in DASHBOARDS.items()
        for v in d["templating"]["list"]
        if v["type"] == "query"
    ]
    return [pytest.param(uid, where, sql, id=where) for uid, where, sql in queries]


@pytest.mark.parametrize(("uid", "where", "sql"), _all_queries())
def test_filters_use_conditional_all_with_quoted_values(uid: str, where: str, sql: str) -> None:
    # Every multi-value variable is filtered through $__conditionalAll and quoted/escaped.
    for match in re.finditer(r"\$\{?(tenant|model|feature)\b(:\w+)?", sql):
        assert match.group(2) == ":singlequote" or sql[: match.start()].rstrip().endswith(","), (
            f"{where}: ${match.group(1)} outside a quoted condition"
        )
    context = QueryContext(
        RANGE_START,
        RANGE_END,
        variables={
            "tenant": "acme" if uid == "llmledger-tenant-drilldown" else ALL,
            "model": ALL,
            "feature": ALL,
            "warn_share": "0.8",
            "trace_id": "x",
        },
    )
    expanded = expand(sql, context)
    assert "$" not in expanded.replace("$'", ""), f"{where}: unexpanded {expanded}"


def test_alert_rules_reference_the_datasource_and_no_dashboard_variables() -> None:
    rules = alert_rules()
    assert len({r["uid"] for r in rules}) == len(rules) == 4
    for rule in rules:
        ref_ids = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in ref_ids
        for query in rule["data"]:
            if query["datasourceUid"] == "__expr__":
                assert query["model"]["expression"] in ref_ids
                continue
            assert query["datasourceUid"] == DATASOURCE_UID
            model = query["model"]
            assert model["refId"] == query["refId"]
            assert model["format"] == 1
            # Alert queries run in the backend: no dashboard variables, no $__conditionalAll.
            sql = model["rawSql"]
            assert "$__conditionalAll" not in sql
            assert not re.search(r"\$(?!__)\w", sql.replace("$'", "")), sql
            expand(sql, QueryContext(RANGE_START, RANGE_END, variables={}))


def test_data_links_point_at_existing_dashboards() -> None:
    for _, panel in _panels():
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        uid = re.search(r"/d/([\w-]+)", link["url"])
                        assert uid
                        assert uid.group(1) in DASHBOARDS
    for dashboard in DASHBOARDS.values():
        for link in dashboard["links"]:
            uid = re.search(r"/d/([\w-]+)", link["url"])
            assert uid
            assert uid.group(1) in DASHBOARDS
            assert uid.group(1) != dashboard["uid"]
