"""The spool's appending side, in the receiving process: :class:`DurableSpool`.

A request is acknowledged only after :meth:`DurableSpool.append` returns, and that
returns only once the record is on disk (``fsync="always"``: group commit, one ``fsync``
covers every append that arrived while the previous one ran) or in the kernel's page
cache (``fsync="never"``: survives a process crash such as SIGKILL, not a power loss).

The writer publishes its durable position in the ``durable`` file after each group
commit; the reader (:mod:`.reader`) never reads past it, so it never inserts a span that
was not safe on disk. A torn write at the end of a segment (a crash mid-append) is cut
off when the writer opens the spool. The bytes are laid out by :mod:`.format`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Literal

from .format import (
    DURABLE,
    Checkpoint,
    SpoolError,
    frame_record,
    fsync_dir,
    list_segments,
    lock_spool,
    pack_durable,
    read_checkpoint,
    scan_records,
    segment_path,
    write_checkpoint,
)

__all__ = ["DurableSpool", "FsyncPolicy", "SpoolFullError"]

_logger = logging.getLogger("llmledger.collector.spool")

FsyncPolicy = Literal["always", "never"]


class SpoolFullError(SpoolError):
    """The spool is at its configured bound: the sender should retry later."""


class DurableSpool:
    """The appending side: bounded, crash-safe storage of accepted OTLP requests (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: FsyncPolicy,
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync == "always"
        self._lock = threading.Lock()
        self._sync_cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._appended_seq = 0
        self._synced_seq = 0
        self._retired_fds: list[int] = []
        self._closed = False
        self._refreshed = 0.0
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_spool(directory, "writer.lock", wait=0)
        checkpoint = read_checkpoint(directory)
        if checkpoint is None:
            checkpoint = Checkpoint(uuid.uuid4().hex, (0, 0), None)
            write_checkpoint(directory, checkpoint)
        self.spool_id = checkpoint.spool_id
        self._sizes: dict[int, int] = {}  # segment -> bytes written
        self._recover(checkpoint)
        self._active = max([*self._sizes, checkpoint.cursor[0]]) + 1
        self._fd = self._open_segment(self._active)
        self._marker_fd = os.open(directory / DURABLE, os.O_RDWR | os.O_CREAT, 0o600)
        self._publish(self._active, 0)
        fsync_dir(directory)

    def _recover(self, checkpoint: Checkpoint) -> None:
        """Index the segments left by earlier runs; cut a torn tail; drop fully drained segments."""
        keep = checkpoint.claim.segment if checkpoint.claim else checkpoint.cursor[0]
        for segment in list_segments(self.directory):
            path = segment_path(self.directory, segment)
            if segment < min(keep, checkpoint.cursor[0]):
                path.unlink()
                continue
            data = path.read_bytes()
            # Damage inside is counted when the drain reads past it; only a torn tail is cut here.
            _, valid_end, _ = scan_records(data)
            if valid_end < len(data):
                _logger.warning(
                    "spool segment %s: cut %d bytes of an incomplete record (a write torn by a crash)",
                    path.name,
                    len(data) - valid_end,
                )
                with open(path, "r+b") as file:
                    file.truncate(valid_end)
                    os.fsync(file.fileno())
            self._sizes[segment] = valid_end

    def _open_segment(self, segment: int) -> int:
        fd = os.open(segment_path(self.directory, segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[segment] = 0
        return fd

    def _publish(self, segment: int, end: int) -> None:
        os.pwrite(self._marker_fd, pack_durable(segment, end), 0)

    # -- size accounting -------------------------------------------------------------------

    def _refresh_locked(self) -> None:
        """Forget segments the reader has deleted (it deletes what is fully drained)."""
        self._refreshed = time.monotonic()
        for segment in list(self._sizes):
            if segment != self._active and not segment_path(self.directory, segment).exists():
                del self._sizes[segment]

    @property
    def total_bytes(self) -> int:
        """Bytes of segment files on disk (refreshed at most once a second)."""
        with self._lock:
            if time.monotonic() - self._refreshed > 1.0:
                self._refresh_locked()
            return sum(self._sizes.values())

    def has_room(self, size: int) -> bool:
        """Whether a record of ``size`` bytes would fit under the bound now."""
        with self._lock:
            if sum(self._sizes.values()) + size <= self._max_bytes:
                return True
            self._refresh_locked()
            return sum(self._sizes.values()) + size <= self._max_bytes

    # -- appending -------------------------------------------------------------------------

    def append(self, payload: bytes, span_count: int) -> None:
        """Store one record; return once it is durable under the fsync policy.

        Raises :class:`SpoolFullError` at the bound and :class:`SpoolError` on a disk error.
        """
        record = frame_record(payload, span_count, time.time_ns() // 1_000_000)
        with self._lock:
            if self._closed:
                raise SpoolError("the spool is closed")
            total = sum(self._sizes.values())
            if total + len(record) > self._max_bytes:
                self._refresh_locked()
                total = sum(self._sizes.values())
                if total + len(record) > self._max_bytes:
                    raise SpoolFullError(
                        f"the spool holds {total} bytes, its bound is {self._max_bytes}: "
                        "the store is not keeping up or is unreachable"
                    )
            try:
                if (
                    self._sizes[self._active]
                    and self._sizes[self._active] + len(record) > self._segment_bytes
                ):
                    self._roll_locked()
                self._write_all(record)
            except OSError as exc:
                raise SpoolError(f"cannot write to the spool in {self.directory}: {exc}") from exc
            self._sizes[self._active] += len(record)
            self._appended_seq += 1
            seq = self._appended_seq
            if not self._fsync:
                self._publish(self._active, self._sizes[self._active])
        if self._fsync:
            self._sync_until(seq)

    def _write_all(self, record: bytes) -> None:
        view = memoryview(record)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError:
            if written:
                # Never leave half a record in front of a later good one.
                os.ftruncate(self._fd, self._sizes[self._active])
            raise

    def _roll_locked(self) -> None:
        if self._fsync:
            self._retired_fds.append(self._fd)  # fsynced (then closed) by the next group commit
        else:
            os.close(self._fd)
        self._active += 1
        self._fd = self._open_segment(self._active)

    def _sync_until(self, seq: int) -> None:
        with self._sync_cond:
            while self._synced_seq < seq:
                if self._syncing:
                    self._sync_cond.wait()
                    continue
                self._syncing = True
                with self._lock:
                    target = self._appended_seq
                    fds = [*self._retired_fds, self._fd]
                    self._retired_fds = []
                    active, end = self._active, self._sizes[self._active]
                self._sync_cond.release()
                error: OSError | None = None
                try:
                    for fd in fds:
                        os.fsync(fd)
                    if len(fds) > 1:
                        fsync_dir(self.directory)
                    self._publish(active, end)
                except OSError as exc:
                    error = exc
                finally:
                    for fd in fds[:-1]:
                        os.close(fd)
                    self._sync_cond.acquire()
                    self._syncing = False
                    self._sync_cond.notify_all()
                if error is not None:
                    raise SpoolError(f"cannot fsync the spool in {self.directory}: {error}") from error
                self._synced_seq = max(self._synced_seq, target)

    def close(self) -> None:
        """Flush and close; later appends fail; the lock is released."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fds = [*self._retired_fds, self._fd]
            self._retired_fds = []
        for fd in fds:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.close(self._marker_fd)
        os.close(self._lock_fd)
