"""The metrics and logs spools' readers: claimed batches into their tables, retried until they land.

Each runs in a thread of the drain process beside the traces' :class:`.drain.SpoolDrain`,
and writes through that drain's store connection (:meth:`.drain.SpoolDrain.with_store`:
an embedded store has one owner per process). The guarantees are the traces': a batch
is a claimed spool range whose deduplication token is derived from that range, so a
batch retried after a failure, or replayed after a crash between the insert and the
checkpoint, is dropped by the tables that already have it — each data point and log
record lands once. Rows are built in Python (:class:`MetricRows`, :class:`LogRows`).

A batch the store refuses for its content is written in parts as the traces' are (see
:mod:`.pieces` and :mod:`.piecewise`), and what cannot be written — a single data point or
log record the store refuses, or a spooled request that does not parse — goes to the
dead-letter file: no input stops the signal. The items written and dead-lettered are
committed with the spool's cursor, so the counters are exact across crashes.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from llmledger.exporter._internal.errors import contain
from llmledger.exporter._internal.log_rows import LogRows
from llmledger.exporter._internal.metric_rows import MetricRows

from .drain import SpoolDrain, UnexplainedFailures
from .drain_loop import DrainLoop, DrainPacing
from .metrics import CollectorMetrics
from .otlp_signals import Signal
from .pieces import (
    INSERT_FAILURES,
    LOG_REQUESTS,
    METRIC_REQUESTS,
    Piece,
    RefusedError,
    refusal_reason,
)
from .spool import SpoolBatch, SpoolReader

__all__ = ["SignalDrain"]


class SignalDrain(DrainLoop):
    """A thread that moves one signal's spooled requests (metrics or logs) into the store.

    Built from the collector's configuration by :func:`.pipeline.metrics_and_logs_drain`.
    """

    def __init__(
        self,
        signal: Signal,
        spool: SpoolReader,
        store: SpoolDrain,
        metrics: CollectorMetrics,
        pacing: DrainPacing,
        *,
        dead_letter_dir: Path,
    ) -> None:
        if signal is Signal.TRACES:
            raise ValueError("traces are drained by SpoolDrain")
        self.signal = signal
        self._store = store
        super().__init__(
            f"the {signal.value} drain",
            spool,
            metrics,
            pacing,
            shape=METRIC_REQUESTS if signal is Signal.METRICS else LOG_REQUESTS,
            dead_letter_dir=dead_letter_dir,
            splits_file=f"splits-{signal.value}.json",
            logger=logging.getLogger(f"llmledger.collector.drain.{signal.value}"),
            thread_name=f"llmledger-drain-{signal.value}",
        )

    @property
    def reader(self) -> SpoolReader:
        return self._spool

    def _rows(self, piece: Piece) -> MetricRows | LogRows:
        # A function of the piece's bytes: a replay writes the same rows. A request that does
        # not parse (validated on receipt, so a bug) raises DecodeError: a refusal, split away.
        if self.signal is Signal.METRICS:
            metric_rows = MetricRows()
            for payload in piece.payloads:
                metric_rows.add_otlp(ExportMetricsServiceRequest.FromString(bytes(payload)))
            return metric_rows
        log_rows = LogRows()
        for payload in piece.payloads:
            log_rows.add_otlp(ExportLogsServiceRequest.FromString(bytes(payload)))
        return log_rows

    def _deliver(self, batch: SpoolBatch) -> dict[str, int] | None:
        """Write ``batch``, in parts if the store refuses it; the totals to commit, ``None`` when cut short."""
        delivered = self._pieces.deliver(batch, self._insert_until_settled)
        if delivered is None:
            return None
        items = self.signal.items
        return {f"written_{items}": delivered[0], f"dead_letter_{items}": delivered[1]}

    def _insert_until_settled(self, piece: Piece, *, alone: bool = False) -> int | None:
        """Insert ``piece`` until it lands (its items) or shutdown cuts it short (``None``).

        Raises :class:`.pieces.RefusedError` when the store refuses it for its content, and
        :class:`.pieces.SuspectError` when it keeps failing with an unexplained error (the
        traces drain's rule, :meth:`.drain.SpoolDrain.suspect`); anything else is retried
        with back-off.
        """
        items = self.signal.items
        delay = self._retry_initial
        began = time.monotonic()
        rows: MetricRows | LogRows | None = None
        unexplained = UnexplainedFailures(self._store, self._metrics, alone=alone)
        while True:
            try:
                if rows is None:
                    rows = self._rows(piece)
                written = self._store.with_store(partial(rows.write, dedup_token=piece.dedup_token))
            except Exception as exc:
                contain(f"the {self.signal.value} drain's insert", exc, INSERT_FAILURES)
                reason = refusal_reason(exc)
                if reason is not None:
                    self._metrics.add("store_errors")
                    raise RefusedError(reason) from exc
                unexplained.note(exc)
                if self._failing(exc):
                    self._logger.error(
                        "cannot write %s to the store (will retry): %s", self.signal.value, exc
                    )
                else:
                    self._logger.debug(
                        "store still failing for %s (%d pending): %s", self.signal.value, piece.items, exc
                    )
                next_delay = self._back_off(delay)
                if next_delay is None:
                    return None
                delay = next_delay
                continue
            self._logger.debug(
                "inserted %d %s from %d requests in %.0f ms",
                written,
                items.replace("_", " "),
                len(piece.payloads),
                (time.monotonic() - began) * 1000,
            )
            failed_for = self._recovered()
            if failed_for is not None:
                self._logger.warning("%s writes recovered after %.1f s", self.signal.value, failed_for)
            return written
