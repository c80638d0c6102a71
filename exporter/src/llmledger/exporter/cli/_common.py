"""Options every store-touching subcommand shares, and the config they build."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.store import open_store

__all__ = ["add_store_options", "read_query", "store_config"]


def add_store_options(parser: argparse.ArgumentParser, *, layout: bool = False) -> None:
    """``--url`` and ``--database``; with ``layout`` also ``--cluster`` and the TTLs."""
    group = parser.add_argument_group("store")
    group.add_argument("--url", help="store URL (overrides LLMLEDGER_CLICKHOUSE_URL)")
    group.add_argument("--database", help="database name (default: from the URL, else llmledger)")
    if layout:
        group.add_argument("--cluster", help="emit ON CLUSTER <name> with Replicated engines (servers only)")
        group.add_argument(
            "--ttl-days",
            "--spans-ttl-days",
            dest="spans_ttl_days",
            type=int,
            help="keep raw spans (otel_traces) this many days; 0 keeps them forever",
        )
        group.add_argument(
            "--calls-ttl-days", type=int, help="keep llm_calls rows this many days; 0 = forever"
        )
        group.add_argument(
            "--rollup-ttl-days", type=int, help="keep llm_usage_hourly this many days; 0 = forever"
        )


def store_config(args: argparse.Namespace) -> StoreConfig:
    """The validated store config from the environment and the parsed flags."""
    overrides = {
        name: getattr(args, name, None)
        for name in ("url", "database", "cluster", "spans_ttl_days", "calls_ttl_days", "rollup_ttl_days")
    }
    return StoreConfig.from_env(**overrides)


def read_query(
    config: StoreConfig, sql: str, parameters: Mapping[str, object] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query on the store (through the collector when it owns the embedded store)."""
    from llmledger.exporter._internal.report import client_runner

    client = open_store(config)
    try:
        return client_runner(client)(sql, parameters or {})
    finally:
        client.close()
