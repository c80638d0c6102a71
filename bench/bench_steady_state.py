"""What the store costs per span once background merges are counted: many inserts, then merges settle.

Usage::

    .venv/bin/python bench/bench_steady_state.py                    # 60 inserts x 20,000 spans
    .venv/bin/python bench/bench_steady_state.py --default-merges   # without migration 0008's merge width

``bench_writer.py`` times single inserts; chDB merges the parts they leave in background
threads of the same process, later. Here ``--inserts`` batches of ``--batch`` spans (the
bench's 27-attribute spans, converted once before timing) are written through
``SpanWriter`` into a fresh embedded store with the full view chain, then the run waits
until no merge is running. Reported, per span: process CPU for the inserts
(serialization + engine), and for inserts plus the merges they caused; and the active
parts left per table. ``--default-merges`` resets ``merge_selector_base`` (set to 10 on
the three one-row-per-span tables by migration 0008) to the engine default first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_writer import make_spans

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import open_store, run_command
from llmledger.exporter._internal.writer import SpanWriter

WIDE_TABLES = ("otel_traces", "otel_traces_trace_id_ts", "llm_call_rows")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=20_000, help="spans per insert")
    parser.add_argument("--inserts", type=int, default=60)
    parser.add_argument("--default-merges", action="store_true", help="undo migration 0008 first")
    args = parser.parse_args()

    config = StoreConfig(url=f"chdb://{tempfile.mkdtemp(prefix='llmledger-bench-steady-')}", database="bench")
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    if args.default_merges:
        for table in WIDE_TABLES:
            run_command(client, f"ALTER TABLE bench.{table} RESET SETTING merge_selector_base")
    writer = SpanWriter(client, config.database)
    rows = SpanRows()
    rows.add_sdk_spans(make_spans(args.batch))
    total = args.batch * args.inserts

    c0 = time.process_time()
    for _ in range(args.inserts):
        writer.write(rows, dedup_token=uuid.uuid4().hex)
    inserts = time.process_time() - c0
    time.sleep(1)
    while client.query("SELECT count() FROM system.merges").result_rows[0][0]:
        time.sleep(0.5)
    settled = time.process_time() - c0
    parts = client.query(
        "SELECT table, count() FROM system.parts WHERE database = 'bench' AND active "
        "AND table NOT LIKE 'llmledger%' GROUP BY table ORDER BY table"
    ).result_rows
    client.close()

    merges = "engine default" if args.default_merges else "migration 0008 (base 10)"
    print(f"{args.inserts} inserts x {args.batch:,} spans, full view chain, merges: {merges}")
    print(f"inserts (serialize + engine): {inserts / total * 1e6:.1f} µs/span CPU")
    print(
        f"inserts + the merges they caused: {settled / total * 1e6:.1f} µs/span CPU ({total / settled:,.0f} spans/s)"
    )
    print("parts left: " + ", ".join(f"{table} {count}" for table, count in parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
