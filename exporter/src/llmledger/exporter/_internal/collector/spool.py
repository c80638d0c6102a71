"""The collector's write-ahead log: append-only segment files of framed OTLP requests.

A request is acknowledged only after :meth:`DurableSpool.append` returns, and that
returns only once the record is on disk (``fsync="always"``: group commit, one
``fsync`` covers every append that arrived while the previous one ran) or in the
kernel's page cache (``fsync="never"``: survives a process crash such as SIGKILL, not a
power loss).

Layout of the spool directory::

    segment-00000000000000000001.log   framed records, append-only, never rewritten
    segment-00000000000000000002.log   (a new segment per restart and every segment_bytes)
    checkpoint.json                    spool id, drain cursor, the batch being written

Each record is a 28-byte header and the payload (serialized ``ExportTraceServiceRequest``)::

    magic "LLSP" | payload length u32 | span count u32 | appended at (unix ms) u64
    | payload CRC-32 u32 | header CRC-32 u32 (over the 24 bytes before it)

Readers trust nothing: a record counts only when both CRCs match. A torn write at the
end of the last segment (a crash mid-append) is cut off when the spool opens; damage
elsewhere is skipped by scanning for the next valid header, and the skipped bytes are
counted and logged, never silently passed on.

Exactly once: the drain *claims* a batch (a byte range of one segment), the claim is
written to the checkpoint before the batch is inserted, and the batch's deduplication
token is derived from the spool id and that range. After a crash the same range is
replayed with the same token, so ClickHouse drops what it already has.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "HEADER_SIZE",
    "DurableSpool",
    "SpoolBatch",
    "SpoolError",
    "SpoolFullError",
    "SpoolRecord",
    "frame_record",
    "scan_records",
]

_logger = logging.getLogger("llmledger.collector.spool")

MAGIC: Final = b"LLSP"
_HEADER: Final = struct.Struct("<4sIIQI")  # magic, payload length, span count, unix ms, payload crc
_HEADER_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _HEADER_CRC.size
_MAX_PAYLOAD: Final = 1 << 30
_SEGMENT_NAME: Final = re.compile(r"^segment-(\d{20})\.log$")
_CHECKPOINT: Final = "checkpoint.json"

FsyncPolicy = Literal["always", "never"]


class SpoolError(OSError):
    """The spool could not store or read a record (a disk error, reported, never swallowed)."""


class SpoolFullError(SpoolError):
    """The spool is at its configured bound: the sender should retry later."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back from a segment."""

    offset: int
    end: int
    span_count: int
    appended_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """A claimed byte range ``[start, end)`` of one segment and the records in it."""

    segment: int
    start: int
    end: int
    records: tuple[SpoolRecord, ...]
    dedup_token: str

    @property
    def span_count(self) -> int:
        return sum(record.span_count for record in self.records)


def frame_record(payload: bytes, span_count: int, appended_ms: int) -> bytes:
    """The on-disk bytes of one record."""
    header = _HEADER.pack(MAGIC, len(payload), span_count, appended_ms, zlib.crc32(payload))
    return header + _HEADER_CRC.pack(zlib.crc32(header)) + payload


def _parse_header(data: bytes | memoryview, offset: int) -> tuple[int, int, int, int] | None:
    """(payload length, span count, unix ms, payload crc) of a valid header at ``offset``, else ``None``."""
    if len(data) - offset < HEADER_SIZE:
        return None
    magic, length, spans, millis, payload_crc = _HEADER.unpack_from(data, offset)
    if magic != MAGIC or length > _MAX_PAYLOAD:
        return None
    (header_crc,) = _HEADER_CRC.unpack_from(data, offset + _HEADER.size)
    if zlib.crc32(data[offset : offset + _HEADER.size]) != header_crc:
        return None
    return length, spans, millis, payload_crc


