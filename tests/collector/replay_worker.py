"""Run in a child process: a batch inserted but never committed (a crash) is replayed without duplicates.

``python -m tests.collector.replay_worker <dir>`` prints the table counts as JSON. chDB
keeps one store per process, so this runs apart from the test process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.collector.config import CollectorConfig
from llmledger.exporter._internal.collector.metrics import CollectorMetrics
from llmledger.exporter._internal.collector.pipeline import traces_drain
from llmledger.exporter._internal.collector.spool import DurableSpool, SpoolReader
from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import open_store, run_query
from llmledger.exporter._internal.writer import SpanWriter

from .harness import make_request


def main(root: Path) -> None:
    config = StoreConfig(url=f"chdb://{root / 'store'}")
    spool_dir = root / "spool"

    def open_spool() -> tuple[DurableSpool, SpoolReader]:
        writer = DurableSpool(spool_dir, max_bytes=64 << 20, segment_bytes=8 << 20, fsync="always")
        return writer, SpoolReader(spool_dir, wait=0)

    spool, reader = open_spool()
    for seed in range(3):
        request = make_request(40, seed=seed, tenant=f"tenant-{seed}")
        spool.append(request.SerializeToString(), 40)
    batch = reader.claim_batch(max_spans=80, max_bytes=64 << 20)
    assert batch is not None
    assert batch.span_count == 80

    # First run: the batch is inserted, then the process dies before the checkpoint moves.
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    rows = SpanRows()
    for record in batch.records:
        rows.add_otlp(ExportTraceServiceRequest.FromString(bytes(record.payload)))
    SpanWriter(client, config.database).write(rows, batch.dedup_token)
    client.close()
    spool.close()
    reader.close()

    # Second run: the claim is replayed with the same token, then the rest is written. The
    # replay takes the native path, the first insert took SpanRows: one block each, so the
    # tokens match all the same.
    spool, reader = open_spool()
    drain = traces_drain(
        CollectorConfig(config, data_dir=root, batch_max_spans=80), reader, CollectorMetrics()
    )
    drain.start()
    deadline = time.monotonic() + 30
    while reader.pending_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    drain.stop(5)
    client = open_store(config)
    counts = {
        table: run_query(client, f"SELECT {expr} FROM {table}").result_rows[0][0]
        for table, expr in (
            ("otel_traces", "count()"),
            ("llm_calls", "count()"),
            ("llm_usage_hourly", "sum(calls)"),
        )
    }
    client.close()
    print(json.dumps(counts))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
