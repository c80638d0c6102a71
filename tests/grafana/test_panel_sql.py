"""panel_sql expands queries the way Grafana and the ClickHouse plugin do (their documented outputs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from grafana.panel_sql import ALL, QueryContext, expand, grafana_interval

START = datetime(2026, 11, 9, tzinfo=UTC)  # 1794182400
END = datetime(2026, 11, 15, 23, 59, 59, tzinfo=UTC)  # 1794787199


def ctx(interval: timedelta = timedelta(hours=1), **variables: str | list[str]) -> QueryContext:
    return QueryContext(START, END, interval, variables, {"tenant": ["acme", "globex"]})


@pytest.mark.parametrize(
    ("sql", "expanded"),
    [
        ("$__timeFilter(hour)", "hour >= toDateTime(1794182400) AND hour <= toDateTime(1794787199)"),
        (
            "$__timeFilter_ms(Timestamp)",
            "Timestamp >= fromUnixTimestamp64Milli(1794182400000) AND Timestamp <= fromUnixTimestamp64Milli(1794787199000)",
        ),
        ("$__fromTime AND $__toTime", "toDateTime(1794182400) AND toDateTime(1794787199)"),
        (
            "$__fromTime_ms,$__toTime_ms",
            "fromUnixTimestamp64Milli(1794182400000),fromUnixTimestamp64Milli(1794787199000)",
        ),
        ("$__dateFilter(day)", "day >= toDate('2026-11-09') AND day <= toDate('2026-11-15')"),
        ("$__timeInterval(hour)", "toStartOfInterval(toDateTime(hour), INTERVAL 3600 second)"),
        ("$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 3600000 millisecond)"),
        ("$__interval_s", "3600"),
        # Arguments: brackets nest, surrounding spaces go.
        (
            "$__timeFilter( toDateTime(x) )",
            "toDateTime(x) >= toDateTime(1794182400) AND toDateTime(x) <= toDateTime(1794787199)",
        ),
        # A macro without arguments followed by a bracket elsewhere stays argument-free.
        ("WITH $__fromTime AS s SELECT (1)", "WITH toDateTime(1794182400) AS s SELECT (1)"),
    ],
)
def test_backend_macros(sql: str, expanded: str) -> None:
    assert expand(sql, ctx()) == expanded


def test_interval_is_at_least_one_second() -> None:
    assert expand("$__interval_s", ctx(interval=timedelta(milliseconds=20))) == "1"
    assert expand("$__timeInterval(t)", ctx(interval=timedelta(days=1))).endswith("INTERVAL 86400 second)")


@pytest.mark.parametrize(
    ("value", "expanded"),
    [
        (ALL, "1=1"),
        ("", "1=1"),
        (["acme"], "tenant_id IN ('acme')"),
        (["acme", "globex"], "tenant_id IN ('acme','globex')"),
        ("acme", "tenant_id IN (acme)"),  # a single-value variable is inserted as it is
    ],
)
def test_conditional_all(value: str | list[str], expanded: str) -> None:
    assert expand("$__conditionalAll(tenant_id IN ($tenant), $tenant)", ctx(tenant=value)) == expanded


def test_conditional_all_with_formats_and_nesting() -> None:
    sql = "$__conditionalAll((a IN (${tenant:singlequote}) OR b IN (${tenant:singlequote})), ${tenant})"
    assert expand(sql, ctx(tenant=ALL)) == "1=1"
    assert expand(sql, ctx(tenant=["o'k"])) == "(a IN ('o\\'k') OR b IN ('o\\'k'))"


@pytest.mark.parametrize(
    ("sql", "value", "expanded"),
    [
        ("$tenant", ["a", "b"], "'a','b'"),
        ("${tenant}", "a", "a"),
        ("${tenant:singlequote}", "it's", "'it\\'s'"),
        ("${tenant:singlequote}", ["a", "b"], "'a','b'"),
        ("${tenant:sqlstring}", "it's", "'it''s'"),
        ("${tenant:raw}", ["a", "b"], "a,b"),
        ("[[tenant]]", ["a"], "'a'"),
        # All without a custom all value: every option.
        ("$tenant", ALL, "'acme','globex'"),
    ],
)
def test_template_variables(sql: str, value: str | list[str], expanded: str) -> None:
    assert expand(sql, ctx(tenant=value)) == expanded


def test_unknown_names_are_errors_not_silence() -> None:
    with pytest.raises(KeyError):
        expand("$nope", ctx())
    with pytest.raises(KeyError):
        expand("$__conditionalAll(x, $nope)", ctx())
    with pytest.raises(ValueError, match="not a macro"):
        expand("$__timeGroup(t, 1h)", ctx())
    with pytest.raises(ValueError, match="expects 1 argument"):
        expand("$__timeFilter(a, b)", ctx())
    with pytest.raises(ValueError, match="format"):
        expand("${tenant:json}", ctx(tenant="a"))


def test_time_bounds_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        QueryContext(datetime(2026, 1, 1), datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("days", "points", "expected"),
    [
        (30, 1000, timedelta(minutes=30)),
        (30, 24, timedelta(days=1)),
        (7, 24, timedelta(hours=6)),
        (1, 1000, timedelta(minutes=1)),
        (1, 24, timedelta(hours=1)),
    ],
)
def test_grafana_interval(days: int, points: int, expected: timedelta) -> None:
    assert grafana_interval(START, START + timedelta(days=days), points) == expected
    assert grafana_interval(START, START + timedelta(days=days), points, timedelta(hours=1)) == max(
        expected, timedelta(hours=1)
    )
