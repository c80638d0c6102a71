"""``llmledger demo``: the whole flow (fake OpenAI server, instrumented app, store, report) on an
embedded store — or, with ``--serve-api``, only the local OpenAI-compatible server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmledger.exporter._internal.demo.run import default_demo_dir, run_demo
from llmledger.exporter._internal.demo.server import DemoOpenAIServer, serve_until_stopped

__all__ = ["register"]

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = subparsers.add_parser(
        "demo",
        help="run the whole flow locally and print the cost per tenant",
        description="Start a local OpenAI-compatible server and the collector on a fresh embedded store of "
        "the demo's own, run a sample multi-tenant app under opentelemetry-instrument sending spans to the "
        "collector, and print the cost per tenant. Needs no network and no API key; your own store is "
        "not touched. With --serve-api, run only the OpenAI-compatible server, as a local stand-in for "
        "the API (chat completions, Responses, completions, embeddings; plain and streamed).",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"the demo's directory (store, collector spool, log), recreated on every run "
        f"(default: {default_demo_dir()})",
    )
    api = parser.add_argument_group("the OpenAI-compatible server on its own")
    api.add_argument(
        "--serve-api",
        action="store_true",
        help="run only the demo's OpenAI-compatible server, in the foreground until Ctrl-C",
    )
    api.add_argument(
        "--host",
        default=None,
        help=f"with --serve-api: the address to listen on (default: {DEFAULT_API_HOST})",
    )
    api.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"with --serve-api: the port (default: {DEFAULT_API_PORT}; 0 picks a free one)",
    )
    api.add_argument(
        "--failing-model",
        action="append",
        default=[],
        metavar="MODEL=SHARE",
        type=_failing_model,
        help="with --serve-api: answer this share (0..1) of MODEL's requests with a 503, as an overloaded "
        "model does (repeatable; e.g. gpt-4.1=0.35, what the demo uses)",
    )
    parser.set_defaults(handler=_run)


def _failing_model(value: str) -> tuple[str, float]:
    model, _, share = value.partition("=")
    try:
        fraction = float(share)
    except ValueError:
        fraction = -1.0
    if not model or not 0.0 <= fraction <= 1.0:
        raise argparse.ArgumentTypeError(f"expected MODEL=SHARE with SHARE from 0 to 1, got {value!r}")
    return model, fraction


def _run(args: argparse.Namespace) -> int:
    server_only = [
        flag
        for flag, given in (
            ("--host", args.host is not None),
            ("--port", args.port is not None),
            ("--failing-model", bool(args.failing_model)),
        )
        if given
    ]
    if server_only and not args.serve_api:
        needs = "needs" if len(server_only) == 1 else "need"
        print(f"llmledger demo: {', '.join(server_only)} {needs} --serve-api", file=sys.stderr)
        return 2
    if args.serve_api and args.dir is not None:
        print(
            "llmledger demo: --dir does not apply with --serve-api (the server keeps nothing)",
            file=sys.stderr,
        )
        return 2
    if args.serve_api:
        host = args.host or DEFAULT_API_HOST
        port = DEFAULT_API_PORT if args.port is None else args.port
        try:
            server = DemoOpenAIServer(host, port, failing_models=dict(args.failing_model))
        except OSError as exc:
            print(
                f"llmledger demo: cannot listen on {host}:{port} ({exc.strerror}); pick another --port",
                file=sys.stderr,
            )
            return 2
        return serve_until_stopped(server, sys.stdout)
    code, _ = run_demo(args.dir or default_demo_dir(), sys.stdout)
    return code
