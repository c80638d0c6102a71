"""Spend overview: every panel's numbers against the seed, under All, one and several values."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from grafana.panel_sql import ALL, VariableValue
from tests.grafana.conftest import Seeded, only, variable
from tests.grafana.seed import (
    MONTH_START,
    PRICES,
    RANGE_END,
    RANGE_START,
    SeedCall,
    cost_sum,
    in_rollup_range,
)

UID = "llmledger-spend-overview"

# (tenant, model, feature) selections every panel is checked under.
SELECTIONS: list[tuple[VariableValue, VariableValue, VariableValue]] = [
    (ALL, ALL, ALL),
    (["acme"], ALL, ALL),
    (["acme", "globex"], ALL, ALL),
    (ALL, ["gpt-4o-mini", "mistral-small"], ["lead_scoring"]),
    (["initech"], ["gpt-4o-2024-08-06"], ALL),
]


def _selected(call: SeedCall, tenant: VariableValue, model: VariableValue, feature: VariableValue) -> bool:
    return all(
        value == ALL or attribute in value
        for attribute, value in ((call.tenant, tenant), (call.model, model), (call.feature, feature))
    )


def _in_range(
    seeded: Seeded, selection: tuple[VariableValue, VariableValue, VariableValue]
) -> list[SeedCall]:
    return seeded.data.select(
        lambda c: in_rollup_range(c, RANGE_START, RANGE_END) and _selected(c, *selection)
    )


@pytest.mark.parametrize("selection", SELECTIONS)
def test_spend_vs_previous_period(seeded: Seeded, selection: tuple[VariableValue, ...]) -> None:
    tenant, model, feature = selection
    row = only(
        seeded.panel_rows(
            UID, "Spend vs previous period", seeded.context(tenant=tenant, model=model, feature=feature)
        )
    )
    length = RANGE_END - RANGE_START
    spend = cost_sum(_in_range(seeded, (tenant, model, feature)))
    previous = cost_sum(
        seeded.data.select(
            lambda c: RANGE_START - length <= c.hour < RANGE_START and _selected(c, tenant, model, feature)
        )
    )
    assert row["spend"] == spend
    assert row["previous_spend"] == previous
    assert row["change"] == pytest.approx(float(spend) / float(previous) - 1)


def test_a_tenants_total_equals_the_sum_of_its_llm_calls(seeded: Seeded) -> None:
    for tenant in ("acme", "globex", "initech"):
        row = only(seeded.panel_rows(UID, "Spend vs previous period", seeded.context(tenant=[tenant])))
        (raw,) = seeded.sql(
            "SELECT sum(cost_usd) AS total FROM {db}.llm_calls WHERE tenant_id = {t:String} "
            "AND toStartOfHour(Timestamp) >= {start:DateTime} AND toStartOfHour(Timestamp) <= {end:DateTime}",
            {"t": tenant, "start": RANGE_START, "end": RANGE_END},
        )
        assert row["spend"] == raw["total"] > 0


@pytest.mark.parametrize("selection", SELECTIONS)
def test_spend_per_tenant_over_time(seeded: Seeded, selection: tuple[VariableValue, ...]) -> None:
    tenant, model, feature = selection
    context = seeded.context(tenant=tenant, model=model, feature=feature, interval=timedelta(days=1))
    rows = seeded.panel_rows(UID, "Spend per tenant", context)
    expected: dict[tuple[datetime, str], Decimal] = defaultdict(Decimal)
    for call in _in_range(seeded, (tenant, model, feature)):
        day = call.at.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        expected[day, call.tenant or "(unattributed)"] += call.expected_cost or Decimal(0)
    assert {(r["time"], r["tenant"]): r["spend"] for r in rows} == dict(expected)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


def test_top_tenants_ranked_with_shares(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Top tenants", seeded.context())
    calls = _in_range(seeded, (ALL, ALL, ALL))
    total = cost_sum(calls)
    by_tenant = {
        (t or "(unattributed)"): cost_sum(c for c in calls if c.tenant == t)
        for t in {c.tenant for c in calls}
    }
    assert [r["tenant"] for r in rows] == sorted(by_tenant, key=lambda t: -by_tenant[t])
    for r in rows:
        assert r["spend"] == by_tenant[r["tenant"]]
        assert r["share"] == pytest.approx(float(by_tenant[r["tenant"]] / total))
        assert r["calls"] == sum(1 for c in calls if (c.tenant or "(unattributed)") == r["tenant"])
    assert sum(r["share"] for r in rows) == pytest.approx(1)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_spend_by_model_and_provider(seeded: Seeded, selection: tuple[VariableValue, ...]) -> None:
    tenant, model, feature = selection
    context = seeded.context(tenant=tenant, model=model, feature=feature)
    calls = _in_range(seeded, (tenant, model, feature))
    rows = seeded.panel_rows(UID, "Spend by model", context)
    assert {(r["provider"], r["model"]) for r in rows} == {(c.provider, c.model) for c in calls}
    for r in rows:
        mine = [c for c in calls if c.model == r["model"]]
        assert r["calls"] == len(mine)
        assert r["spend"] == cost_sum(mine)
        assert r["input_tokens"] == sum(c.input_tokens or 0 for c in mine)
        assert r["output_tokens"] == sum(c.output_tokens or 0 for c in mine)
        assert r["unpriced_calls"] == sum(c.unpriced for c in mine)
    providers = seeded.panel_rows(UID, "Spend by provider", context)
    assert {r["provider"]: r["spend"] for r in providers} == {
        p: cost_sum(c for c in calls if c.provider == p) for p in {c.provider for c in calls}
    }


def test_tokens_by_type(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Tokens by type", seeded.context(interval=timedelta(days=7)))
    calls = _in_range(seeded, (ALL, ALL, ALL))
    totals = {
        k: sum(r[k] for r in rows)
        for k in ("uncached_input", "cached_input", "visible_output", "reasoning_output")
    }
    assert totals == {
        "uncached_input": sum((c.input_tokens or 0) - c.cached_tokens for c in calls),
        "cached_input": sum(c.cached_tokens for c in calls),
        "visible_output": sum((c.output_tokens or 0) - c.reasoning_tokens for c in calls),
        "reasoning_output": sum(c.reasoning_tokens for c in calls),
    }
    assert totals["cached_input"] > 0
    assert totals["reasoning_output"] > 0


def test_cached_input_savings_priced_where_a_price_is_known(seeded: Seeded) -> None:
    rows = {r["model"]: r for r in seeded.panel_rows(UID, "Cached input savings by model", seeded.context())}
    calls = _in_range(seeded, (ALL, ALL, ALL))
    input_price, cached_price, _ = PRICES["openai", "gpt-4o"]
    gpt4o_cached = sum(c.cached_tokens for c in calls if c.model == "gpt-4o-2024-08-06")
    # gpt-4o-2024-08-06 is priced as gpt-4o (date suffix dropped, as llm_calls_mv does).
    assert rows["gpt-4o-2024-08-06"]["cached_tokens"] == gpt4o_cached
    assert (
        rows["gpt-4o-2024-08-06"]["saved_usd"] == gpt4o_cached * (input_price - (cached_price or 0)) / 10**6
    )
    # gpt-4o-mini has cached input but no price row: the saving is unknown, not zero.
    assert rows["gpt-4o-mini"]["cached_tokens"] == sum(
        c.cached_tokens for c in calls if c.model == "gpt-4o-mini"
    )
    assert rows["gpt-4o-mini"]["saved_usd"] is None
    assert set(rows) == {"gpt-4o-2024-08-06", "gpt-4o-mini"}
    # The stat panel runs the same query and sums saved_usd.
    stat = seeded.panel_rows(UID, "Saved by cached input", seeded.context())
    assert sum(r["saved_usd"] or 0 for r in stat) == rows["gpt-4o-2024-08-06"]["saved_usd"]


def test_unpriced_and_estimated_calls(seeded: Seeded) -> None:
    calls = _in_range(seeded, (ALL, ALL, ALL))
    totals = only(seeded.panel_rows(UID, "Unpriced and estimated calls", seeded.context()))
    assert totals == {
        "calls": len(calls),
        "unpriced_calls": sum(c.unpriced for c in calls),
        "estimated_calls": sum(c.estimated for c in calls),
    }
    rows = seeded.panel_rows(UID, "Models with unpriced or estimated calls", seeded.context())
    assert [r["model"] for r in rows] == ["llama-3.1-70b"]
    llama = [c for c in calls if c.model == "llama-3.1-70b"]
    assert rows[0]["unpriced_calls"] == sum(c.unpriced for c in llama) > 0
    assert rows[0]["estimated_calls"] == sum(c.estimated for c in llama) > 0
    assert rows[0]["unpriced_share"] == pytest.approx(rows[0]["unpriced_calls"] / len(llama))


@pytest.mark.parametrize("tenant", [ALL, ["globex"]])
def test_month_end_projection(seeded: Seeded, tenant: VariableValue) -> None:
    row = only(seeded.panel_rows(UID, "Month-end projection", seeded.context(tenant=tenant)))
    month_to_date = cost_sum(
        seeded.data.select(
            lambda c: in_rollup_range(c, MONTH_START, RANGE_END) and _selected(c, tenant, ALL, ALL)
        )
    )
    elapsed = (RANGE_END - MONTH_START).total_seconds()
    assert row["month_to_date"] == month_to_date
    assert row["projected_month_end"] == pytest.approx(float(month_to_date) * 30 * 86_400 / elapsed)


def test_variables_list_what_is_in_the_range(seeded: Seeded) -> None:
    def values(name: str, tenant: VariableValue = ALL) -> list[str]:
        query = variable(UID, name)["query"]
        return [next(iter(r.values())) for r in seeded.run(query["rawSql"], seeded.context(tenant=tenant))]

    assert values("tenant") == ["acme", "globex", "initech"]
    assert values("model") == sorted({c.model for c in _in_range(seeded, (ALL, ALL, ALL))})
    # Only the models and features the selected tenants used.
    assert values("model", tenant=["initech"]) == sorted(
        {c.model for c in _in_range(seeded, (["initech"], ALL, ALL))}
    )
    assert values("feature", tenant=["acme", "globex"]) == sorted(
        {c.feature for c in _in_range(seeded, (["acme", "globex"], ALL, ALL))}
    )


ODD_RANGES = [
    # (start, end): partial days at either edge, under a day, across a month boundary, midnight-aligned
    (datetime(2026, 11, 9, 5, 30, tzinfo=UTC), datetime(2026, 11, 14, 17, 20, tzinfo=UTC)),
    (datetime(2026, 11, 12, 9, 0, tzinfo=UTC), datetime(2026, 11, 12, 16, 59, 59, tzinfo=UTC)),
    (datetime(2026, 11, 12, 14, 0, tzinfo=UTC), datetime(2026, 11, 13, 14, 0, tzinfo=UTC)),
    (datetime(2026, 10, 31, 22, 0, tzinfo=UTC), datetime(2026, 11, 3, 0, 0, tzinfo=UTC)),
    (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC)),
]


@pytest.mark.parametrize(("start", "end"), ODD_RANGES)
def test_totals_count_exactly_the_hours_in_any_range(seeded: Seeded, start: datetime, end: datetime) -> None:
    # Whole days come from llm_usage_daily, edge hours from llm_usage_hourly: the same hours
    # as the hourly rollup alone, whatever the range.
    context = seeded.context(start=start, end=end)
    calls = seeded.data.select(lambda c: in_rollup_range(c, start, end))
    totals = only(seeded.panel_rows(UID, "Unpriced and estimated calls", context))
    assert totals["calls"] == len(calls)
    assert totals["unpriced_calls"] == sum(c.unpriced for c in calls)
    by_model = {r["model"]: r["spend"] for r in seeded.panel_rows(UID, "Spend by model", context)}
    assert by_model == {m: cost_sum(c for c in calls if c.model == m) for m in {c.model for c in calls}}
    (hourly,) = seeded.sql(
        "SELECT sum(cost_usd) AS spend FROM {db}.llm_usage_hourly WHERE hour >= {s:DateTime} AND hour <= {e:DateTime}",
        {"s": start, "e": end},
    )
    row = only(seeded.panel_rows(UID, "Spend vs previous period", context))
    assert row["spend"] == hourly["spend"]
    length = end - start
    assert row["previous_spend"] == cost_sum(seeded.data.select(lambda c: start - length <= c.hour < start))


def test_hourly_and_daily_series_agree(seeded: Seeded) -> None:
    # Under a day per point the hourly rollup answers, from a day up the daily one.
    hourly = seeded.panel_rows(UID, "Spend per tenant", seeded.context(interval=timedelta(hours=1)))
    daily = seeded.panel_rows(UID, "Spend per tenant", seeded.context(interval=timedelta(days=1)))
    per_hour: dict[tuple[datetime, str], Decimal] = defaultdict(Decimal)
    for call in _in_range(seeded, (ALL, ALL, ALL)):
        per_hour[call.hour.replace(tzinfo=None), call.tenant or "(unattributed)"] += (
            call.expected_cost or Decimal(0)
        )
    assert {(r["time"], r["tenant"]): r["spend"] for r in hourly} == dict(per_hour)
    rolled: dict[tuple[datetime, str], Decimal] = defaultdict(Decimal)
    for (hour, tenant), spend in per_hour.items():
        rolled[hour.replace(hour=0), tenant] += spend
    assert {(r["time"], r["tenant"]): r["spend"] for r in daily} == dict(rolled)
