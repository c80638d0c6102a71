"""Tenant drill-down: one tenant's spend by user, feature, conversation and model, down to a trace."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from grafana.panel_sql import ALL, VariableValue
from tests.grafana.conftest import Seeded, only, panel
from tests.grafana.seed import RANGE_END, RANGE_START, SeedCall, cost_sum, in_calls_range, in_rollup_range

UID = "llmledger-tenant-drilldown"


def _rollup_calls(seeded: Seeded, tenant: str, model: VariableValue = ALL) -> list[SeedCall]:
    return seeded.data.select(
        lambda c: (
            c.tenant == tenant
            and in_rollup_range(c, RANGE_START, RANGE_END)
            and (model == ALL or c.model in model)
        )
    )


@pytest.mark.parametrize("tenant", ["acme", "globex", "initech"])
def test_tenant_totals(seeded: Seeded, tenant: str) -> None:
    row = only(seeded.panel_rows(UID, "Tenant spend", seeded.context(tenant=tenant)))
    calls = _rollup_calls(seeded, tenant)
    assert row == {
        "spend": cost_sum(calls),
        "calls": len(calls),
        "unpriced_calls": sum(c.unpriced for c in calls),
    }


@pytest.mark.parametrize(
    ("title", "label", "key", "empty"),
    [
        ("Spend by user", "user", "user", "(no user)"),
        ("Spend by feature", "feature_name", "feature", "(none)"),
        ("Spend by model", "model_name", "model", "(unknown)"),
    ],
)
@pytest.mark.parametrize("model", [ALL, ["gpt-4o-mini"], ["gpt-4o-mini", "llama-3.1-70b"]])
def test_spend_by_dimension(
    seeded: Seeded, title: str, label: str, key: str, empty: str, model: VariableValue
) -> None:
    rows = seeded.panel_rows(UID, title, seeded.context(tenant="acme", model=model))
    calls = _rollup_calls(seeded, "acme", model)
    expected: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    for call in calls:
        name = getattr(call, key) or empty
        expected[name] += call.expected_cost or Decimal(0)
        counts[name] += 1
    assert {r[label]: r["spend"] for r in rows} == dict(expected)
    assert {r[label]: r["calls"] for r in rows} == dict(counts)
    assert [r["spend"] for r in rows] == sorted((r["spend"] for r in rows), reverse=True)


def test_spend_by_feature_over_time_adds_up(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Spend by feature over time", seeded.context(tenant="globex"))
    calls = _rollup_calls(seeded, "globex")
    assert sum(r["spend"] for r in rows) == cost_sum(calls)
    burst = [
        r for r in rows if r["time"].day == 12 and r["time"].hour == 14 and r["feature_name"] == "summarize"
    ]
    assert only(burst)["spend"] >= Decimal("3")  # six calls at 0.50 USD


def test_conversations_by_spend(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Conversations by spend", seeded.context(tenant="globex"))
    calls = seeded.data.select(
        lambda c: c.tenant == "globex" and c.conversation != "" and in_calls_range(c, RANGE_START, RANGE_END)
    )
    by_conversation: dict[str, list[SeedCall]] = defaultdict(list)
    for call in calls:
        by_conversation[call.conversation].append(call)
    top = sorted(by_conversation, key=lambda k: (-cost_sum(by_conversation[k]), k))[:20]
    assert [r["conversation_id"] for r in rows] == top
    assert rows[0]["conversation_id"] == "globex-burst"
    for r in rows:
        mine = by_conversation[r["conversation_id"]]
        assert r["spend"] == cost_sum(mine)
        assert r["calls"] == len(mine)
        assert r["models"] == ", ".join(sorted({c.model for c in mine}))


def test_most_expensive_calls_link_to_their_trace(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Most expensive calls", seeded.context(tenant="acme"))
    calls = seeded.data.select(
        lambda c: (
            c.tenant == "acme" and c.expected_cost is not None and in_calls_range(c, RANGE_START, RANGE_END)
        )
    )
    ranked = sorted(calls, key=lambda c: (-(c.expected_cost or 0), -c.at.timestamp()))[:50]
    assert [r["cost_usd"] for r in rows] == [c.expected_cost for c in ranked]
    assert [r["TraceId"] for r in rows] == [format(c.trace_id, "032x") for c in ranked]
    # The TraceId column's link sets $trace_id on this dashboard; the trace panel then shows it.
    (link,) = next(
        o
        for o in panel(UID, "Most expensive calls")["fieldConfig"]["overrides"]
        if o["matcher"]["options"] == "TraceId"
    )["properties"][0]["value"]
    assert f"/d/{UID}?" in link["url"]
    assert "var-trace_id=${__value.raw}" in link["url"]

    trace_id = rows[0]["TraceId"]
    spans = seeded.panel_rows(UID, "Trace", seeded.context(tenant="acme", trace_id=trace_id))
    in_trace = [c for c in seeded.data.calls if format(c.trace_id, "032x") == trace_id]
    assert len(spans) == 1 + len(in_trace)  # the request's SERVER span and its LLM calls
    assert {s["traceID"] for s in spans} == {trace_id}
    root = only([s for s in spans if s["parentSpanID"] == ""])
    assert root["operationName"] == "POST /api/crm"
    assert {s["parentSpanID"] for s in spans if s is not root} == {root["spanID"]}
    assert [s["startTime"] for s in spans] == sorted(s["startTime"] for s in spans)
    call_span = next(s for s in spans if s is not root)
    tags = {t["key"]: t["value"] for t in call_span["tags"]}
    assert tags["tenant.id"] == "acme"
    assert call_span["serviceName"] == "crm-app"
    assert call_span["duration"] == pytest.approx(in_trace[0].duration_ms)


def test_trace_panel_without_a_trace_id_is_empty(seeded: Seeded) -> None:
    assert seeded.panel_rows(UID, "Trace", seeded.context(tenant="acme", trace_id="")) == []


def test_tenant_variable_is_single_and_a_quote_cannot_break_out(seeded: Seeded) -> None:
    # Values are quoted and escaped (${tenant:singlequote}); a hostile value matches nothing.
    rows = seeded.panel_rows(UID, "Tenant spend", seeded.context(tenant="acme' OR '1'='1"))
    assert only(rows)["calls"] == 0
