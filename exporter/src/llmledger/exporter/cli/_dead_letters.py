"""``llmledger collector dead-letters``: list, show and replay what the store refused for good."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from clickhouse_connect.driver.client import Client
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.collector.config import default_data_dir
from llmledger.exporter._internal.collector.dead_letters import DeadLetter, DeadLetterFile
from llmledger.exporter._internal.collector.pieces import INSERT_FAILURES, SHAPES, refusal_reason
from llmledger.exporter._internal.errors import contain
from llmledger.exporter._internal.log_rows import LogRows
from llmledger.exporter._internal.metric_rows import MetricRows
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import open_store
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.exporter.cli._common import add_store_options, store_config

__all__ = ["register"]


def register(collector_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:  # pyright: ignore[reportPrivateUsage]
    parser = collector_commands.add_parser(
        "dead-letters",
        help="list, show and replay what the store refused for good",
        description="Spans, metric data points and log records the store refused for their content (and "
        "that could not be split away from the refusal) are kept in <data-dir>/dead-letters/dead-letters.log. Replay them once the cause "
        "is fixed (a schema change, a constraint dropped, a new version): each is inserted with a "
        "deduplication token of its own, so a repeated replay does not write it twice.",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="the collector's data directory (default: as `llmledger collector`)"
    )
    commands = parser.add_subparsers(dest="dead_letter_command", metavar="ACTION", required=True)
    commands.add_parser("list", help="one line per entry: key, signal, items, when, replayed, why")
    show = commands.add_parser(
        "show", help="an entry's request (spans, data points or log records) as OTLP/JSON"
    )
    show.add_argument("key", help="the entry's key (from `list`)")
    replay = commands.add_parser(
        "replay", help="insert the entries not yet replayed (or those named) into the store"
    )
    replay.add_argument("keys", nargs="*", help="keys to replay (default: every entry not yet replayed)")
    add_store_options(replay)
    parser.set_defaults(handler=_run)


def _file(args: argparse.Namespace) -> DeadLetterFile:
    data_dir: Path = args.data_dir or default_data_dir()
    return DeadLetterFile(data_dir / "dead-letters")


def _run(args: argparse.Namespace) -> int:
    dead_letters = _file(args)
    entries = dead_letters.entries()
    if args.dead_letter_command == "list":
        if not entries:
            print(f"no dead letters in {dead_letters.path}")
        for entry in entries:
            when = datetime.datetime.fromtimestamp(entry.at_ms / 1000, datetime.UTC).isoformat(
                timespec="seconds"
            )
            state = "replayed" if entry.replayed else "pending"
            print(
                f"{entry.key}\t{entry.signal}\t{entry.items} {_noun(entry)}(s)\t{when}\t{state}\t{entry.reason}"
            )
        return 0
    if args.dead_letter_command == "show":
        found = [entry for entry in entries if entry.key == args.key]
        if not found:
            print(f"llmledger: no dead letter {args.key!r} in {dead_letters.path}", file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    "key": found[0].key,
                    "signal": found[0].signal,
                    "reason": found[0].reason,
                    "request": _as_json(found[0]),
                },
                indent=2,
            )
        )
        return 0
    return _replay(args, dead_letters, entries)


def _noun(entry: DeadLetter) -> str:
    shape = SHAPES.get(entry.signal)
    return "item" if shape is None else shape.noun


def _as_json(entry: DeadLetter) -> object:
    shape = SHAPES.get(entry.signal)
    if shape is None:  # written by a newer version
        return {"unknown signal": entry.signal, "bytes": len(entry.payload)}
    try:
        return json_format.MessageToDict(shape.parse(entry.payload))
    except Exception as exc:  # the request did not parse: that may be why it is here
        contain("llmledger dead-letters showing an entry", exc, (DecodeError, ValueError))
        return {"unparseable": f"{type(exc).__name__}: {exc}", "bytes": len(entry.payload)}


def _write(client: Client, database: str, entry: DeadLetter) -> None:
    """Insert ``entry``'s request into its signal's tables, with a token of the entry's own.

    A replay repeated (after a crash, or twice) is dropped by the store's deduplication.
    """
    token = f"{entry.key}/replay"
    if entry.signal == "metrics":
        metric_rows = MetricRows()
        metric_rows.add_otlp(ExportMetricsServiceRequest.FromString(entry.payload))
        metric_rows.write(client, database, token)
    elif entry.signal == "logs":
        log_rows = LogRows()
        log_rows.add_otlp(ExportLogsServiceRequest.FromString(entry.payload))
        log_rows.write(client, database, token)
    elif entry.signal == "traces":
        span_rows = SpanRows()
        span_rows.add_otlp(ExportTraceServiceRequest.FromString(entry.payload))
        SpanWriter(client, database).write(span_rows, token)
    else:
        raise ValueError(f"an entry of an unknown signal {entry.signal!r} (written by a newer version?)")


def _replay(args: argparse.Namespace, dead_letters: DeadLetterFile, entries: list[DeadLetter]) -> int:
    keys: list[str] = args.keys
    chosen = [entry for entry in entries if (entry.key in keys if keys else not entry.replayed)]
    missing = set(keys) - {entry.key for entry in entries}
    if missing:
        print(f"llmledger: no dead letter(s) {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    if not chosen:
        print("nothing to replay")
        return 0
    config = store_config(args)
    client = open_store(config, write=True)  # through the collector, when it owns the embedded store
    failed = 0
    try:
        for entry in chosen:
            try:
                _write(client, config.database, entry)
            except Exception as exc:
                contain("llmledger dead-letters replaying an entry", exc, INSERT_FAILURES)
                reason = refusal_reason(exc)
                if reason is None:
                    raise  # the store's trouble, not the entry's: stop and say so
                failed += 1
                print(f"{entry.key}: still refused: {reason}", file=sys.stderr)
                continue
            dead_letters.mark_replayed(entry.key)
            print(f"{entry.key}: replayed {entry.items} {_noun(entry)}(s)")
    finally:
        client.close()
    return 1 if failed else 0
