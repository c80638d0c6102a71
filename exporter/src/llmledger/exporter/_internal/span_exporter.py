"""The direct span exporter: SDK spans straight into the store, no collector in between.

``OTEL_TRACES_EXPORTER=llmledger opentelemetry-instrument python app.py`` builds it with
no arguments (the store comes from ``LLMLEDGER_CLICKHOUSE_URL`` or the default embedded
store) behind the SDK's ``BatchSpanProcessor``. The store is opened and the schema
applied on the first write, off the app's import path.

The SDK hands over at most 512 spans at a time (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``), and
every insert pays a fixed ~60 ms of engine work (the materialized views are planned per
insert, and each insert leaves parts to merge later): written one by one, such batches
cost ~165 µs a span instead of ~20. So :meth:`export` converts the spans to rows and
adds them to a pending batch, which is written as one insert when it reaches
``max_batch_spans`` (in the exporting thread, which gives the SDK's queue back-pressure)
or is ``max_delay_s`` old (by a background thread), and on :meth:`force_flush` and
:meth:`shutdown`, which the SDK calls at exit. Spans wait here as they wait in the
SDK's own queue: a killed process loses both.

Export never raises into the app. A batch that fails to write is kept, with its
deduplication token, and retried before anything newer (a retry after a write that did
land is dropped by the store); a failure is logged once until the next success. A failure
that is not the store's, the network's or the configuration's is a bug of llmledger's:
contained the same way, and counted (:mod:`.errors`), but raised under our tests. While
the store stays unusable pending spans are bounded by ``max_pending_spans``: past it
:meth:`export` refuses new spans with ``FAILURE`` (the SDK counts them as dropped). After
a store fails to open, it is not tried again for :data:`.direct_store.REOPEN_AFTER_S`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmledger.exporter._internal.config import ExportSettings, StoreConfig
from llmledger.exporter._internal.direct_store import FailureLog, LazyStore
from llmledger.exporter._internal.errors import contain, internal_error
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import STORE_FAILURES
from llmledger.exporter._internal.writer import SpanWriter

__all__ = ["ClickHouseSpanExporter"]

_logger = logging.getLogger(__name__)

# Pending spans allowed while writes fail, as a multiple of the batch size.
_PENDING_BATCHES: Final = 10
# After a bug of ours stopped a flush, the flusher waits this long before the next one, so a
# bug that repeats costs the app a flush a second, not a core.
_AFTER_A_BUG_S: Final = 1.0


class _Batch:
    """Rows to write as one insert; frozen (with its token) once a write was attempted."""

    __slots__ = ("rows", "since", "token")

    def __init__(self) -> None:
        self.rows = SpanRows()
        self.since = 0.0  # set when the first spans arrive
        self.token: str | None = None


class ClickHouseSpanExporter(SpanExporter):
    """Writes finished spans to the llmledger store's ``otel_traces`` (and so ``llm_calls``).

    ``max_batch_spans`` and ``max_delay_s`` default to ``LLMLEDGER_EXPORT_BATCH_SPANS``
    (20,000) and ``LLMLEDGER_EXPORT_DELAY_MS`` (1,000), read by :class:`.config.ExportSettings`;
    ``max_delay_s=0`` writes every export as it arrives.
    """

    def __init__(
        self,
        config: StoreConfig | None = None,
        *,
        apply_schema: bool = True,
        max_batch_spans: int | None = None,
        max_delay_s: float | None = None,
    ) -> None:
        settings = ExportSettings.resolve(
            arguments={"max_batch_spans": max_batch_spans, "max_delay_s": max_delay_s}
        )
        self._store = LazyStore(config, apply_schema=apply_schema)
        self._max_batch = settings.max_batch_spans
        self._max_delay = settings.max_delay_s
        self._max_pending = self._max_batch * _PENDING_BATCHES
        # _lock guards the batches and the flags; _write_lock serialises writes (and the
        # store's opening) so batches land in order, without holding up export().
        self._lock = threading.Condition(threading.Lock())
        self._write_lock = threading.Lock()
        self._ready: deque[_Batch] = deque()  # full, or failed and waiting for a retry
        self._open_batch = _Batch()
        self._writer: SpanWriter | None = None
        self._failures = FailureLog(_logger, "span export")
        self._refusing = False
        self._shut_down = False
        self._retry_at = 0.0
        self._flusher: threading.Thread | None = None
        self._flusher_pid = 0
        if hasattr(os, "register_at_fork"):
            # A forked child must not write its parent's pending spans a second time, nor
            # use the parent's store handle: it starts empty and opens the store itself.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (e := ref()) is not None and e._reset_after_fork())

    def _reset_after_fork(self) -> bool:
        self._lock = threading.Condition(threading.Lock())
        self._write_lock = threading.Lock()
        self._ready = deque()
        self._open_batch = _Batch()
        self._store.forget()
        self._writer = None
        self._flusher = None
        return True

    # -- the store -------------------------------------------------------------------

    def _open(self) -> SpanWriter:
        if self._writer is None:
            client, config = self._store.open()
            self._writer = SpanWriter(client, config.database, defer_attribute_indexes=config.embedded)
        return self._writer

    def _pending_spans(self) -> int:
        return sum(len(batch.rows) for batch in self._ready) + len(self._open_batch.rows)

    @property
    def pending_spans(self) -> int:
        """Spans accepted by :meth:`export` and not yet written."""
        with self._lock:
            return self._pending_spans()

    # -- writing ---------------------------------------------------------------------

    def _write_due(self, *, everything: bool) -> bool:
        """Write the ready batches (and the open one when ``everything`` or when it is due); ``True`` when nothing is left."""
        with self._write_lock:
            while True:
                with self._lock:
                    open_batch = self._open_batch
                    if open_batch.rows and (
                        everything
                        or len(open_batch.rows) >= self._max_batch
                        or time.monotonic() - open_batch.since >= self._max_delay
                    ):
                        self._ready.append(open_batch)
                        self._open_batch = _Batch()
                    if not self._ready:
                        return True
                    batch = self._ready[0]
                if batch.token is None:
                    batch.token = batch.rows.dedup_token()
                try:
                    self._open().write(batch.rows, dedup_token=batch.token)
                except Exception as exc:
                    # The store down, locked or misnamed keeps the batch for a retry; so does a
                    # bug of ours in writing it (contained, counted), rather than losing spans.
                    contain("the span exporter writing a batch", exc, STORE_FAILURES)
                    self._write_failed(len(batch.rows), exc)
                    return False
                with self._lock:
                    self._ready.popleft()
                    self._refusing = False
                self._failures.succeeded()

    def _write_failed(self, spans: int, exc: Exception) -> None:
        # A failed batch is retried by the flusher after a pause, not in a tight loop.
        self._retry_at = time.monotonic() + max(self._max_delay, 1.0)
        self._failures.failed(
            exc, "llmledger could not write %d span(s) to the store (kept, retried later): %s", spans, exc
        )

    def _next_due(self) -> float | None:
        # Called with _lock held: when the flusher has something to write, if anything.
        if self._ready:
            return self._retry_at
        if self._open_batch.rows:
            return self._open_batch.since + self._max_delay
        return None

    def _run_flusher(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._shut_down:
                        return
                    due = self._next_due()
                    if due is None:
                        self._lock.wait()
                        continue
                    now = time.monotonic()
                    if due <= now:
                        break
                    self._lock.wait(due - now)
            try:
                self._write_due(everything=False)
            except Exception as exc:
                # _write_due handles the store's failures itself: what reaches here is ours. The
                # thread must not die of it in the app (nothing would write the spans after it).
                contain("the span exporter's flusher", exc, ())
                with self._lock:
                    if not self._shut_down:
                        self._lock.wait(_AFTER_A_BUG_S)

    def _ensure_flusher(self) -> None:
        # Called with _lock held. A forked child has no thread: start one of its own.
        if self._flusher is None or self._flusher_pid != os.getpid() or not self._flusher.is_alive():
            self._flusher_pid = os.getpid()
            self._flusher = threading.Thread(target=self._run_flusher, name="llmledger-export", daemon=True)
            self._flusher.start()

    # -- the SpanExporter interface ----------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Add ``spans`` to the pending batch (see the module doc); ``FAILURE`` after shutdown or when too much is pending."""
        if self._shut_down:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            with self._lock:
                if self._pending_spans() + len(spans) > self._max_pending:
                    if not self._refusing:
                        self._refusing = True
                        _logger.error(
                            "llmledger has %d span(s) waiting for the store; refusing more until it recovers",
                            self._pending_spans(),
                        )
                    return SpanExportResult.FAILURE
                batch = self._open_batch
                started = not batch.rows
                if started:
                    batch.since = time.monotonic()
                batch.rows.add_sdk_spans(spans)
                full = len(batch.rows) >= self._max_batch or self._max_delay <= 0
                if started and not full:
                    # The flusher sleeps until there is something to time; wake it once per batch.
                    self._ensure_flusher()
                    self._lock.notify()
            if full:
                self._write_due(everything=self._max_delay <= 0)
        except Exception as exc:
            # The conversion takes every span the SDK makes, and _write_due handles the store's
            # failures itself: what reaches here is ours, and the spans are dropped.
            internal_error("the span exporter taking spans (they are dropped)", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write everything pending now; ``False`` when some of it could not be written."""
        try:
            return self._write_due(everything=True)
        except Exception as exc:  # _write_due handles the store's failures itself: this is ours
            contain("the span exporter flushing", exc, ())
            return False

    def shutdown(self) -> None:
        """Write what is pending, then close the store; later exports return ``FAILURE``."""
        if self._shut_down:
            return
        self.force_flush()
        with self._lock:
            self._shut_down = True
            self._lock.notify_all()
            left = self._pending_spans()
        if left:
            _logger.error("llmledger shut down with %d span(s) it could not write", left)
        with self._write_lock:
            self._store.close("the span exporter closing the store")
            self._writer = None
