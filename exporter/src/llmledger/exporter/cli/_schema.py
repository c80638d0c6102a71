"""``llmledger schema apply|status``: versioned migrations of the store's tables."""

from __future__ import annotations

import argparse

from llmledger.exporter._internal.migrations import apply_migrations, migration_status
from llmledger.exporter._internal.store import open_store
from llmledger.exporter.cli._common import add_store_options, store_config

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    schema = subparsers.add_parser(
        "schema",
        help="apply or inspect the store's schema migrations",
        description="Create and upgrade llmledger's tables (otel_traces, llm_calls, llm_usage_hourly, "
        "model_prices, budgets). Migrations are versioned and idempotent.",
    )
    actions = schema.add_subparsers(title="actions", metavar="ACTION", required=True)
    apply = actions.add_parser(
        "apply",
        help="apply every pending migration",
        description="Apply pending migrations; applying twice changes nothing. TTLs and cluster mode "
        "take effect when a table is created.",
    )
    add_store_options(apply, layout=True)
    apply.add_argument("--target", type=int, help="stop after this migration version")
    apply.set_defaults(handler=_apply)
    status = actions.add_parser("status", help="list migrations and whether each is applied")
    add_store_options(status)
    status.set_defaults(handler=_status)


def _apply(args: argparse.Namespace) -> int:
    config = store_config(args)
    client = open_store(config, use_database=False, write=True)
    try:
        applied = apply_migrations(client, config, target=args.target)
    finally:
        client.close()
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print(f"schema of {config.database} is up to date")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = store_config(args)
    client = open_store(config, use_database=False)
    try:
        statuses = migration_status(client, config)
    finally:
        client.close()
    print(f"store {config.display_url}, database {config.database}")
    for status in statuses:
        m = status.migration
        if status.applied_at is None:
            state = "pending"
        else:
            changed = " (file changed since)" if status.applied_checksum != m.checksum else ""
            state = f"applied {status.applied_at:%Y-%m-%d %H:%M:%S} UTC{changed}"
        print(f"  {m.version:04d}_{m.name:<24} {state}")
    return 0
