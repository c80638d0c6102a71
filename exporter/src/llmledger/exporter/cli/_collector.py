"""``llmledger collector``: run the OTLP receiver that spools spans and writes them to the store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from llmledger.exporter._internal.collector import SETTINGS, Collector, CollectorConfig, CollectorStartError
from llmledger.exporter._internal.collector.config import ENV_CONFIG_FILE
from llmledger.exporter._internal.collector.log_format import configure_logging
from llmledger.exporter._internal.collector.spool import SpoolError
from llmledger.exporter.cli import _dead_letters

__all__ = ["config_from_args", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "collector",
        help="run the OTLP collector (gRPC :4317, HTTP :4318) that lands spans in the store",
        description="Receive OTLP traces over gRPC and HTTP, keep them in a durable spool, and write them "
        "to the store in batches. Settings come from flags, LLMLEDGER_COLLECTOR_* variables and an "
        "optional TOML file, in that order of precedence (see docs/collector.md).",
    )
    parser.add_argument("--config", type=Path, help=f"TOML config file (default: {ENV_CONFIG_FILE})")
    store = parser.add_argument_group("store")
    store.add_argument(
        "--url", dest="clickhouse_url", metavar="URL", help="store URL (overrides LLMLEDGER_CLICKHOUSE_URL)"
    )
    store.add_argument("--database", help="database name (default: from the URL, else llmledger)")
    group = parser.add_argument_group("collector")
    for setting in SETTINGS:
        if setting.kind == "bool":
            group.add_argument(
                setting.flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{setting.help} (default: {'on' if setting.default else 'off'}; env {setting.env})",
            )
        else:
            default = "" if setting.default is None else f"default: {setting.default}; "
            group.add_argument(
                setting.flag,
                dest=setting.name,
                choices=setting.choices or None,
                default=None,
                help=f"{setting.help} ({default}env {setting.env})",
            )
    parser.set_defaults(handler=_run)
    _dead_letters.register(parser.add_subparsers(title="maintenance", metavar="ACTION", required=False))


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """The configuration the parsed flags give (flags left out default to ``None``: not given)."""
    flags = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
    flags["clickhouse_url"] = args.clickhouse_url
    flags["database"] = args.database
    return CollectorConfig.build(flags, env=env, config_file=args.config)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    configure_logging(config.log_format, config.log_level)
    try:
        return Collector(config).run()
    except CollectorStartError as exc:  # every reason at once, one line each, before anything served
        for problem in exc.problems:
            print(f"llmledger collector: {problem}", file=sys.stderr)
        return 2
    except SpoolError as exc:  # an unwritable disk after the start
        print(f"llmledger collector: {exc}", file=sys.stderr)
        return 2
