"""What every signal's drain does the same way: its thread, its loop, its back-off, its failures.

A drain claims the next batch from its spool, delivers it piece by piece
(:class:`.piecewise.PiecewiseWriter`), and commits the spool's cursor with the counts written
and dead-lettered; at shutdown it keeps draining until a deadline. Between failed attempts
it backs off with jitter, doubling up to a ceiling; a run of failures is logged once when
it starts and once when it ends, and its last error is what the status reports. The traces'
drain (:class:`.drain.SpoolDrain`) and the metrics' and logs' (:class:`.signal_drain.SignalDrain`)
differ only in how a piece is inserted and what the store connection needs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from .dead_letters import DeadLetterFile
from .metrics import CollectorMetrics
from .pieces import RequestShape
from .piecewise import PiecewiseWriter
from .spool import SpoolBatch, SpoolError, SpoolReader

__all__ = ["DrainLoop", "DrainPacing"]


@dataclass(frozen=True, slots=True)
class DrainPacing:
    """How a drain sizes its batches and spaces its retries: the collector's settings of these
    names (``batch_max_items`` is ``batch_max_spans``, which bounds every signal's batches)."""

    batch_max_items: int
    batch_max_bytes: int
    batch_linger_seconds: float
    retry_initial_seconds: float
    retry_max_seconds: float


class DrainLoop(ABC):
    """A thread that moves one spool's batches into the store until stopped (see the module doc)."""

    def __init__(
        self,
        name: str,
        spool: SpoolReader,
        metrics: CollectorMetrics,
        pacing: DrainPacing,
        *,
        shape: RequestShape,
        dead_letter_dir: Path,
        splits_file: str,
        logger: logging.Logger,
        thread_name: str,
    ) -> None:
        """``name`` is the drain as its log lines call it ("the drain", "the metrics drain");
        what the store refuses of a ``shape`` request is split as the ``splits_file`` records
        (in ``dead_letter_dir``) and dead-lettered there."""
        self._name = name
        self._spool = spool
        self._metrics = metrics
        self._pieces = PiecewiseWriter(
            shape, DeadLetterFile(dead_letter_dir), dead_letter_dir / splits_file, metrics, logger
        )
        self._logger = logger
        self._batch_max_items = pacing.batch_max_items
        self._batch_max_bytes = pacing.batch_max_bytes
        self._retry_initial = pacing.retry_initial_seconds
        self._retry_max = pacing.retry_max_seconds
        self._linger = pacing.batch_linger_seconds
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
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
        if self._thread.ident is not None:  # started
            self._thread.join(timeout + 5)
        return self._spool.pending_bytes() == 0

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    # -- the loop ------------------------------------------------------------------------

    def _when_idle(self) -> None:  # noqa: B027  (a hook: only the traces' drain has work here)
        """Called before each wait for data while not stopping (the traces' drain opens the store)."""

    @abstractmethod
    def _deliver(self, batch: SpoolBatch) -> dict[str, int] | None:
        """Write ``batch``; the totals to commit with it, ``None`` when shutdown cut it short."""

    def _run(self) -> None:
        try:
            while not self._expired():
                if not self._stop.is_set():
                    self._when_idle()
                if not self._spool.wait_for_data(0.2):
                    if self._stop.is_set():
                        return
                    continue
                # Each insert costs the engine ~150 ms whatever its size (planning, the views,
                # parts to merge later), so a batch may grow for a moment when little waits.
                if self._linger > 0 and not self._stop.is_set():
                    self._spool.wait_to_gather(self._batch_max_bytes // 4, self._linger, self._stop)
                batch = self._spool.claim_batch(self._batch_max_items, self._batch_max_bytes)
                if batch is None:
                    if self._stop.is_set():
                        return
                    continue
                totals = self._deliver(batch)
                if totals is None:
                    return
                self._spool.commit(batch, totals)
                self._pieces.finish()
                # The records are views of the segments' mappings, and commit has just deleted
                # the segments it finished: held until the next batch, they would keep up to a
                # batch's size of deleted files on the disk (a full spool would stay full).
                del batch
        except SpoolError as exc:
            self._metrics.add("spool_errors")
            self.fatal_error = exc
            self._logger.error("%s stopped on a spool error: %s", self._name, exc)
        except BaseException as exc:
            self.fatal_error = exc
            self._logger.exception("%s stopped on an internal error", self._name)
            raise

    # -- retrying --------------------------------------------------------------------------

    def _back_off(self, delay: float) -> float | None:
        """Wait about ``delay`` seconds before the next attempt; the delay after that, or
        ``None`` when the shutdown deadline has passed (the attempt is left to the next start)."""
        pause = delay * random.uniform(0.5, 1.0)  # noqa: S311  (jitter, not security)
        if self._deadline is not None:
            pause = min(pause, max(0.0, self._deadline - time.monotonic()))
        if self._stop.is_set():
            time.sleep(pause)  # shutting down: keep trying until the deadline
        else:
            self._stop.wait(pause)
        if self._expired():
            return None
        return min(delay * 2, self._retry_max)

    def _failing(self, exc: Exception) -> bool:
        """Count a failed attempt and keep its error for the status; whether it begins a run of
        failures (the caller then logs it, once)."""
        self._metrics.add("store_errors")
        self.last_error = str(exc)
        if self._failing_since is not None:
            return False
        self._failing_since = time.monotonic()
        return True

    def _recovered(self) -> float | None:
        """End a run of failures after a success; how long it lasted, ``None`` when none ran."""
        if self._failing_since is None:
            return None
        seconds = time.monotonic() - self._failing_since
        self._failing_since = None
        self.last_error = None
        return seconds
