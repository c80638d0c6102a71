"""``llmledger report``: cost, tokens, calls, errors and fallbacks grouped the way finance asks.

Reads the hourly rollup for every grouping it keeps and ``llm_calls`` only for what the
rollup does not (conversation). The SQL lives in ``queries/*.sql``; only identifiers from
the fixed table below are substituted, and every value is bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from string import Template
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.identifiers import quote_identifier
from llmledger.exporter._internal.money import UNATTRIBUTED
from llmledger.exporter._internal.store import read_only_settings, run_query

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "QueryRunner",
    "ReportQuery",
    "ReportResult",
    "client_runner",
    "known_cost",
    "parse_when",
    "run_report",
]

# dimension → (rollup expression, llm_calls expression)
DIMENSIONS: dict[str, tuple[str | None, str]] = {
    "tenant": ("tenant_id", "c.tenant_id"),
    "user": ("user_id", "c.user_id"),
    "feature": ("feature", "c.feature"),
    "model": ("model", "c.response_model"),
    "provider": ("provider", "c.provider"),
    "operation": ("operation", "c.operation"),
    "day": ("toDate(hour)", "toDate(c.Timestamp)"),
    "hour": ("hour", "toStartOfHour(c.Timestamp)"),
    "conversation": (None, "c.conversation_id"),
}
METRICS: tuple[str, ...] = (
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
)


@dataclass(frozen=True)
class ReportQuery:
    group_by: Sequence[str] = ("tenant",)
    since: datetime | None = None
    until: datetime | None = None
    tenants: Sequence[str] = ()
    users: Sequence[str] = ()
    features: Sequence[str] = ()
    models: Sequence[str] = ()
    providers: Sequence[str] = ()
    limit: int = 1000
    problems: list[str] = field(default_factory=list[str], compare=False)

    def validate(self) -> list[str]:
        problems: list[str] = []
        if not self.group_by:
            problems.append("--by needs at least one of: " + ", ".join(DIMENSIONS))
        for dim in self.group_by:
            if dim not in DIMENSIONS:
                problems.append(f"unknown grouping {dim!r}; choose from: {', '.join(DIMENSIONS)}")
        if len(set(self.group_by)) != len(self.group_by):
            problems.append("--by lists a grouping twice")
        if self.since and self.until and self.since >= self.until:
            problems.append(
                f"--since ({self.since.isoformat()}) must be before --until ({self.until.isoformat()})"
            )
        if not 1 <= self.limit <= 1_000_000:
            problems.append("--limit must be between 1 and 1000000")
        return problems


def known_cost(cost: Decimal, calls: int, errors: int, unpriced_calls: int) -> Decimal | None:
    """A group's cost, or None when none of its calls could be priced.

    The store sums the priced calls and counts the unpriced ones; a group made only of
    unpriced (and failed) calls has no known cost, which is not the same as costing 0.
    A group with some priced calls shows their sum, and ``unpriced_calls`` says how many
    are missing from it.
    """
    if unpriced_calls and not cost and calls - errors <= unpriced_calls:
        return None
    return cost


@dataclass(frozen=True)
class ReportResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    source: str  # "llm_usage_hourly" or "llm_calls"

    def totals(self) -> dict[str, int | Decimal]:
        out: dict[str, int | Decimal] = {}
        for metric in METRICS:
            index = self.columns.index(metric)
            out[metric] = sum((row[index] for row in self.rows), Decimal(0) if metric == "cost_usd" else 0)
        return out

    def presented(self) -> list[tuple[Any, ...]]:
        """Rows as people read them: unknown cost as None, calls without a tenant as ``(unattributed)``."""
        index = {name: i for i, name in enumerate(self.columns)}
        out: list[tuple[Any, ...]] = []
        for row in self.rows:
            values = list(row)
            values[index["cost_usd"]] = known_cost(
                row[index["cost_usd"]],
                row[index["calls"]],
                row[index["errors"]],
                row[index["unpriced_calls"]],
            )
            if "tenant" in index and values[index["tenant"]] == "":
                values[index["tenant"]] = UNATTRIBUTED
            out.append(tuple(values))
        return out

    def total_row(self) -> tuple[Any, ...]:
        """The sums of every measure under the grouping columns (labelled ``total``), cost known or None."""
        totals: dict[str, Any] = dict(self.totals())
        totals["cost_usd"] = known_cost(
            totals["cost_usd"], totals["calls"], totals["errors"], totals["unpriced_calls"]
        )
        dims = [name for name in self.columns if name not in METRICS]
        return tuple(
            ("total" if name == dims[0] else "") if name in dims else totals[name] for name in self.columns
        )


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """``2026-11-01``, ``2026-11-01T12:00``, or relative ``7d`` / ``24h`` / ``30m`` before now (UTC)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    units = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}
    if value[:-1].isdigit() and value[-1:] in units:
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (2026-11-01, 2026-11-01T12:00) or a span back from now (7d, 24h)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _template(name: str) -> Template:
    return Template(resources.files("llmledger.exporter._internal").joinpath("queries", name).read_text())


class QueryRunner(Protocol):
    """Runs one read-only query with bound parameters."""

    def __call__(
        self, sql: str, parameters: Mapping[str, object]
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...


def client_runner(client: Client) -> QueryRunner:
    def run(sql: str, parameters: Mapping[str, object]) -> tuple[list[str], list[tuple[Any, ...]]]:
        result = run_query(client, sql, parameters=parameters, settings=read_only_settings(client))
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    return run


def run_report(client: Client | QueryRunner, database: str, query: ReportQuery) -> ReportResult:
    problems = query.validate()
    if problems:
        raise ValueError("; ".join(problems))
    use_calls = any(DIMENSIONS[d][0] is None for d in query.group_by)
    exprs = [DIMENSIONS[d][1 if use_calls else 0] or "" for d in query.group_by]
    dims = ", ".join(
        f"{expr} AS {dim}" if expr != dim else dim for expr, dim in zip(exprs, query.group_by, strict=True)
    )
    time_dims = [d for d in query.group_by if d in ("day", "hour")]
    order = ", ".join([*time_dims, "cost_usd DESC", *(d for d in query.group_by if d not in time_dims)])
    sql = _template("report_calls.sql" if use_calls else "report_rollup.sql").substitute(
        db=quote_identifier(database, "database name"), dims=dims, order=order
    )
    since = query.since or datetime(1970, 1, 1, tzinfo=UTC)
    until = query.until or datetime(2200, 1, 1, tzinfo=UTC)
    runner = client_runner(client) if isinstance(client, Client) else client
    columns, rows = runner(
        sql,
        {
            "since": since.replace(tzinfo=None),
            "until": until.replace(tzinfo=None),
            "tenants": list(query.tenants),
            "users": list(query.users),
            "features": list(query.features),
            "models": list(query.models),
            "providers": list(query.providers),
            "limit": query.limit,
        },
    )
    return ReportResult(columns, rows, "llm_calls" if use_calls else "llm_usage_hourly")
