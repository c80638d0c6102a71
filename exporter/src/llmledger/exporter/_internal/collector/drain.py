"""The spool's one reader: claimed batches into the store, retried with back-off until they land.

The drain owns the store connection (for the embedded store, the process-wide lock on its
directory). Each batch is a claimed spool range whose deduplication token is derived from
that range, so a batch retried after a timeout, or replayed after a crash between the
insert and the checkpoint, is dropped by ``otel_traces`` and every view downstream:
exactly once in the tables. Reads for the query server go through the same connection,
one statement at a time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import StoreError, open_store, run_query
from llmledger.exporter._internal.writer import SpanWriter

from .metrics import CollectorMetrics
from .native_insert import NativeInsert
from .spool import SpoolBatch, SpoolError, SpoolReader, SpoolRecord

__all__ = ["SpoolDrain"]

_logger = logging.getLogger("llmledger.collector.drain")
T = TypeVar("T")
_NATIVE_ATTEMPTS = 3


class SpoolDrain:
    """A thread that moves spooled requests into the store (see the module doc)."""

    def __init__(
        self,
        spool: SpoolReader,
        store: StoreConfig,
        metrics: CollectorMetrics,
        *,
        quarantine_dir: Path,
        batch_max_spans: int = 100_000,
        batch_max_bytes: int = 128 << 20,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        batch_linger_seconds: float = 1.0,
        apply_schema: bool = True,
        native_insert_file: Path | None = None,
    ) -> None:
        self._spool = spool
        self._store = store
        self._metrics = metrics
        self._quarantine_dir = quarantine_dir
        self._batch_max_spans = batch_max_spans
        self._batch_max_bytes = batch_max_bytes
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._linger = batch_linger_seconds
        self._apply_schema = apply_schema
        self._store_lock = threading.Lock()
        self._client: Client | None = None
        self._writer: SpanWriter | None = None
        self._native_file = native_insert_file if store.embedded else None
        self._native: NativeInsert | None = None
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="llmledger-drain", daemon=True)
        self._failing_since: float | None = None
        self.last_error: str | None = None
        self.fatal_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Finish: keep draining for up to ``timeout`` seconds; return whether the spool is empty.

        What is left stays in the spool (a pending claim included) for the next start.
        """
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout + 5)
        with self._store_lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:
                    _logger.debug("closing the store failed", exc_info=True)
                self._client = None
                self._writer = None
                self._drop_native()
        return self._spool.pending_bytes() == 0

    @property
    def store_connected(self) -> bool:
        return self._writer is not None and self._failing_since is None

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    # -- the loop ------------------------------------------------------------------------

    def _open_when_idle(self, next_attempt: float, delay: float) -> tuple[float, float]:
        """Open the store (and apply the schema) while no data waits: at start, then with back-off."""
        if self._writer is not None or time.monotonic() < next_attempt:
            return next_attempt, delay
        try:
            self._open()
        except Exception as exc:
            self._failed(exc, 0)
            return time.monotonic() + delay, min(delay * 2, self._retry_max)
        if self._failing_since is not None:
            _logger.warning("store reachable again")
            self._failing_since = None
            self.last_error = None
        return next_attempt, delay

    def _run(self) -> None:
        next_open, open_delay = 0.0, self._retry_initial
        try:
            while not self._expired():
                if not self._stop.is_set():
                    next_open, open_delay = self._open_when_idle(next_open, open_delay)
                if not self._spool.wait_for_data(0.2):
                    if self._stop.is_set():
                        return
                    continue
                # Each insert costs the engine ~150 ms whatever its size (planning, the views,
                # parts to merge later), so a batch may grow for a moment when little waits.
                if self._linger > 0 and not self._stop.is_set():
                    self._spool.wait_to_gather(self._batch_max_bytes // 4, self._linger, self._stop)
                batch = self._spool.claim_batch(self._batch_max_spans, self._batch_max_bytes)
                if batch is None:
                    if self._stop.is_set():
                        return
                    continue
                if not self._deliver(batch):
                    return
                self._spool.commit(batch)
        except SpoolError as exc:
            self._metrics.add("spool_errors")
            self.fatal_error = exc
            _logger.error("the drain stopped on a spool error: %s", exc)
        except BaseException as exc:
            self.fatal_error = exc
            _logger.exception("the drain stopped on an internal error")
            raise

    def _rows(self, batch: SpoolBatch) -> SpanRows:
        rows = SpanRows()
        try:
            for record in batch.records:
                rows.add_otlp(ExportTraceServiceRequest.FromString(bytes(record.payload)))
        except Exception:
            # Validated on receipt, so this is our bug, not the sender's: find the request(s)
            # that fail, keep their bytes aside, and write the rest.
            rows = SpanRows()
            for record in batch.records:
                payload = bytes(record.payload)
                try:
                    ExportTraceServiceRequest.FromString(payload)
                    SpanRows().add_otlp(ExportTraceServiceRequest.FromString(payload))
                except Exception:
                    self._quarantine(record)
                    continue
                rows.add_otlp(ExportTraceServiceRequest.FromString(payload))
        return rows

    def _quarantine(self, record: SpoolRecord) -> None:
        self._metrics.add("quarantined_records")
        self._quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self._quarantine_dir / f"{record.segment:020d}-{record.offset:012d}.pb"
        path.write_bytes(record.payload)
        _logger.exception("a spooled request could not be converted to rows; kept in %s", path)

    def _deliver(self, batch: SpoolBatch) -> bool:
        """Insert ``batch`` until it lands; ``False`` when shutdown cut the retries short.

        The path is a function of the batch (its content and the configuration), so a
        replay after a crash takes the same path with the same token.
        """
        rows: SpanRows | None = None
        written = batch.span_count
        delay = self._retry_initial
        began = time.monotonic()
        native_failures = 0
        while True:
            native: NativeInsert | None = None
            try:
                writer = self._open()
                with self._store_lock:
                    native = self._native
                    if native is None or not native.write(batch):
                        native = None
                        if rows is None:
                            rows = self._rows(batch)
                        written = len(rows)
                        writer.write(rows, batch.dedup_token)
            except Exception as exc:
                self._failed(exc, written)
                if native is not None:
                    native_failures += 1
                    if native_failures >= _NATIVE_ATTEMPTS:
                        # The engine-side path itself is failing (an engine without a setting
                        # it needs, say): SpanRows writes the same single block, same token.
                        _logger.error("native insert disabled after %d failures: %s", native_failures, exc)
                        self._native_file = None
                        self._drop_native()
                pause = delay * random.uniform(0.5, 1.0)  # noqa: S311  (jitter, not security)
                if self._deadline is not None:
                    pause = min(pause, max(0.0, self._deadline - time.monotonic()))
                if self._stop.is_set():
                    time.sleep(pause)  # shutting down: keep trying until the deadline
                else:
                    self._stop.wait(pause)
                if self._expired():
                    return False
                delay = min(delay * 2, self._retry_max)
                continue
            self._metrics.add("written_spans", written)
            _logger.debug(
                "inserted %d spans from %d requests (%s) in %.0f ms",
                written,
                len(batch.records),
                "SpanRows" if native is None else "native",
                (time.monotonic() - began) * 1000,
            )
            if self._failing_since is not None:
                _logger.warning("store writes recovered after %.1f s", time.monotonic() - self._failing_since)
                self._failing_since = None
                self.last_error = None
            return True

    def _failed(self, exc: Exception, spans: int) -> None:
        self._metrics.add("store_errors")
        if spans:
            self._metrics.add("retried_spans", spans)
        self.last_error = str(exc)
        if self._failing_since is None:
            self._failing_since = time.monotonic()
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
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:
                    _logger.debug("closing the store failed", exc_info=True)
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
            client = open_store(self._store, use_database=False)
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

    # -- reads for the query server -------------------------------------------------------

    def query(self, sql: str, parameters: Mapping[str, object] | None = None) -> QueryResult:
        """Run one read-only statement on the drain's connection (``readonly=1``)."""
        self._open()
        with self._store_lock:
            if self._client is None:
                raise StoreError("the store is not open")
            return run_query(self._client, sql, parameters=parameters, settings={"readonly": 1})
