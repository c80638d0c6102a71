"""``llmledger prices sync``: load genai-prices and the user's price file into ``model_prices``."""

from __future__ import annotations

import argparse
import os
import sys

from llmledger.exporter._internal.prices import genai_price_rows, price_file_rows, write_prices
from llmledger.exporter._internal.store import StoreError, open_store, run_query
from llmledger.exporter.cli._common import add_store_options, store_config

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    prices = subparsers.add_parser(
        "prices",
        help="manage the prices the store uses for spans without a cost",
        description="Prices in model_prices price spans that arrive without gen_ai.usage.cost "
        "(other instrumentations' spans). Our own instrumentation prices calls itself.",
    )
    actions = prices.add_subparsers(title="actions", metavar="ACTION", required=True)
    sync = actions.add_parser(
        "sync",
        help="load genai-prices' bundled prices and your price file into model_prices",
        description="Insert current prices from genai-prices' bundled data (no network) and, when given, "
        "your TOML price file (custom prices outrank genai-prices for the same provider and model).",
    )
    sync.add_argument(
        "--price-file",
        default=os.environ.get("LLMLEDGER_PRICE_FILE") or None,
        help="TOML price file (default: LLMLEDGER_PRICE_FILE)",
    )
    sync.add_argument("--no-genai-prices", action="store_true", help="load only the price file")
    add_store_options(sync)
    sync.set_defaults(handler=_sync)


def _sync(args: argparse.Namespace) -> int:
    config = store_config(args)
    rows = [] if args.no_genai_prices else genai_price_rows()
    try:
        custom = price_file_rows(args.price_file) if args.price_file else []
    except ValueError as exc:  # the price file's problems, every one listed
        print(f"llmledger: {exc}", file=sys.stderr)
        return 2
    client = open_store(config, use_database=False)
    try:
        exists = run_query(
            client,
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'model_prices'",
            parameters={"db": config.database},
        ).result_rows[0][0]
        if not exists:
            raise StoreError(
                f"{config.database}.model_prices does not exist: run `llmledger schema apply` first"
            )
        written = write_prices(client, config.database, [*rows, *custom])
    finally:
        client.close()
    print(
        f"wrote {written} prices to {config.database}.model_prices "
        f"({len(rows)} genai-prices, {len(custom)} custom)"
    )
    return 0
