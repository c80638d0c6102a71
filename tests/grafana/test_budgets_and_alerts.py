"""Budgets dashboard and alert rules: spend against each budget, burn, breaches where seeded."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from grafana.panel_sql import ALL, VariableValue
from tests.grafana.conftest import Seeded, alert_rule, only
from tests.grafana.seed import (
    ALERT_START,
    GLOBEX_BURST,
    MONTH_START,
    RANGE_END,
    RANGE_START,
    SeedCall,
    cost_sum,
    in_rollup_range,
)

UID = "llmledger-budgets"
WARN = 0.8


@dataclass(frozen=True)
class Expected:
    tenant: str
    user: str
    period: str
    limit: Decimal
    spent: Decimal
    used: float
    projected_share: float

    @property
    def breached(self) -> bool:
        return self.spent >= self.limit  # as `llmledger budget check` has it

    @property
    def status(self) -> str:
        if self.breached:
            return "breached"
        if self.used >= WARN:
            return "warning"
        return "on track to breach" if self.projected_share >= 1 else "ok"


def _in_scope(call: SeedCall, tenant: str, user: str) -> bool:
    return call.tenant == tenant and (user == "" or call.user == user)


def _expected(seeded: Seeded, as_of: datetime = RANGE_END) -> list[Expected]:
    out: list[Expected] = []
    for tenant, user, period, limit, _ in seeded.data.budgets:
        start = as_of.replace(hour=0, minute=0, second=0) if period == "daily" else MONTH_START
        end = start + timedelta(days=1) if period == "daily" else datetime(2026, 12, 1, tzinfo=start.tzinfo)
        spent = cost_sum(
            c for c in seeded.data.calls if _in_scope(c, tenant, user) and in_rollup_range(c, start, as_of)
        )
        projected = float(spent) * (end - start).total_seconds() / (as_of - start).total_seconds()
        out.append(
            Expected(
                tenant,
                user or "all users",
                period,
                limit,
                spent,
                float(spent / limit),
                projected / float(limit),
            )
        )
    return out


def test_spend_against_budget(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Spend against budget", seeded.context())
    expected = {(e.tenant, e.user, e.period): e for e in _expected(seeded)}
    assert {(r["tenant"], r["user"], r["period"]) for r in rows} == set(expected)
    for r in rows:
        e = expected[r["tenant"], r["user"], r["period"]]
        assert r["budget_usd"] == e.limit  # the newest row per budget, not the older acme one
        assert r["spent_usd"] == e.spent
        assert r["used_share"] == pytest.approx(e.used)
        assert r["projected_share"] == pytest.approx(e.projected_share)
        assert r["status"] == e.status
    statuses = {(r["tenant"], r["user"], r["period"]): r["status"] for r in rows}
    assert statuses["acme", "all users", "monthly"] == "breached"
    assert statuses["initech", "all users", "monthly"] == "warning"
    assert statuses["globex", "all users", "monthly"] == "ok"
    assert statuses["acme", "bob", "monthly"] == "ok"


@pytest.mark.parametrize("tenant", [ALL, ["acme"], ["globex", "initech"]])
def test_budget_counts(seeded: Seeded, tenant: VariableValue) -> None:
    row = only(seeded.panel_rows(UID, "Budgets now", seeded.context(tenant=tenant)))
    expected = [e for e in _expected(seeded) if tenant == ALL or e.tenant in tenant]
    assert row == {
        "budgets": len(expected),
        "breached": sum(e.breached for e in expected),
        "near_limit": sum(not e.breached and e.used >= WARN for e in expected),
        "on_track_to_breach": sum(not e.breached and e.projected_share >= 1 for e in expected),
    }


def test_monthly_burn_ends_at_the_share_used(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Monthly budget burn", seeded.context())
    expected = {
        e.tenant: e.used for e in _expected(seeded) if e.period == "monthly" and e.user == "all users"
    }
    last: dict[str, float] = {}
    for r in rows:
        last[r["tenant"]] = r["budget_used"]  # rows are in time order
    assert last == pytest.approx(expected)
    acme = [r["budget_used"] for r in rows if r["tenant"] == "acme"]
    assert acme == sorted(acme)
    assert acme[0] < 1 < acme[-1]


def _expected_breaches(seeded: Seeded) -> dict[tuple[str, str, str, datetime], datetime]:
    found: dict[tuple[str, str, str, datetime], datetime] = {}
    for tenant, user, period, limit, _ in seeded.data.budgets:
        hourly: dict[datetime, Decimal] = defaultdict(Decimal)
        for c in seeded.data.calls:
            if _in_scope(c, tenant, user) and in_rollup_range(c, MONTH_START, RANGE_END):
                hourly[c.hour] += c.expected_cost or Decimal(0)
        cumulative: dict[datetime, Decimal] = defaultdict(Decimal)
        over: dict[datetime, list[datetime]] = defaultdict(list)
        for hour in sorted(hourly):
            window = hour.replace(hour=0) if period == "daily" else hour.replace(day=1, hour=0)
            cumulative[window] += hourly[hour]
            if cumulative[window] >= limit:
                over[window].append(hour)
        for window, hours in over.items():
            if max(hours) >= RANGE_START:
                found[tenant, user or "all users", period, window.replace(tzinfo=None)] = min(hours).replace(
                    tzinfo=None
                )
    return found


def test_breaches_exactly_where_seeded(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Breaches", seeded.context())
    got = {(r["tenant"], r["user"], r["period"], r["window_start"]): r["breached_in_hour"] for r in rows}
    assert got == _expected_breaches(seeded)
    burst_day = GLOBEX_BURST.replace(hour=0, tzinfo=None)
    assert set(got) == {
        ("acme", "all users", "monthly", MONTH_START.replace(tzinfo=None)),
        ("globex", "all users", "daily", burst_day),
    }
    assert got["globex", "all users", "daily", burst_day] == GLOBEX_BURST.replace(tzinfo=None)


def test_breaches_outside_the_range_are_not_listed(seeded: Seeded) -> None:
    context = seeded.context(start=RANGE_START + timedelta(days=4), tenant=["globex"])  # from 11-13
    assert seeded.panel_rows(UID, "Breaches", context) == []


# -- alert rules ----------------------------------------------------------------------------------------------


def _fires(uid: str, value: float) -> bool:
    """Whether rule ``uid``'s threshold expression fires for ``value``."""
    (condition,) = [d for d in alert_rule(uid)["data"] if d["refId"] == alert_rule(uid)["condition"]]
    (evaluator,) = [c["evaluator"] for c in condition["model"]["conditions"]]
    compare = {"gt": float.__gt__, "gte": float.__ge__}[evaluator["type"]]
    return compare(float(value), float(evaluator["params"][0]))


