"""``llmledger report``: cost and tokens by tenant, user, feature, conversation, model, provider, operation, day or hour."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from llmledger.exporter._internal.money import UNPRICED
from llmledger.exporter._internal.report import (
    DIMENSIONS,
    ReportQuery,
    ReportResult,
    parse_when,
    run_report,
)
from llmledger.exporter._internal.store import open_store
from llmledger.exporter.cli._common import add_store_options, store_config
from llmledger.exporter.cli._sql import table_text, write_result

__all__ = ["register"]


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "report",
        help="cost, tokens, calls, errors and fallbacks, grouped and filtered",
        description="Sum cost (exact USD), tokens, calls, errors and fallbacks per group. "
        "Groupings: " + ", ".join(DIMENSIONS) + ". Examples: "
        "`llmledger report --by tenant`, `llmledger report --by tenant,model --since 7d`, "
        "`llmledger report --by day,feature --tenant acme --format csv`. "
        "Every grouping but conversation reads the hourly rollup, so --since/--until work at hour granularity.",
    )
    parser.add_argument(
        "--by", default="tenant", type=_csv, help="comma-separated groupings (default: tenant)"
    )
    parser.add_argument(
        "--since", help="start (inclusive): 2026-11-01, 2026-11-01T12:00 (UTC) or 7d/24h back"
    )
    parser.add_argument("--until", help="end (exclusive), same forms as --since")
    parser.add_argument("--tenant", action="append", default=[], help="only this tenant (repeatable)")
    parser.add_argument("--user", action="append", default=[], help="only this user (repeatable)")
    parser.add_argument("--feature", action="append", default=[], help="only this feature (repeatable)")
    parser.add_argument("--model", action="append", default=[], help="only this response model (repeatable)")
    parser.add_argument("--provider", action="append", default=[], help="only this provider (repeatable)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    add_store_options(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    since = until = None
    for name in ("since", "until"):
        raw = getattr(args, name)
        if raw:
            try:
                value = parse_when(raw)
            except ValueError as exc:
                problems.append(f"--{name}: {exc}")
                continue
            if name == "since":
                since = value
            else:
                until = value
    query = ReportQuery(
        group_by=tuple(args.by),
        since=since,
        until=until,
        tenants=tuple(args.tenant),
        users=tuple(args.user),
        features=tuple(args.feature),
        models=tuple(args.model),
        providers=tuple(args.provider),
        limit=args.limit,
    )
    problems += query.validate()
    if problems:
        print(
            "llmledger report: invalid arguments:\n" + "\n".join(f"  - {p}" for p in problems),
            file=sys.stderr,
        )
        return 2
    config = store_config(args)
    client = open_store(config)
    try:
        result = run_report(client, config.database, query)
    finally:
        client.close()
    write_report(result, args.format, sys.stdout)
    return 0


def write_report(result: ReportResult, fmt: str, out: TextIO) -> None:
    """The report as a table with a total row (unknown cost reads ``unpriced``), or as CSV/JSON
    where an unknown cost is an empty cell / ``null``."""
    rows = result.presented()
    if fmt != "table":
        write_result(result.columns, rows, fmt, out)
        return
    total = result.total_row()
    write_result(
        result.columns,
        rows,
        fmt,
        out,
        table_cells=[_cells(result.columns, row) for row in rows],
        total=_cells(result.columns, total),
    )


def _cells(columns: list[str], row: tuple[Any, ...]) -> list[str]:
    return [
        UNPRICED if name == "cost_usd" and value is None else table_text(value)
        for name, value in zip(columns, row, strict=True)
    ]
