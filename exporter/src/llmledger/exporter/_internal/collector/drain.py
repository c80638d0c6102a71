"""The spool's one reader: claimed batches into the store, retried with back-off until they land.

The drain owns the store connection (for the embedded store, the process-wide lock on its
directory). Each batch is a claimed spool range whose deduplication token is derived from
that range, so a batch retried after a timeout, or replayed after a crash between the
insert and the checkpoint, is dropped by ``otel_traces`` and every view downstream:
exactly once in the tables. A batch the store refuses for its content is written in parts
and what cannot be written goes to the dead-letter file (see :mod:`.pieces`): no input
stops the pipeline. Reads for the query server go through the same connection, one
statement at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.errors import OUTSIDE_FAILURES, contain, contained
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import StoreError, open_store, run_query
from llmledger.exporter._internal.writer import SpanWriter

from .drain_loop import DrainLoop, DrainPacing
from .metrics import CollectorMetrics
from .native_insert import NativeInsert
from .pieces import INSERT_FAILURES, TRACE_REQUESTS, Piece, refusal_reason, unexplained_error
from .pieces import RefusedError as _RefusedError
from .pieces import SuspectError as _SuspectError
from .spool import SpoolBatch, SpoolReader

__all__ = ["SpoolDrain"]

_logger = logging.getLogger("llmledger.collector.drain")
T = TypeVar("T")
_NATIVE_ATTEMPTS = 3
# Attempts a piece may fail with an unexplained error (pieces.unexplained_error) before it is
# split: with the back-off from 0.5 s that is ~8 s, longer than a store's passing hiccup.
_UNEXPLAINED_ATTEMPTS = 5
_SPLITS_FILE = "splits.json"


class SpoolDrain(DrainLoop):
    """A thread that moves spooled requests into the store (see the module doc).

    Built from the collector's configuration by :func:`.pipeline.traces_drain`: the settings
    have no defaults here, so the drain process runs with exactly the ones it was given.
    """

    def __init__(
        self,
        spool: SpoolReader,
        store: StoreConfig,
        metrics: CollectorMetrics,
        pacing: DrainPacing,
        *,
        dead_letter_dir: Path,
        unexplained_error_seconds: float,
        apply_schema: bool,
        native_insert_file: Path | None,
    ) -> None:
        super().__init__(
            "the drain",
            spool,
            metrics,
            pacing,
            shape=TRACE_REQUESTS,
            dead_letter_dir=dead_letter_dir,
            splits_file=_SPLITS_FILE,
            logger=_logger,
            thread_name="llmledger-drain",
        )
        self._store = store
        self._unexplained_seconds = unexplained_error_seconds
        self._apply_schema = apply_schema
        self._store_lock = threading.Lock()
        self._client: Client | None = None
        self._writer: SpanWriter | None = None
        self._engine_opened = False
        self._native_file = native_insert_file if store.embedded else None
        self._native: NativeInsert | None = None
        # When the store is next opened while no data waits, and the back-off after that.
        self._next_open = 0.0
        self._open_delay = pacing.retry_initial_seconds
        self.inserting_since: float | None = None  # when the insert under way began (liveness)

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self, timeout: float) -> bool:
        """Finish: keep draining for up to ``timeout`` seconds, then close the store; return
        whether the spool is empty. What is left stays in the spool for the next start."""
        empty = super().stop(timeout)
        with self._store_lock:
            self._close_store()
        return empty

    def engine_open(self) -> bool:
        """Whether this process has opened the store at least once (an embedded engine then stays open)."""
        return self._engine_opened

    @property
    def store_connected(self) -> bool:
        return self._writer is not None and self._failing_since is None

    # -- the loop ------------------------------------------------------------------------

    def _when_idle(self) -> None:
        """Open the store (and apply the schema) while no data waits: at start, then with back-off."""
        if self._writer is not None or time.monotonic() < self._next_open:
            return
        try:
            self._open()
        except Exception as exc:
            contain("the drain opening the store", exc, (*OUTSIDE_FAILURES, StoreError))
            self._failed(exc, 0)
            self._next_open = time.monotonic() + self._open_delay
            self._open_delay = min(self._open_delay * 2, self._retry_max)
            return
        if self._recovered() is not None:
            _logger.warning("store reachable again")
        self._open_delay = self._retry_initial  # the back-off starts over after a success

    def _rows(self, piece: Piece) -> SpanRows:
        rows = SpanRows()
        for payload in piece.payloads:
            rows.add_otlp(ExportTraceServiceRequest.FromString(bytes(payload)))
        return rows

    def _deliver(self, batch: SpoolBatch) -> dict[str, int] | None:
        """Write ``batch``, splitting what the store refuses; the totals to commit, ``None`` when cut short.

        A piece the store refuses for its content is split (see :mod:`.pieces`), the split
        written down before any part is inserted, so a replay after a crash inserts the same
        parts with the same tokens; a part that cannot be split goes to the dead-letter file.
        A piece that keeps failing with an error naming neither its content nor the store's
        state is split the same way; a single span failing so is set aside only when the store
        takes the rest of the batch (it is tried last), or after ``unexplained_error_seconds``
        of failing alone while the store answers. Anything else the store says is retried with
        back-off, for as long as it takes.
        """
        delivered = self._pieces.deliver(batch, self._insert_until_settled)
        if delivered is None:
            return None
        written, dead = delivered
        return {"written_spans": written, "dead_letter_spans": dead}

    def _insert_until_settled(self, piece: Piece, *, alone: bool = False) -> int | None:
        """Insert ``piece`` until it lands (its span count) or shutdown cuts it short (``None``).

        Raises :class:`_RefusedError` when the store refuses it for its content, and
        :class:`_SuspectError` when it keeps failing with an unexplained error: after
        ``_UNEXPLAINED_ATTEMPTS`` attempts, or, ``alone`` (nothing else of its batch lands),
        after ``unexplained_error_seconds`` while the store answers a query. The path is a
        function of the piece (its content and the configuration), so a replay after a crash
        takes the same path with the same token.
        """
        delay = self._retry_initial
        native_failures = 0
        rows_only = False
        unexplained = UnexplainedFailures(self, self._metrics, alone=alone)
        while True:
            native: NativeInsert | None = None
            began = time.monotonic()
            try:
                writer = self._open()
                with self._store_lock:
                    native = None if rows_only else self._native
                    self.inserting_since = began
                    try:
                        if native is None or not native.write(piece.payloads, piece.token):
                            native = None
                            writer.write(self._rows(piece), piece.token)
                    finally:
                        self.inserting_since = None
            except Exception as exc:
                contain("the traces drain's insert", exc, INSERT_FAILURES)
                reason = refusal_reason(exc)
                if reason is not None:
                    self._metrics.add("store_errors")
                    if native is not None and piece.spans <= 1:
                        rows_only = True  # the last word on one span is SpanRows'
                        continue
                    raise _RefusedError(reason) from exc
                unexplained.note(exc)
                self._failed(exc, piece.spans)
                if native is not None:
                    native_failures += 1
                    if native_failures >= _NATIVE_ATTEMPTS:
                        # The engine-side path itself is failing (an engine without a setting
                        # it needs, say): SpanRows writes the same single block, same token.
                        _logger.error("native insert disabled after %d failures: %s", native_failures, exc)
                        self._native_file = None
                        self._drop_native()
                next_delay = self._back_off(delay)
                if next_delay is None:
                    return None
                delay = next_delay
                continue
            self._metrics.add("written_spans", piece.spans)
            _logger.debug(
                "inserted %d spans from %d requests (%s) in %.0f ms",
                piece.spans,
                len(piece.payloads),
                "SpanRows" if native is None else "native",
                (time.monotonic() - began) * 1000,
            )
            failed_for = self._recovered()
            if failed_for is not None:
                _logger.warning("store writes recovered after %.1f s", failed_for)
            return piece.spans

    def suspect(self, attempts: int, seconds: float, *, alone: bool) -> bool:
        """Whether a piece failing with an unexplained error should be taken for its content.

        ``attempts`` in a row for ``seconds``; ``alone``: nothing else of its batch lands
        (the metrics and logs drains ask too: one rule, one store).
        """
        if not alone:
            return attempts >= _UNEXPLAINED_ATTEMPTS
        if seconds < self._unexplained_seconds:
            return False
        try:
            self.with_store(lambda client, _: run_query(client, "SELECT 1"))
        except Exception as exc:
            contain("the drain asking whether the store answers", exc, (*OUTSIDE_FAILURES, StoreError))
            return False  # the store does not answer: its own trouble, not the span's
        return True

    def _failed(self, exc: Exception, spans: int) -> None:
        if spans:
            self._metrics.add("retried_spans", spans)
        if self._failing(exc):
            _logger.error("cannot write to the store %s (will retry): %s", self._store.display_url, exc)
        else:
            _logger.debug("store still failing: %s", exc)
        if not isinstance(exc, StoreError):
            self._reset()

    def _reset(self) -> None:
        # A server connection may be broken; an embedded store stays open (reopening costs 0.3 s).
        if self._store.embedded:
            return
        with self._store_lock:
            self._close_store()

    def _close_store(self) -> None:
        """Let the connection go (under the store lock); the next write opens it again."""
        if self._client is not None:
            with contained("the drain closing the store"):
                self._client.close()
        self._client = None
        self._writer = None
        self._drop_native()

    def _drop_native(self) -> None:
        if self._native is not None:
            self._native.close()
            self._native = None

    def _open(self) -> SpanWriter:
        with self._store_lock:
            if self._writer is not None:
                return self._writer
            # chDB itself says whether the store is free: the drain retries with back-off and
            # reports why (its log is the collector's, not a user's terminal).
            client = open_store(
                self._store, use_database=False, write=True, via_owner=False, lock_wait_seconds=None
            )
            try:
                if self._apply_schema:
                    applied = apply_migrations(client, self._store)
                    for migration in applied:
                        _logger.info("applied migration %04d_%s", migration.version, migration.name)
                database = self._store.database
                if run_query(
                    client,
                    "SELECT count() FROM system.databases WHERE name = {db:String}",
                    parameters={"db": database},
                ).result_rows[0][0]:
                    client.database = database
            except Exception:
                client.close()
                raise
            self._client = client
            self._writer = SpanWriter(client, database, defer_attribute_indexes=self._store.embedded)
            self._engine_opened = True
            if self._native_file is not None:
                self._native = NativeInsert(client, database, self._native_file)
            _logger.info("store open: %s database %s", self._store.display_url, database)
            return self._writer

    # -- the connection, for the metrics and logs drains -------------------------------------

    def with_store(self, work: Callable[[Client, str], T]) -> T:
        """``work(client, database)`` on this drain's store connection, one statement at a time.

        The metrics and logs drains (:mod:`.signal_drain`) write through it: an embedded store
        has one owner per process. A failure other than the store's own error may mean a
        broken server connection, which is dropped so the next call reconnects.
        """
        self._open()
        try:
            with self._store_lock:
                if self._client is None:
                    raise StoreError("the store is not open")
                return work(self._client, self._store.database)
        except Exception as exc:
            if not isinstance(exc, StoreError):
                self._reset()
            raise


class UnexplainedFailures:
    """One piece's run of failures with an unexplained error (:func:`.pieces.unexplained_error`).

    :meth:`note` raises :class:`.pieces.SuspectError` once :meth:`SpoolDrain.suspect` takes the
    run for the piece's content; any other error ends the run. Every drain (spans, metrics,
    logs) counts its attempts with one of these, so the rule is applied one way.
    """

    def __init__(self, drain: SpoolDrain, metrics: CollectorMetrics, *, alone: bool) -> None:
        self._drain = drain
        self._metrics = metrics
        self._alone = alone
        self._count = 0
        self._since = 0.0

    def note(self, exc: Exception) -> None:
        why = unexplained_error(exc)
        if why is None:
            self._count = 0
            return
        self._count += 1
        if self._count == 1:
            self._since = time.monotonic()
        if self._drain.suspect(self._count, time.monotonic() - self._since, alone=self._alone):
            self._metrics.add("store_errors")
            raise _SuspectError(f"{why} (failed {self._count} times)") from exc
