"""Run in a child process: a batch written in parts, then a crash before the commit, then the fix.

``python -m tests.collector.split_replay_worker <dir>`` prints the table counts and the
dead-letter keys as JSON. The first run splits a batch around a span the store refuses
(a CHECK constraint), writes every part it can and dead-letters the span, but dies
before the spool's checkpoint moves. The constraint is then dropped. The second run
replays the claim: it must follow the recorded splits (the whole batch under the claim's
own token would now be accepted, and every span but one written twice), and leave the
dead-lettered span where it is.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from llmledger.exporter._internal.collector.config import CollectorConfig
from llmledger.exporter._internal.collector.dead_letters import DeadLetterFile
from llmledger.exporter._internal.collector.metrics import CollectorMetrics
from llmledger.exporter._internal.collector.pipeline import traces_drain
from llmledger.exporter._internal.collector.spool import DurableSpool, SpoolReader
from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import open_store, run_command, run_query

from .harness import make_request


def main(root: Path) -> None:
    config = StoreConfig(url=f"chdb://{root / 'store'}")
    spool_dir = root / "spool"
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    run_command(
        client, f"ALTER TABLE {config.database}.otel_traces ADD CONSTRAINT no_pills CHECK SpanName != 'pill'"
    )

    spool = DurableSpool(spool_dir, max_bytes=64 << 20, segment_bytes=8 << 20, fsync="always")
    for seed in range(3):
        request = make_request(40, seed=seed, tenant=f"tenant-{seed}")
        if seed == 1:
            request.resource_spans[0].scope_spans[0].spans[17].name = "pill"
        spool.append(request.SerializeToString(), 40)

    # First run: every part written, the pill dead-lettered, then "the crash": no commit.
    reader = SpoolReader(spool_dir, wait=0)
    first = traces_drain(
        CollectorConfig(config, data_dir=root, native_insert=False), reader, CollectorMetrics()
    )
    batch = reader.claim_batch(max_spans=1000, max_bytes=64 << 20)
    assert batch is not None
    totals = first._deliver(batch)  # pyright: ignore[reportPrivateUsage]  (delivered, never committed)
    assert totals == {"written_spans": 119, "dead_letter_spans": 1}, totals
    first.stop(0)
    reader.close()

    run_command(client, f"ALTER TABLE {config.database}.otel_traces DROP CONSTRAINT no_pills")  # the fix
    client.close()

    # Second run: the claim comes back with the same token and is replayed.
    reader = SpoolReader(spool_dir, wait=0)
    second = traces_drain(CollectorConfig(config, data_dir=root), reader, CollectorMetrics())
    second.start()
    deadline = time.monotonic() + 30
    while reader.pending_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    second.stop(5)
    totals = reader.totals
    reader.close()
    spool.close()
    client = open_store(config)
    counts = [
        run_query(client, f"SELECT {expr} FROM {table}").result_rows[0][0]
        for table, expr in (
            ("otel_traces", "count()"),
            ("otel_traces", "uniqExact(SpanId)"),
            ("llm_calls", "count()"),
            ("llm_usage_hourly", "sum(calls)"),
        )
    ]
    client.close()
    entries = DeadLetterFile(root / "dead-letters").entries()
    print(json.dumps({"counts": counts, "totals": totals, "dead_letters": [e.items for e in entries]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
