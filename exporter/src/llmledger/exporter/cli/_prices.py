"""``llmledger prices``: which price applies and why (``show``), check a price file (``validate``),
and load prices into the store's ``model_prices`` (``sync``)."""

from __future__ import annotations

import argparse
import sys

from llmledger.exporter._internal.config import PriceSources
from llmledger.exporter._internal.prices import price_book, write_prices
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
        description="Write the price book the instrumentation prices calls with -- genai-prices' bundled "
        "data (no network) and, when given, your TOML price file, with Azure deployments from "
        "LLMLEDGER_AZURE_DEPLOYMENTS -- to model_prices, replacing the previous one at once. A price file "
        "with any problem is refused as a whole and nothing is written.",
    )
    sync.add_argument("--price-file", help="TOML price file (default: LLMLEDGER_PRICE_FILE)")
    sync.add_argument("--no-genai-prices", action="store_true", help="load only the price file")
    add_store_options(sync)
    sync.set_defaults(handler=_sync)

    show = actions.add_parser(
        "show",
        help="which price applies to a model, and why",
        description="Explain the price the instrumentation uses for a call: the lookup steps (your price "
        "file, genai-prices' bundled data, Azure deployment mapping, service tier), the rates per million "
        "tokens and the period they are in effect, from the same settings as the app: your price file "
        "(LLMLEDGER_PRICE_FILE) and Azure deployments (LLMLEDGER_AZURE_DEPLOYMENTS). "
        "Example: llmledger prices show gpt-4o-mini",
    )
    show.add_argument("model", help="the model as the API reports it, e.g. gpt-4o-2024-08-06")
    show.add_argument("--provider", default="openai", help="gen_ai.provider.name (default openai)")
    show.add_argument("--service-tier", help="priority, flex, batch, default ...")
    show.add_argument("--price-file", help="TOML price file (default: LLMLEDGER_PRICE_FILE)")
    show.add_argument(
        "--azure-deployment",
        action="append",
        default=[],
        metavar="DEPLOYMENT=MODEL",
        help="map an Azure deployment to its model, over LLMLEDGER_AZURE_DEPLOYMENTS (repeatable)",
    )
    show.set_defaults(handler=_show)

    validate = actions.add_parser(
        "validate",
        help="check a price file and report every problem",
        description="Parse a TOML price file and list every problem with its file, line and field; "
        "exit 0 when it is valid, 1 when it is not.",
    )
    validate.add_argument("price_file", help="the TOML price file")
    validate.set_defaults(handler=_validate)


def _sync(args: argparse.Namespace) -> int:
    from llmledger.instrumentation.pricing import PriceFileError, refused_price_file

    config = store_config(args)
    sources = PriceSources.resolve(price_file=args.price_file)
    try:
        # The book the app compiles from the same settings (price file, Azure deployments).
        book = price_book(
            sources.price_file,
            genai_prices=not args.no_genai_prices,
            azure_deployments=sources.azure_deployments,
        )
    except PriceFileError as exc:  # every problem listed; nothing is written
        print(refused_price_file(exc) + " (nothing was written)", file=sys.stderr)
        return 2
    rows = list(book.price_rows())
    client = open_store(config, use_database=False, write=True)
    try:
        exists = run_query(
            client,
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'model_prices_next'",
            parameters={"db": config.database},
        ).result_rows[0][0]
        if not exists:
            raise StoreError(
                f"{config.database}.model_prices is missing or older than this version: "
                "run `llmledger schema apply` first"
            )
        written = write_prices(client, config.database, rows, cluster=config.cluster)
    finally:
        client.close()
    print(
        f"wrote the price book to {config.database}.model_prices: {written.models} models, "
        f"{written.rows} prices ({written.custom} from the price file)"
    )
    if written.skipped:
        print(
            f"left out {written.skipped} prices with more than 18 decimals: the store leaves those calls unpriced",
            file=sys.stderr,
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    from llmledger.instrumentation.pricing import PriceBook, PriceFileError

    deployments: dict[str, str] = {}
    for item in args.azure_deployment:
        name, sep, model = str(item).partition("=")
        if not sep or not name or not model:
            print(
                f"llmledger prices show: --azure-deployment {item!r} is not DEPLOYMENT=MODEL", file=sys.stderr
            )
            return 2
        deployments[name] = model
    # The app's settings, so the price explained is the one the app applies.
    sources = PriceSources.resolve(price_file=args.price_file, azure_deployments=deployments)
    try:
        book = PriceBook.from_config(
            price_file=sources.price_file, azure_deployments=sources.azure_deployments
        )
    except PriceFileError as exc:
        print(f"llmledger: {exc}", file=sys.stderr)
        return 2
    explanation = book.explain(args.provider, args.model, service_tier=args.service_tier)
    print(explanation)
    return 0 if explanation.source is not None else 1


def _validate(args: argparse.Namespace) -> int:
    from llmledger.instrumentation.pricing import PriceFileError, load_price_file

    try:
        prices = load_price_file(args.price_file)
    except PriceFileError as exc:
        print(f"llmledger: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"llmledger: cannot read {args.price_file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{args.price_file}: {len(prices)} prices, no problems")
    return 0
