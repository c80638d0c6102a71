"""The ``llmledger`` command line: one module per subcommand, registered in :data:`COMMANDS`.

Adding a subcommand is one module with a ``register(subparsers)`` function and one line
in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Final

from clickhouse_connect.driver.exceptions import ClickHouseError

from llmledger.exporter._internal.config import ConfigError
from llmledger.exporter._internal.identifiers import IdentifierError
from llmledger.exporter._internal.store import StoreError
from llmledger.exporter.cli import _budget, _collector, _demo, _prices, _report, _schema, _sql, _tenant_user
from llmledger.exporter.version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: Final[tuple[ModuleType, ...]] = (
    _collector,
    _demo,
    _report,
    _budget,
    _schema,
    _sql,
    _prices,
    _tenant_user,
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every registered subcommand included."""
    parser = argparse.ArgumentParser(
        prog="llmledger",
        description="Measure, price and attribute LLM calls; land them in ClickHouse.",
        epilog="The store is LLMLEDGER_CLICKHOUSE_URL (http(s)://user:pass@host:8123/db or chdb:///path); "
        "without it, the embedded store in $XDG_DATA_HOME/llmledger/store.",
    )
    parser.add_argument("--version", action="version", version=f"llmledger {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="llmledger: %(levelname)s: %(message)s")
    # clickhouse-connect logs each failed HTTP attempt; the error we print says it once.
    logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ConfigError, IdentifierError, StoreError) as exc:
        print(f"llmledger: {exc}", file=sys.stderr)
        return 2
    except ClickHouseError as exc:  # the query or statement failed in ClickHouse: its message says why
        print(f"llmledger: {exc}", file=sys.stderr)
        hint = _hint(str(exc))
        if hint:
            print(f"  {hint}", file=sys.stderr)
        return 1


def _hint(message: str) -> str | None:
    """What to do next for the ClickHouse errors people hit most."""
    if "UNKNOWN_IDENTIFIER" in message or "NO_SUCH_COLUMN_IN_TABLE" in message:
        return 'list a table\'s columns with: llmledger sql "DESCRIBE llm_calls" (or llm_usage_hourly, otel_traces)'
    if "UNKNOWN_TABLE" in message or "UNKNOWN_DATABASE" in message:
        return "create the tables with: llmledger schema apply (and check --database / the URL's database)"
    if "ILLEGAL_AGGREGATION" in message:
        return "an alias equal to a column name is resolved inside the aggregate; alias sums differently (AS spend)"
    if "READONLY" in message:
        return "llmledger sql is read-only; change data with the dedicated commands (schema, prices, budget)"
    return None
