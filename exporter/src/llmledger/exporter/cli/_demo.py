"""``llmledger demo``: the whole flow (fake OpenAI server, instrumented app, store, report) on an embedded store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmledger.exporter._internal.demo.run import default_demo_dir, run_demo

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "demo",
        help="run the whole flow locally and print the cost per tenant",
        description="Start a local OpenAI-compatible server and the collector on a fresh embedded store of "
        "the demo's own, run a sample multi-tenant app under opentelemetry-instrument sending spans to the "
        "collector, and print the cost per tenant. Needs no network and no API key; your own store is "
        "not touched.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"the demo's directory (store, collector spool, log), recreated on every run "
        f"(default: {default_demo_dir()})",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    code, _ = run_demo(args.dir or default_demo_dir(), sys.stdout)
    return code