def scan_records(data: bytes, base: int = 0) -> tuple[list[SpoolRecord], int, int]:
    """Every valid record in ``data`` (which starts at file offset ``base``).

    Returns the records, the file offset just after the last valid record, and the number
    of bytes skipped as damaged before it. Bytes after the last valid record (a torn or
    incomplete tail) are neither returned nor counted as skipped.
    """
    records: list[SpoolRecord] = []
    view = memoryview(data)
    position = 0
    valid_end = 0
    skipped = 0
    size = len(data)
    while position < size:
        header = _parse_header(view, position)
        if header is not None:
            length, spans, millis, payload_crc = header
            start = position + HEADER_SIZE
            if start + length <= size:
                payload = bytes(view[start : start + length])
                if zlib.crc32(payload) == payload_crc:
                    skipped += position - valid_end
                    position = start + length
                    valid_end = position
                    records.append(
                        SpoolRecord(base + start - HEADER_SIZE, base + position, spans, millis, payload)
                    )
                    continue
        # Damage (or a torn tail): resynchronise on the next magic.
        found = data.find(MAGIC, position + 1)
        if found < 0:
            break
        position = found
    return records, base + valid_end, skipped


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableSpool:
    """Append-only, bounded, crash-safe storage of accepted OTLP requests (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: FsyncPolicy = "always",
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync == "always"
        self._lock = threading.Lock()
        self._sync_cond = threading.Condition(threading.Lock())
        self._data_cond = threading.Condition(self._lock)
        self._syncing = False
        self._appended_seq = 0
        self._synced_seq = 0
        self._retired_fds: list[int] = []
        self._closed = False
        self.skipped_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._spool_id, self._cursor, self._claim = self._load_checkpoint()
        self._sizes: dict[int, int] = {}  # segment -> file size (bytes written)
        self._readable: dict[int, int] = {}  # segment -> end of the records a reader may see
        self._oldest_ms: dict[int, int] = {}  # segment -> appended time of its first record
        self._recover()
        last = max(self._sizes, default=self._cursor[0])
        self._active = max(last, self._cursor[0]) + 1
        self._fd = self._open_segment(self._active)
        _fsync_dir(directory)

    # -- startup -------------------------------------------------------------------------

    def _load_checkpoint(self) -> tuple[str, tuple[int, int], tuple[int, int, int] | None]:
        path = self.directory / _CHECKPOINT
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            spool_id = uuid.uuid4().hex
            self._write_checkpoint_file(spool_id, (0, 0), None)
            return spool_id, (0, 0), None
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot read the spool checkpoint {path}: {exc}") from exc
        claim = state.get("claim")
        return (
            str(state["spool_id"]),
            (int(state["segment"]), int(state["offset"])),
            (int(claim[0]), int(claim[1]), int(claim[2])) if claim else None,
        )

    def _write_checkpoint_file(
        self, spool_id: str, cursor: tuple[int, int], claim: tuple[int, int, int] | None
    ) -> None:
        path = self.directory / _CHECKPOINT
        tmp = path.with_suffix(".tmp")
        text = json.dumps(
            {
                "spool_id": spool_id,
                "segment": cursor[0],
                "offset": cursor[1],
                "claim": list(claim) if claim else None,
            }
        )
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def _segments(self) -> list[int]:
        found: list[int] = []
        for entry in os.listdir(self.directory):
            match = _SEGMENT_NAME.match(entry)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"segment-{segment:020d}.log"

    def _recover(self) -> None:
        """Index the segments left by earlier runs; cut a torn tail; drop fully drained segments."""
        segments = self._segments()
        for segment in segments:
            path = self._segment_path(segment)
            if segment < self._cursor[0] and (self._claim is None or segment != self._claim[0]):
                path.unlink()
                continue
            data = path.read_bytes()
            # Damage inside is counted when the drain reads past it; only a torn tail is cut here.
            records, valid_end, _ = scan_records(data)
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
            self._readable[segment] = valid_end
            if records:
                self._oldest_ms[segment] = records[0].appended_ms
        if self._cursor[0] not in self._sizes and self._sizes:
            # The cursor's segment is gone (fully drained): start at the next one.
            self._cursor = (min(self._sizes), 0)

    def _open_segment(self, segment: int) -> int:
        fd = os.open(self._segment_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[segment] = 0
        self._readable[segment] = 0
        return fd

    # -- writing -------------------------------------------------------------------------

    @property
    def spool_id(self) -> str:
        return self._spool_id

    @property
    def total_bytes(self) -> int:
        """Bytes of segment files on disk."""
        with self._lock:
            return sum(self._sizes.values())

    def pending_bytes(self) -> int:
        """Bytes appended but not yet drained."""
        with self._lock:
            segment, offset = self._cursor
            return sum(size for seg, size in self._sizes.items() if seg >= segment) - (
                offset if segment in self._sizes else 0
            )

    def lag_seconds(self) -> float:
        """Age of the oldest record not yet drained (0 when everything is drained)."""
        with self._lock:
            if self._pending_locked() <= 0:
                return 0.0
            segment = self._cursor[0]
            oldest = self._oldest_ms.get(segment) or min(self._oldest_ms.values(), default=0)
        return max(0.0, time.time() - oldest / 1000) if oldest else 0.0

    def _pending_locked(self) -> int:
        segment, offset = self._cursor
        return sum(size for seg, size in self._sizes.items() if seg >= segment) - (
            offset if segment in self._sizes else 0
        )

    def append(self, payload: bytes, span_count: int) -> None:
        """Store one record; return once it is durable under the fsync policy.

        Raises :class:`SpoolFullError` at the bound and :class:`SpoolError` on a disk error.
        """
        now_ms = time.time_ns() // 1_000_000
        record = frame_record(payload, span_count, now_ms)
        with self._lock:
            if self._closed:
                raise SpoolError("the spool is closed")
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
            start = self._sizes[self._active]
            self._sizes[self._active] = start + len(record)
            if start == 0:
                self._oldest_ms[self._active] = now_ms
            self._appended_seq += 1
            seq = self._appended_seq
            if not self._fsync:
                self._readable[self._active] = self._sizes[self._active]
                self._data_cond.notify_all()
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
                # Never leave half a record behind a later good one.
                os.ftruncate(self._fd, self._sizes[self._active])
            raise

    def _roll_locked(self) -> None:
        if self._fsync:
            self._retired_fds.append(self._fd)
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
                    ends = dict(self._sizes)
                self._sync_cond.release()
                error: OSError | None = None
                try:
                    for fd in fds:
                        os.fsync(fd)
                    _fsync_dir(self.directory)
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
                self._synced_seq = target
                with self._lock:
                    for segment, end in ends.items():
                        if segment in self._readable:
                            self._readable[segment] = max(self._readable[segment], end)
                    self._data_cond.notify_all()

    # -- draining ------------------------------------------------------------------------

    def wait_for_data(self, timeout: float) -> bool:
        """Block until undrained records exist (or ``timeout``); return whether they do."""
        with self._lock:
            return self._data_cond.wait_for(self._has_readable_locked, timeout)

    def wake(self) -> None:
        """Wake a drain blocked in :meth:`wait_for_data` (shutdown)."""
        with self._lock:
            self._data_cond.notify_all()

    def _has_readable_locked(self) -> bool:
        if self._closed or self._claim is not None:
            return True
        segment, offset = self._cursor
        return any(
            end > (offset if seg == segment else 0) for seg, end in self._readable.items() if seg >= segment
        )

    def claim_batch(self, max_spans: int, max_bytes: int) -> SpoolBatch | None:
        """The next batch to insert, its claim made durable first; ``None`` when nothing is pending.

        A claim left by a crashed run is returned again, byte for byte, with the same token.
        """
        with self._lock:
            claim = self._claim
            if claim is None:
                segment, offset = self._cursor
                while True:
                    end = self._readable.get(segment)
                    if end is None:
                        later = [seg for seg in self._readable if seg > segment]
                        if not later:
                            return None
                        segment, offset = min(later), 0
                        self._cursor = (segment, offset)
                        continue
                    if offset < end:
                        break
                    if segment >= self._active:
                        return None
                    segment, offset = segment + 1, 0
                    self._cursor = (segment, offset)
                limit_end = end
            else:
                segment, offset, limit_end = claim
        records, stop = self._read_range(
            segment, offset, limit_end, None if claim else (max_spans, max_bytes)
        )
        if claim is None:
            if stop == offset:
                return None
            # Only the drain thread claims and commits, so the file is written outside the lock.
            self._write_checkpoint_file(self._spool_id, (segment, offset), (segment, offset, stop))
            with self._lock:
                self._claim = (segment, offset, stop)
        token = f"llmledger-spool-{self._spool_id}-{segment}-{offset}-{stop}"
        return SpoolBatch(segment, offset, stop, tuple(records), token)

    def _read_range(
        self, segment: int, start: int, end: int, limits: tuple[int, int] | None
    ) -> tuple[list[SpoolRecord], int]:
        try:
            with open(self._segment_path(segment), "rb") as file:
                file.seek(start)
                data = file.read(end - start)
        except OSError as exc:
            raise SpoolError(f"cannot read spool segment {segment}: {exc}") from exc
        records, valid_end, skipped = scan_records(data, start)
        if skipped:
            _logger.error("spool segment %d: skipped %d damaged bytes", segment, skipped)
            self.skipped_bytes += skipped
        if limits is None:
            return records, end
        max_spans, max_bytes = limits
        taken: list[SpoolRecord] = []
        spans = 0
        for record in records:
            if taken and (spans + record.span_count > max_spans or record.end - start > max_bytes):
                return taken, record.offset
            taken.append(record)
            spans += record.span_count
        # A reader only sees whole records (``_readable`` moves after a full write), so bytes
        # past the last valid record inside the range are damage: step over them.
        del valid_end
        return taken, end

    def commit(self, batch: SpoolBatch) -> None:
        """Record that ``batch`` is in the store; drop segments that are fully drained."""
        cursor = (batch.segment, batch.end)
        with self._lock:
            finished = batch.segment != self._active and batch.end >= self._readable.get(batch.segment, 0)
        if finished:
            cursor = (batch.segment + 1, 0)
        self._write_checkpoint_file(self._spool_id, cursor, None)
        with self._lock:
            self._cursor = cursor
            self._claim = None
            for segment in [s for s in self._sizes if s < cursor[0]]:
                self._drop_segment_locked(segment)

    def _drop_segment_locked(self, segment: int) -> None:
        self._sizes.pop(segment, None)
        self._readable.pop(segment, None)
        self._oldest_ms.pop(segment, None)
        with contextlib.suppress(FileNotFoundError):
            self._segment_path(segment).unlink()

    def iter_pending(self) -> Iterator[SpoolRecord]:
        """Every undrained record (for tools and tests), oldest first."""
        with self._lock:
            segment, offset = self._cursor
            ranges = [
                (seg, offset if seg == segment else 0, end)
                for seg, end in sorted(self._readable.items())
                if seg >= segment
            ]
        for seg, start, end in ranges:
            yield from self._read_range(seg, start, end, None)[0]

    def close(self) -> None:
        """Flush and close the active segment; later appends fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fds = [*self._retired_fds, self._fd]
            self._retired_fds = []
            self._data_cond.notify_all()
        for fd in fds:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