@pytest.mark.parametrize(
    ("uid", "firing"),
    [
        ("llmledger-budget-share", {("acme", "all users", "monthly"), ("initech", "all users", "monthly")}),
        ("llmledger-budget-exceeded", {("acme", "all users", "monthly")}),
    ],
)
def test_budget_alerts_fire_for_the_budgets_over_their_share(
    seeded: Seeded, uid: str, firing: set[tuple[str, str, str]]
) -> None:
    rows = seeded.alert_rows(uid, end=RANGE_END)
    expected = {(e.tenant, e.user, e.period): e.used for e in _expected(seeded)}
    assert {(r["tenant"], r["user"], r["period"]): r["used_share"] for r in rows} == pytest.approx(expected)
    assert {(r["tenant"], r["user"], r["period"]) for r in rows if _fires(uid, r["used_share"])} == firing


def _expected_spike(seeded: Seeded, end: datetime, flag: str) -> dict[str, float]:
    start = end - timedelta(minutes=15)
    now = seeded.data.select(lambda c: start <= c.at <= end)
    base_start = start.replace(minute=0, second=0) - timedelta(days=1)
    base = seeded.data.select(lambda c: base_start <= c.hour < start.replace(minute=0, second=0))

    def flagged(c: SeedCall) -> bool:
        return not c.success if flag == "error" else c.fallback_attempt > 0

    out: dict[str, float] = {}
    for model in {c.model for c in now}:
        mine = [c for c in now if c.model == model]
        if len(mine) < 20:
            continue
        baseline = [c for c in base if c.model == model]
        base_rate = sum(map(flagged, baseline)) / len(baseline) if baseline else 0
        out[model] = (sum(map(flagged, mine)) / len(mine)) / max(0.05, 3 * base_rate)
    return out


def test_error_spike_alert_fires_for_the_failing_model_only(seeded: Seeded) -> None:
    rows = seeded.alert_rows("llmledger-error-spike", end=RANGE_END)
    got = {r["model"]: r["error_spike"] for r in rows}
    assert got == pytest.approx(_expected_spike(seeded, RANGE_END, "error"))
    assert {m for m, v in got.items() if _fires("llmledger-error-spike", v)} == {"gpt-4o-mini"}
    assert RANGE_END - timedelta(minutes=15) <= ALERT_START


def test_no_spike_an_hour_earlier_and_no_fallback_spike(seeded: Seeded) -> None:
    earlier = RANGE_END - timedelta(hours=1)
    assert seeded.alert_rows("llmledger-error-spike", end=earlier) == []  # too few calls at night
    rows = seeded.alert_rows("llmledger-fallback-spike", end=RANGE_END)
    got = {r["model"]: r["fallback_spike"] for r in rows}
    assert got == pytest.approx(_expected_spike(seeded, RANGE_END, "fallback"))
    assert not any(_fires("llmledger-fallback-spike", v) for v in got.values())


def test_spend_against_budget_in_the_middle_of_a_day(seeded: Seeded) -> None:
    # Today is partly over: its hours come from the hourly rollup, the month's days before it
    # from the daily one. The globex burst day, just after the burst.
    as_of = GLOBEX_BURST + timedelta(hours=1, minutes=30)
    rows = seeded.panel_rows(UID, "Spend against budget", seeded.context(end=as_of))
    expected = {(e.tenant, e.user, e.period): e for e in _expected(seeded, as_of)}
    got = {(r["tenant"], r["user"], r["period"]): r for r in rows}
    assert set(got) == set(expected)
    for key, e in expected.items():
        assert got[key]["spent_usd"] == e.spent
        assert got[key]["status"] == e.status
    assert got["globex", "all users", "daily"]["status"] == "breached"
