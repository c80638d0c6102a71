"""Run in a child process: a metrics or logs batch written in parts, a crash before the commit, then the fix.

``python -m tests.collector.signal_split_replay_worker <dir> metrics|logs`` prints the
stored rows by ``seq``, the committed totals and the dead-letter entries as JSON. The
first run splits a batch around an item the store refuses (a CHECK constraint), writes
every part it can and dead-letters the item, but dies before the spool's checkpoint
moves. The constraint is then dropped and the second run replays the claim: it must
follow the recorded splits (the whole batch under the claim's own token would now be
accepted, and every item but one written twice) and leave the dead-lettered item where
it is.

For metrics the batch also holds a gauge, which the first attempt writes before the
histogram table refuses the batch: the part by table that repeats it goes in under the
batch's token and is dropped as the duplicate it is.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from llmledger.exporter._internal.collector.config import CollectorConfig
from llmledger.exporter._internal.collector.dead_letters import DeadLetterFile
from llmledger.exporter._internal.collector.metrics import CollectorMetrics
from llmledger.exporter._internal.collector.otlp_signals import Signal, count_data_points, count_log_records
from llmledger.exporter._internal.collector.pipeline import metrics_and_logs_drain, traces_drain
from llmledger.exporter._internal.collector.spool import DurableSpool, SpoolReader
from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import open_store, run_command, run_query

from .harness import make_logs_request, make_metrics_request

PILL = "1-17"  # the seq of the item the store refuses
CONSTRAINTS = {
    Signal.METRICS: ("otel_metrics_histogram", f"Attributes['seq'] != '{PILL}'"),
    Signal.LOGS: ("otel_logs", f"LogAttributes['seq'] != '{PILL}'"),
}
STORED = {
    Signal.METRICS: "SELECT Attributes['seq'] FROM otel_metrics_histogram "
    "UNION ALL SELECT Attributes['seq'] FROM otel_metrics_gauge",
    Signal.LOGS: "SELECT LogAttributes['seq'] FROM otel_logs",
}


def spool_batch(spool: DurableSpool, signal: Signal) -> None:
    for seed in range(3):
        if signal is Signal.METRICS:
            request = make_metrics_request(40, seed=seed)
            gauge = request.resource_metrics[0].scope_metrics[0].metrics.add()
            gauge.name = "queue.depth"
            point = gauge.gauge.data_points.add()
            point.as_int, point.time_unix_nano = seed, 1_767_225_600_000_000_000
            seq = point.attributes.add()
            seq.key, seq.value.string_value = "seq", f"gauge-{seed}"
            spool.append(request.SerializeToString(), count_data_points(request))
        else:
            logs = make_logs_request(40, seed=seed)
            spool.append(logs.SerializeToString(), count_log_records(logs))


class Drains:
    """A signal's drain and the traces drain whose store connection it writes through, as in the collector."""

    def __init__(self, signal: Signal, root: Path, config: StoreConfig) -> None:
        collector = CollectorConfig(config, data_dir=root, native_insert=False)
        self._traces = SpoolReader(collector.spool_dir, wait=0)
        self.store = traces_drain(collector, self._traces, CollectorMetrics())
        self.reader = SpoolReader(collector.signal_spool_dir(signal), wait=0)
        self.drain = metrics_and_logs_drain(collector, signal, self.reader, self.store, CollectorMetrics())

    def close(self) -> None:
        self.drain.stop(5)
        self.store.stop(5)
        self.reader.close()
        self._traces.close()


def main(root: Path, signal: Signal) -> None:
    config = StoreConfig(url=f"chdb://{root / 'store'}")
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    table, check = CONSTRAINTS[signal]
    run_command(client, f"ALTER TABLE {config.database}.{table} ADD CONSTRAINT no_pills CHECK {check}")
    DurableSpool(root / "spool", max_bytes=8 << 20, segment_bytes=1 << 20, fsync="always").close()
    spool = DurableSpool(
        root / f"spool-{signal.value}", max_bytes=64 << 20, segment_bytes=8 << 20, fsync="always"
    )
    spool_batch(spool, signal)

    # First run: every part written, the pill dead-lettered, then "the crash": no commit.
    first = Drains(signal, root, config)
    batch = first.reader.claim_batch(1000, 64 << 20)
    assert batch is not None
    first_totals = first.drain._deliver(batch)  # pyright: ignore[reportPrivateUsage]  (delivered, never committed)
    del batch
    first.close()

    run_command(client, f"ALTER TABLE {config.database}.{table} DROP CONSTRAINT no_pills")  # the fix
    client.close()

    # Second run: the claim comes back with the same token and is replayed.
    second = Drains(signal, root, config)
    second.drain.start()
    deadline = time.monotonic() + 30
    while second.reader.pending_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    totals = second.reader.totals
    second.close()
    spool.close()
    client = open_store(config)
    stored = [row[0] for row in run_query(client, STORED[signal]).result_rows]
    client.close()
    entries = DeadLetterFile(root / "dead-letters").entries()
    print(
        json.dumps(
            {
                "rows": len(stored),
                "distinct": len(set(stored)),
                "pill_stored": PILL in stored,
                "first_totals": first_totals,
                "totals": totals,
                "dead_letters": [(entry.signal, entry.items) for entry in entries],
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Signal(sys.argv[2]))
