"""What each materialized view of the span chain costs per insert, by taking views away.

Usage::

    .venv/bin/python bench/bench_view_pieces.py                      # 10-span inserts x 30
    .venv/bin/python bench/bench_view_pieces.py --batch 20000 --rounds 6

One embedded store, one database per step; step N keeps the first N views of the chain
(``otel_traces`` alone, then ``llm_calls_mv``, then ``llm_call_changes_mv`` with
``llm_call_rows_mv``, ...) and drops the others. The same spans (``bench_writer.make_spans``,
unique response ids) are written to each database in turn, the order alternating between
rounds; the first round warms up and is not counted. Prints the median CPU time
(``process_time``: chDB runs in this process) per insert of each step and what the step's
views add to the one before. At 10 spans per insert that is what a view costs to plan and
start, whatever the insert's size; at 20,000 its per-span work shows.

Views a store of another version does not have are ignored, so with another tree's ``src``
folders first on ``PYTHONPATH`` this measures that version's chain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

# Each step adds views to the one before; a name may be absent from older schemas.
STEPS: dict[str, tuple[str, ...]] = {
    "otel_traces only": (),
    "+ llm_calls_mv (typed spans, price lookup)": ("llm_calls_mv",),
    "+ llm_call_changes_mv, llm_call_rows_mv (billed once)": ("llm_call_changes_mv", "llm_call_rows_mv"),
    "+ llm_call_index_mv (the lookup's index)": ("llm_call_index_mv",),
    "+ llm_usage_hourly_mv": ("llm_usage_hourly_mv",),
    "+ llm_usage_daily_mv": ("llm_usage_daily_mv",),
    "+ llm_fallbacks_mv": ("llm_fallbacks_mv",),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=10, help="spans per insert")
    parser.add_argument("--rounds", type=int, default=30, help="timed inserts per step")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_view_pair import interleaved_inserts
    from bench_writer import make_spans

    from llmledger.exporter import StoreConfig
    from llmledger.exporter._internal.migrations import apply_migrations
    from llmledger.exporter._internal.store import open_store
    from llmledger.exporter._internal.writer import SpanWriter

    url = f"chdb://{tempfile.mkdtemp(prefix='llmledger-pieces-')}"
    try:
        client = open_store(StoreConfig(url=url), use_database=False, write=True)
    except TypeError:  # versions before the store server: no `write`
        client = open_store(StoreConfig(url=url), use_database=False)
    every = [view for views in STEPS.values() for view in views]
    databases: list[str] = []
    kept: list[str] = []
    for index, views in enumerate(STEPS.values()):
        kept.extend(views)
        database = f"step{index}"
        config = StoreConfig(url=url, database=database)
        apply_migrations(client, config)
        for view in every:
            if view not in kept:
                client.command(f"DROP VIEW IF EXISTS `{database}`.`{view}`")
        databases.append(database)

    spans = make_spans(args.batch * (args.rounds + 1), with_cost=True)
    writers = {database: SpanWriter(client, database) for database in databases}
    cpu = interleaved_inserts(writers, spans, args.batch, args.rounds)

    print(f"{args.batch} spans per insert, {args.rounds} inserts per step, CPU ms per insert (median)")
    before = 0.0
    for name, database in zip(STEPS, databases, strict=True):
        median = statistics.median(cpu[database]) * 1e3
        print(f"{name:58s} {median:8.1f}  ({median - before:+.1f})")
        before = median
    return 0


if __name__ == "__main__":
    sys.exit(main())
