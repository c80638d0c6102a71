"""``llmledger sql``: a read-only query against the store, printed as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

from llmledger.exporter._internal.money import plain_decimal
from llmledger.exporter.cli._common import add_store_options, read_query, store_config

__all__ = ["register", "table_text", "write_result"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "sql",
        help="run a read-only SQL query against the store",
        description="Run one read-only query (readonly=1) in the store's database, e.g. "
        'llmledger sql "SELECT tenant_id, sum(cost_usd) FROM llm_calls GROUP BY tenant_id". '
        "Use - to read the query from stdin.",
    )
    parser.add_argument("query", help="the SQL query, or - for stdin")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    add_store_options(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    query: str = sys.stdin.read() if args.query == "-" else args.query
    columns, rows = read_query(store_config(args), query)
    write_result(columns, rows, args.format, sys.stdout)
    return 0


def table_text(value: Any) -> str:
    """One value as a table or CSV cell: plain decimals, ISO times, ``NULL`` for a missing value."""
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def _json_value(value: Any) -> Any:
    # Decimals stay exact: written as plain decimal strings, not rounded through float.
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def write_result(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    out: TextIO,
    *,
    table_cells: Sequence[Sequence[str]] | None = None,
    total: Sequence[str] | None = None,
) -> None:
    """Print a result as an aligned ``table``, ``csv`` with a header, or a ``json`` array of objects.

    ``table_cells`` replaces the table's rendering of ``rows`` (cell for cell) where people
    need words instead of values; ``total`` is a last table row under a rule.
    """
    if fmt == "json":
        json.dump([dict(zip(columns, map(_json_value, row), strict=True)) for row in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else table_text(v) for v in row] for row in rows])
    else:
        cells = (
            [list(row) for row in table_cells]
            if table_cells is not None
            else [[table_text(v) for v in row] for row in rows]
        )
        shown = [*cells, list(total)] if total is not None else cells
        widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(columns)]
        rule = "  ".join("-" * w for w in widths) + "\n"
        out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
        out.write(rule)
        for row in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
        if total is not None:
            out.write(rule)
            out.write("  ".join(v.ljust(w) for v, w in zip(total, widths, strict=True)).rstrip() + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
