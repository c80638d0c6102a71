"""``llmledger_otlp``: the standard OTLP span export, plus a local buffer for what the collector misses.

Each batch the SDK hands over is encoded once (:mod:`.otlp_encode`: the bytes the SDK's
OTLP encoder gives, at a fraction of its cost), appended to this process's buffer file
(:mod:`.otlp_buffer`: a write to the page cache, no fsync) and sent. When the collector
acknowledges it, an ``ACK`` record closes it. When the collector cannot take it (down,
restarting, overloaded) the batch stays in the file, the SDK is told it was exported, and a
background thread re-sends the same bytes, oldest first, with exponential back-off, until the
collector takes them. Meanwhile new batches queue behind (appended, not sent), so the SDK's
worker is never held up by an outage. If the process dies, the next process of the app that
starts adopts the file and delivers what is left.

Re-sending can repeat a request the collector did store (its answer lost, or this process
killed between the answer and the ``ACK``); the collector recognises the repeated bytes and
acknowledges them without storing them again, so each span lands once.

Bounded by size (``max_bytes`` of buffer files on disk; past it new batches that cannot be
sent are dropped) and age (a batch older than ``max_age_seconds`` is dropped rather than
sent): each drop is counted (:meth:`BufferedOTLPSpanExporter.stats`, and the OpenTelemetry
counter ``llmledger.otlp_buffer.dropped_spans``) and logged once per episode. Shutdown waits
for the backlog only while the collector is answering and never past the SDK's timeout;
whatever is left stays on disk for the next process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from opentelemetry import metrics
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmledger.instrumentation._internal.config import BufferSettings
from llmledger.instrumentation._internal.errors import internal_error
from llmledger.instrumentation._internal.otlp_buffer import (
    DATA,
    HEADER_SIZE,
    BufferFile,
    PendingRecord,
    adopt_orphans,
)
from llmledger.instrumentation._internal.otlp_encode import encode_trace_request
from llmledger.instrumentation._internal.otlp_transport import (
    Delivery,
    OtlpSettings,
    Sender,
    SendResult,
    open_sender,
)

__all__ = ["BufferSettings", "BufferStats", "BufferedOTLPSpanExporter"]

_logger = logging.getLogger("llmledger.instrumentation.otlp_buffer")

_RETRY_INITIAL: Final = 1.0
_RETRY_MAX: Final = 30.0
# Once everything in this process's file is delivered, the file is emptied when it has grown
# past this: small enough to stay in the page cache, large enough to truncate rarely.
_RESET_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What the buffer holds and has done since this exporter started."""

    pending_batches: int
    pending_spans: int
    disk_bytes: int
    exported_spans: int
    """Spans the collector took at the first attempt."""
    buffered_spans: int
    """Spans kept on disk because the collector could not take them at once (or left by a dead process)."""
    redelivered_spans: int
    """Spans delivered from the buffer later."""
    dropped_spans: Mapping[str, int] = field(default_factory=dict[str, int])
    """By reason: ``full``, ``expired``, ``rejected`` (the collector refused them for good), ``unreadable``,
    ``no_buffer`` (the directory could not be used and the collector was away)."""
    adopted_files: int = 0
    damaged_bytes: int = 0
    collector_reachable: bool = True


