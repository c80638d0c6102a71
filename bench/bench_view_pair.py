"""The view chain's engine cost, another version of llmledger against this one, in one store and one process.

Usage::

    git archive main | tar -x -C /tmp/llmledger-main
    .venv/bin/python bench/bench_view_pair.py /tmp/llmledger-main --batch 20000 --rounds 8
    .venv/bin/python bench/bench_view_pair.py /tmp/llmledger-main --batch 10 --rounds 30 --without-cost
    .venv/bin/python bench/bench_view_pair.py /tmp/llmledger-main --batch 1000 --rounds 12 --seed 1000000

Database ``before`` gets its schema (and, ``--without-cost``, its prices through ``llmledger
prices sync``) from the other version's code, run in a child process with that tree's
``src`` folders first on ``PYTHONPATH``; database ``after`` from this tree's. Both live in one
embedded store, and this process then writes the same kind of spans (``bench_writer.make_spans``,
unique response ids) to each in turn, alternating which goes first: load from elsewhere on a
shared machine falls on both alike. With ``--seed N`` each database first gets N other calls
(50,000 per insert, untimed, their merges left to finish): a busy store, whose last 15
minutes hold N calls, as the inserts that follow meet it; merges are then stopped, so the
figures are the inserts' own cost (the seed's parts would otherwise merge at random moments
of the timed inserts, and their CPU time would land on whichever insert ran then). Prints
the median CPU time (``process_time``: chDB runs in this process, its merges included) per
insert and per span, and their ratio. The first round warms up and is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan

from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter

SETUP = """
import sys
from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import open_store
from llmledger.exporter.cli import main
config = StoreConfig(url=sys.argv[1], database=sys.argv[2])
try:
    client = open_store(config, use_database=False, write=True)
except TypeError:  # versions before the store server: no `write`
    client = open_store(config, use_database=False)
apply_migrations(client, config)
if sys.argv[3] == "prices":
    sys.exit(main(["prices", "sync", "--url", config.url, "--database", config.database]))
"""


def interleaved_inserts(
    writers: dict[str, SpanWriter], spans: list[ReadableSpan], batch: int, rounds: int
) -> dict[str, list[float]]:
    """CPU seconds of each timed insert, per writer: ``rounds + 1`` inserts of ``batch`` spans
    to every writer in turn, the order reversed every other round (load from elsewhere falls
    on all alike); the first round warms up and is not counted."""
    cpu: dict[str, list[float]] = {name: [] for name in writers}
    for index in range(rounds + 1):
        chunk = spans[index * batch : (index + 1) * batch]
        for name in list(writers) if index % 2 else reversed(list(writers)):
            rows = SpanRows()
            rows.add_sdk_spans(chunk)
            started = time.process_time()
            writers[name].write(rows, dedup_token=uuid.uuid4().hex)
            if index:
                cpu[name].append(time.process_time() - started)
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "other", type=Path, help="the other version's source tree (e.g. a `git archive` of main)"
    )
    parser.add_argument("--batch", type=int, default=20_000, help="spans per insert")
    parser.add_argument("--rounds", type=int, default=8, help="timed inserts per database")
    parser.add_argument(
        "--without-cost", action="store_true", help="spans the store prices from model_prices"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="calls written to each database before timing (a busy store)"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_writer import make_spans

    from llmledger.exporter import StoreConfig
    from llmledger.exporter._internal.store import open_store

    url = f"chdb://{tempfile.mkdtemp(prefix='llmledger-pair-')}"
    other = os.pathsep.join(str(args.other / part / "src") for part in ("instrumentation", "exporter"))
    for database, path in (("before", other), ("after", os.environ.get("PYTHONPATH", ""))):
        subprocess.run(
            [sys.executable, "-c", SETUP, url, database, "prices" if args.without_cost else "-"],
            env={**os.environ, "PYTHONPATH": path},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    client = open_store(StoreConfig(url=url), use_database=False, write=True)
    writers = {database: SpanWriter(client, database) for database in ("before", "after")}
    for first in range(0, args.seed, 50_000):
        seed = make_spans(min(50_000, args.seed - first), with_cost=not args.without_cost, first=first)
        for database, writer in writers.items():
            rows = SpanRows()
            rows.add_sdk_spans(seed)
            writer.write(rows, dedup_token=f"seed-{database}-{first}")
    while args.seed and int(str(client.command("SELECT count() FROM system.merges"))):
        time.sleep(0.5)
    if args.seed:  # the seed's parts would merge at random moments of the timed inserts
        client.command("SYSTEM STOP MERGES")
    spans = make_spans(args.batch * (args.rounds + 1), with_cost=not args.without_cost, first=args.seed)
    cpu = interleaved_inserts(writers, spans, args.batch, args.rounds)
    before, after = statistics.median(cpu["before"]), statistics.median(cpu["after"])
    print(
        f"{'without' if args.without_cost else 'with'} cost, {args.batch} spans x {args.rounds} inserts each"
        f"{f' after {args.seed} calls' if args.seed else ''}: "
        f"before {before * 1e3:.1f} ms/insert ({before / args.batch * 1e6:.1f} us/span), "
        f"after {after * 1e3:.1f} ms/insert ({after / args.batch * 1e6:.1f} us/span), after/before {after / before:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
