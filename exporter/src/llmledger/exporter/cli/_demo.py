"""``llmledger demo``: the whole flow (fake OpenAI server, instrumented app, store, report) on an embedded store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmledger.exporter._internal.demo.run import default_demo_store, run_demo

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "demo",
        help="run the whole flow locally and print the cost per tenant",
        description="Start a local OpenAI-compatible server, run a sample multi-tenant app under "
        "opentelemetry-instrument, land its spans in a fresh embedded store of its own and print the "
        "cost per tenant. Needs no network and no API key; your own store is not touched.",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"the demo's store directory, recreated on every run (default: {default_demo_store()})",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    code, _ = run_demo(args.store or default_demo_store(), sys.stdout)
    return code
