"""The view chain's engine cost, another version of llmledger against this one, in one store and one process.

Usage::

    git archive main | tar -x -C /tmp/llmledger-main
    .venv/bin/python bench/bench_view_pair.py /tmp/llmledger-main --batch 20000 --rounds 8
    .venv/bin/python bench/bench_view_pair.py /tmp/llmledger-main --batch 10 --rounds 30 --without-cost

Database ``before`` gets its schema (and, ``--without-cost``, its prices through ``llmledger
prices sync``) from the other version's code, run in a child process with that tree's
``src`` folders first on ``PYTHONPATH``; database ``after`` from this tree's. Both live in one
embedded store, and this process then writes the same kind of spans (``bench_writer.make_spans``,
unique response ids) to each in turn, alternating which goes first: load from elsewhere on a
shared machine falls on both alike. Prints the median CPU time (``process_time``: chDB runs
in this process, its merges included) per insert and per span, and their ratio. The first
round warms up and is not counted.
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

SETUP = """
import sys
from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import open_store
from llmledger.exporter.cli import main
config = StoreConfig(url=sys.argv[1], database=sys.argv[2])
apply_migrations(open_store(config, use_database=False, write=True), config)
if sys.argv[3] == "prices":
    sys.exit(main(["prices", "sync", "--url", config.url, "--database", config.database]))
"""


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
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_writer import make_spans

    from llmledger.exporter import StoreConfig
    from llmledger.exporter._internal.rows import SpanRows
    from llmledger.exporter._internal.store import open_store
    from llmledger.exporter._internal.writer import SpanWriter

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
    spans = make_spans(args.batch * (args.rounds + 1), with_cost=not args.without_cost)
    writers = {database: SpanWriter(client, database) for database in ("before", "after")}
    cpu: dict[str, list[float]] = {database: [] for database in writers}
    for index in range(args.rounds + 1):
        chunk = spans[index * args.batch : (index + 1) * args.batch]
        for database in ("before", "after") if index % 2 else ("after", "before"):
            rows = SpanRows()
            rows.add_sdk_spans(chunk)
            started = time.process_time()
            writers[database].write(rows, dedup_token=uuid.uuid4().hex)
            if index:
                cpu[database].append(time.process_time() - started)
    before, after = statistics.median(cpu["before"]), statistics.median(cpu["after"])
    print(
        f"{'without' if args.without_cost else 'with'} cost, {args.batch} spans x {args.rounds} inserts each: "
        f"before {before * 1e3:.1f} ms/insert ({before / args.batch * 1e6:.1f} us/span), "
        f"after {after * 1e3:.1f} ms/insert ({after / args.batch * 1e6:.1f} us/span), after/before {after / before:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