class BufferedOTLPSpanExporter(SpanExporter):
    """OTLP span exporter with a bounded, crash-safe disk buffer (see the module doc).

    Zero-code: ``OTEL_TRACES_EXPORTER=llmledger_otlp``. Arguments override the environment
    (tests, or an app that builds its pipeline in code).
    """

    def __init__(
        self,
        *,
        buffer_dir: str | Path | None = None,
        max_bytes: int | None = None,
        max_age_seconds: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._settings = OtlpSettings.from_env(env)
        directory = None if buffer_dir is None else Path(buffer_dir)
        given = {"directory": directory, "max_bytes": max_bytes, "max_age_seconds": max_age_seconds}
        self._buffer = BufferSettings.from_env(env, **{k: v for k, v in given.items() if v is not None})
        self._sender: Sender = open_sender(self._settings)
        meter = metrics.get_meter("llmledger.instrumentation.otlp_buffer")
        self._buffered_counter = meter.create_counter(
            "llmledger.otlp_buffer.buffered_spans",
            "{span}",
            "spans kept on disk because the collector could not take them",
        )
        self._redelivered_counter = meter.create_counter(
            "llmledger.otlp_buffer.redelivered_spans", "{span}", "spans delivered from the disk buffer"
        )
        self._dropped_counter = meter.create_counter(
            "llmledger.otlp_buffer.dropped_spans", "{span}", "spans given up on, by reason"
        )
        self._init_state()
        self._open_files()
        weak = weakref.WeakMethod(self._after_fork_in_child)

        def after_fork() -> None:
            if (method := weak()) is not None:
                method()

        os.register_at_fork(after_in_child=after_fork)

    # -- state -----------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._own: BufferFile | None = None
        self._adopted: list[BufferFile] = []
        self._pending: deque[PendingRecord] = deque()
        self._outage = False
        self._shutdown = False
        self._logged: set[str] = set()
        self._exported = 0
        self._buffered = 0
        self._redelivered = 0
        self._dropped: Counter[str] = Counter()
        self._adopted_count = 0
        self._damaged = 0

    def _open_files(self) -> None:
        directory = self._buffer.directory
        try:
            for orphan in adopt_orphans(directory, max_file_bytes=self._buffer.max_bytes):
                self._adopted_count += 1
                self._damaged += orphan.damaged_bytes
                if not orphan.pending:
                    orphan.file.close(delete=True)
                    continue
                self._adopted.append(orphan.file)
                self._pending.extend(orphan.pending)
                self._buffered += sum(r.spans for r in orphan.pending)
            self._own = BufferFile.create(directory)
        except OSError as exc:
            # Without a buffer the exporter still exports; it just cannot keep what fails.
            _logger.error(
                "llmledger_otlp: cannot use the buffer directory %s (%s); exporting without it",
                directory,
                exc,
            )
        if self._pending:
            spans = sum(r.spans for r in self._pending)
            _logger.info(
                "llmledger_otlp: delivering %d spans left in %s by processes that exited", spans, directory
            )
            self._start_thread()

    def _after_fork_in_child(self) -> None:
        # The parent's files, locks and connections stay the parent's: the child starts its own.
        for file in [f for f in (self._own, *self._adopted) if f is not None]:
            file.close(delete=False)
        self._init_state()
        self._sender = open_sender(self._settings)
        try:
            self._own = BufferFile.create(self._buffer.directory)
        except OSError as exc:
            _logger.error("llmledger_otlp: cannot use the buffer directory after fork (%s)", exc)

    # -- SpanExporter ----------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown or not spans:
            return SpanExportResult.FAILURE if self._shutdown else SpanExportResult.SUCCESS
        try:
            return self._export(spans)
        except Exception as exc:  # ours never reaches the app (re-raised under our tests)
            internal_error("llmledger_otlp export", exc)
            return SpanExportResult.FAILURE

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        payload = encode_trace_request(spans)
        count = len(spans)
        with self._lock:
            record = self._write(payload, count)
            if self._pending or self._outage:
                # A backlog is being delivered: queue behind it, never ahead, never blocking.
                if record is None:
                    self._drop(count, self._unbuffered_reason())
                    return SpanExportResult.FAILURE
                self._keep(record)
                return SpanExportResult.SUCCESS
        with self._send_lock:
            result = self._sender.send(payload, self._settings.timeout)
        with self._lock:
            if result.delivery is Delivery.DELIVERED:
                self._exported += count
                if record is not None:
                    self._close(record)
                return SpanExportResult.SUCCESS
            if result.delivery is Delivery.REJECTED:
                self._reject(record, count, result)
                return SpanExportResult.FAILURE
            self._begin_outage(result)
            if record is None:
                self._drop(count, self._unbuffered_reason())
                return SpanExportResult.FAILURE
            self._keep(record)
            return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the backlog is delivered, unless the collector is away; ``True`` if nothing is left."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            while self._pending and not self._outage and not self._shutdown:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            return not self._pending

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Stop within ``timeout_millis``: deliver the backlog while the collector answers, keep the rest on disk."""
        if self._shutdown:
            return
        deadline = time.monotonic() + max(0.0, timeout_millis) / 1000
        with self._lock:
            while self._pending and not self._outage and self._thread is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            self._shutdown = True
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            own, self._own = self._own, None
            if own is not None:
                # Everything closed: nothing for a successor to adopt.
                own.close(delete=own.open_records == 0)
            for file in self._adopted:
                file.close(delete=file.open_records == 0)
            self._adopted.clear()
            self._pending.clear()
        # A connection that will not close cleanly is closed anyway.
        with contextlib.suppress(Exception):
            self._sender.close()

    # -- what the buffer holds -------------------------------------------------------------

    def stats(self) -> BufferStats:
        with self._lock:
            files = [f for f in (self._own, *self._adopted) if f is not None]
            return BufferStats(
                pending_batches=len(self._pending),
                pending_spans=sum(r.spans for r in self._pending),
                disk_bytes=sum(f.size for f in files),
                exported_spans=self._exported,
                buffered_spans=self._buffered,
                redelivered_spans=self._redelivered,
                dropped_spans=dict(self._dropped),
                adopted_files=self._adopted_count,
                damaged_bytes=self._damaged,
                collector_reachable=not self._outage,
            )

    @property
    def buffer_directory(self) -> Path:
        return self._buffer.directory

    # -- internals (under self._lock unless said otherwise) --------------------------------

    def _disk_bytes(self) -> int:
        return sum(f.size for f in (self._own, *self._adopted) if f is not None)

    def _write(self, payload: bytes, spans: int) -> PendingRecord | None:
        own = self._own
        if own is None or own.closed:
            return None
        needed = HEADER_SIZE + len(payload)
        if own.open_records == 0 and own.size and self._disk_bytes() + needed > self._buffer.max_bytes:
            own.reset()
        if self._disk_bytes() + needed > self._buffer.max_bytes:
            return None
        now = time.time()
        try:
            offset = own.append(DATA, payload, spans, now)
        except OSError as exc:
            self._log_once("write", logging.ERROR, "llmledger_otlp: cannot write to the buffer (%s)", exc)
            return None
        own.open_records += 1
        self._logged.discard("full")
        return PendingRecord(own, offset, offset + HEADER_SIZE, len(payload), spans, now)

    def _unbuffered_reason(self) -> str:
        return "full" if self._own is not None and not self._own.closed else "no_buffer"

    def _keep(self, record: PendingRecord) -> None:
        self._pending.append(record)
        self._buffered += record.spans
        self._buffered_counter.add(record.spans)
        self._start_thread()
        self._wake.set()

    def _close(self, record: PendingRecord) -> None:
        file = record.file
        if file.closed:
            return
        try:
            file.ack(record.offset)
        except OSError as exc:
            # The batch was delivered; a successor may send it again and the collector drops the repeat.
            self._log_once("ack", logging.WARNING, "llmledger_otlp: cannot mark a batch delivered (%s)", exc)
            return
        if file.open_records == 0:
            if file.adopted:
                file.close(delete=True)
                self._adopted.remove(file)
            elif file.size > _RESET_BYTES:
                try:
                    file.reset()
                except OSError as exc:
                    self._log_once(
                        "reset", logging.WARNING, "llmledger_otlp: cannot empty the buffer file (%s)", exc
                    )

    def _reject(self, record: PendingRecord | None, spans: int, result: SendResult) -> None:
        if record is not None:
            self._close(record)
        self._drop(spans, "rejected", result.detail)

    def _drop(self, spans: int, reason: str, detail: str = "") -> None:
        self._dropped[reason] += spans
        self._dropped_counter.add(spans, {"reason": reason})
        messages = {
            "full": f"the buffer in {self._buffer.directory} is full ({self._buffer.max_bytes} bytes)",
            "no_buffer": f"the collector cannot take them and the buffer directory {self._buffer.directory} is unusable",
            "expired": f"buffered spans are older than {self._buffer.max_age_seconds:.0f}s",
            "rejected": f"the collector refused them for good ({detail})",
            "unreadable": f"a buffered batch could not be read back ({detail})",
        }
        self._log_once(
            reason,
            logging.ERROR,
            "llmledger_otlp: dropping spans: %s; further drops are counted (llmledger.otlp_buffer.dropped_spans)",
            messages[reason],
        )

    def _begin_outage(self, result: SendResult) -> None:
        self._idle.notify_all()  # whoever waits for the backlog stops waiting for an absent collector
        if not self._outage:
            self._outage = True
            _logger.warning(
                "llmledger_otlp: the collector at %s cannot take spans now (%s); keeping them in %s until it can",
                self._settings.endpoint,
                result.detail,
                self._buffer.directory,
            )

    def _log_once(self, key: str, level: int, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _logger.log(level, message, *args)

    def _start_thread(self) -> None:
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(target=self._deliver, name="llmledger-otlp-buffer", daemon=True)
            self._thread.start()

    # -- the delivery thread (not under the lock) ------------------------------------------

    def _next(self) -> PendingRecord | None:
        """The oldest record still worth sending; expired ones are dropped on the way."""
        horizon = time.time() - self._buffer.max_age_seconds
        while self._pending:
            record = self._pending[0]
            if record.file.closed:
                self._pending.popleft()
                continue
            if record.written_at >= horizon:
                return record
            self._pending.popleft()
            self._close(record)
            self._drop(record.spans, "expired")
        return None

    def _deliver(self) -> None:
        backoff = _RETRY_INITIAL
        while not self._stopping.is_set():
            with self._lock:
                record = self._next()
                if record is None:
                    if self._outage:
                        self._outage = False
                        _logger.info(
                            "llmledger_otlp: the collector is taking spans again; the buffer is empty"
                        )
                    self._wake.clear()
                    self._idle.notify_all()
            if record is None:
                self._wake.wait()
                continue
            try:
                result = self._send(record)
            except Exception as exc:  # the thread must outlive any one failure
                internal_error("llmledger_otlp delivery", exc)
                result = SendResult(Delivery.RETRY, str(exc))
            if result.delivery is not Delivery.RETRY:
                backoff = _RETRY_INITIAL
                continue
            with self._lock:
                self._begin_outage(result)
            delay = max(result.retry_after or 0.0, backoff * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            backoff = min(backoff * 2, _RETRY_MAX)
            self._stopping.wait(delay)

    def _send(self, record: PendingRecord) -> SendResult:
        try:
            with self._lock:
                if record.file.closed:
                    return SendResult(Delivery.DELIVERED)
                payload = record.read()
        except OSError as exc:
            with self._lock:
                self._discard_head(record)
                self._drop(record.spans, "unreadable", str(exc))
            return SendResult(Delivery.REJECTED, str(exc))
        with self._send_lock:
            result = self._sender.send(payload, self._settings.timeout)
        with self._lock:
            if result.delivery is Delivery.DELIVERED:
                self._discard_head(record)
                self._redelivered += record.spans
                self._redelivered_counter.add(record.spans)
            elif result.delivery is Delivery.REJECTED:
                self._discard_head(record)
                self._reject(None, record.spans, result)
        return result

    def _discard_head(self, record: PendingRecord) -> None:
        if self._pending and self._pending[0] is record:
            self._pending.popleft()
        self._close(record)
