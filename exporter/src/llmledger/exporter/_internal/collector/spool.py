"""The collector's write-ahead log: append-only segment files of framed OTLP requests.

A request is acknowledged only after :meth:`DurableSpool.append` returns, and that
returns only once the record is on disk (``fsync="always"``: group commit, one
``fsync`` covers every append that arrived while the previous one ran) or in the
kernel's page cache (``fsync="never"``: survives a process crash such as SIGKILL, not a
power loss).

Two sides, which may live in different processes: :class:`DurableSpool` appends (the
receiving process) and :class:`SpoolReader` claims and commits batches (the drain
process). Layout of the spool directory::

    segment-00000000000000000001.log   framed records, append-only, never rewritten
    segment-00000000000000000002.log   (a new segment per restart and every segment_bytes)
    durable                            how far the writer has made segments durable
    checkpoint.json                    spool id, drain cursor, the batch being written
    writer.lock, reader.lock           one writer and one reader at a time (flock)

The writer publishes its durable position in ``durable`` after each group commit: every
segment before the named one is complete, the named one is durable up to the offset. The
reader never reads past it, so it never inserts a span that was not safe on disk.

Each record is a 28-byte header and the payload (serialized ``ExportTraceServiceRequest``)::

    magic "LLSP" | payload length u32 | span count u32 | appended at (unix ms) u64
    | payload CRC-32 u32 | header CRC-32 u32 (over the 24 bytes before it)

Readers trust nothing: a record counts only when both CRCs match. A torn write at the
end of a segment (a crash mid-append) is cut off when the writer opens the spool; damage
elsewhere is skipped by scanning for the next valid header, and the skipped bytes are
counted and logged, never silently passed on.

Exactly once: the drain *claims* a batch (a byte range from a position in one segment to
a position in the same or a later one, whole segments in between), the claim is written
to the checkpoint before the batch is inserted, and the batch's deduplication token is
derived from the spool id and that range. After a crash the same range is replayed with
the same token, so ClickHouse drops what it already has. A batch is not cut short where
a segment ends, so every insert can be as large as the drain's limits allow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import mmap
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "HEADER_SIZE",
    "DurableSpool",
    "SpoolBatch",
    "SpoolError",
    "SpoolFullError",
    "SpoolReader",
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
_DURABLE: Final = "durable"
_MARKER: Final = struct.Struct("<QQI")  # segment, end, crc32 of the two

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
    # A view into the bytes read from the segment (no copy per record).
    payload: bytes | memoryview
    segment: int = 0


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """A claimed byte range, from ``start`` in ``segment`` to ``end`` in ``end_segment``, and its records."""

    segment: int
    start: int
    end: int
    records: tuple[SpoolRecord, ...]
    dedup_token: str
    end_segment: int | None = None  # None: the range ends in ``segment``

    @property
    def last_segment(self) -> int:
        return self.segment if self.end_segment is None else self.end_segment

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


def scan_records(
    data: bytes | mmap.mmap, base: int = 0, segment: int = 0, begin: int = 0
) -> tuple[list[SpoolRecord], int, int]:
    """Every valid record in ``data[begin:]`` (which starts at file offset ``base`` of ``segment``).

    Returns the records, the file offset just after the last valid record, and the number
    of bytes skipped as damaged before it. Bytes after the last valid record (a torn or
    incomplete tail) are neither returned nor counted as skipped.
    """
    records: list[SpoolRecord] = []
    view = memoryview(data)
    base -= begin  # file offset = base + index into data
    position = begin
    valid_end = begin
    skipped = 0
    size = len(data)
    while position < size:
        header = _parse_header(view, position)
        if header is not None:
            length, spans, millis, payload_crc = header
            start = position + HEADER_SIZE
            if start + length <= size:
                payload = view[start : start + length]
                if zlib.crc32(payload) == payload_crc:
                    skipped += position - valid_end
                    position = start + length
                    valid_end = position
                    records.append(
                        SpoolRecord(
                            base + start - HEADER_SIZE, base + position, spans, millis, payload, segment
                        )
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


def _segment_path(directory: Path, segment: int) -> Path:
    return directory / f"segment-{segment:020d}.log"


def _list_segments(directory: Path) -> list[int]:
    found: list[int] = []
    for entry in os.listdir(directory):
        match = _SEGMENT_NAME.match(entry)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class _Claim:
    """From ``start`` in ``segment`` to ``end`` in ``end_segment`` (whole segments in between)."""

    segment: int
    start: int
    end_segment: int
    end: int

    def to_json(self) -> list[int]:
        # One segment: the three-number form earlier versions wrote (and read back).
        if self.end_segment == self.segment:
            return [self.segment, self.start, self.end]
        return [self.segment, self.start, self.end_segment, self.end]

    @classmethod
    def from_json(cls, value: list[object]) -> _Claim:
        numbers = [int(str(item)) for item in value]
        if len(numbers) == 3:
            return cls(numbers[0], numbers[1], numbers[0], numbers[2])
        if len(numbers) == 4 and numbers[2] > numbers[0]:
            return cls(*numbers)
        raise ValueError(f"a claim is 3 or 4 numbers, not {value!r}")

    def token(self, spool_id: str) -> str:
        # Derived from the range alone: a replay of the claim carries the same token.
        return "-".join(map(str, ["llmledger-spool", spool_id, *self.to_json()]))


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    spool_id: str
    cursor: tuple[int, int]
    claim: _Claim | None
    # What the committed batches came to since the spool began ("written_spans",
    # "dead_letter_spans"), written with the cursor: exact across crashes and restarts.
    totals: tuple[tuple[str, int], ...] = ()


def _read_checkpoint(directory: Path) -> _Checkpoint | None:
    path = directory / _CHECKPOINT
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        claim = state.get("claim")
        totals: dict[str, Any] = state.get("totals") or {}
        return _Checkpoint(
            str(state["spool_id"]),
            (int(state["segment"]), int(state["offset"])),
            _Claim.from_json(claim) if claim else None,
            tuple(sorted((str(name), int(value)) for name, value in totals.items())),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SpoolError(f"cannot read the spool checkpoint {path}: {exc}") from exc


def _write_checkpoint(directory: Path, checkpoint: _Checkpoint) -> None:
    path = directory / _CHECKPOINT
    tmp = path.with_suffix(".tmp")
    text = json.dumps(
        {
            "spool_id": checkpoint.spool_id,
            "segment": checkpoint.cursor[0],
            "offset": checkpoint.cursor[1],
            "claim": checkpoint.claim.to_json() if checkpoint.claim else None,
            "totals": dict(checkpoint.totals),
        }
    )
    try:
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        raise SpoolError(f"cannot write the spool checkpoint {path}: {exc}") from exc


def _lock(directory: Path, name: str, *, wait: float) -> int:
    """An exclusive ``flock`` on ``directory/name`` held for the life of the process (or until closed)."""
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                os.close(fd)
                raise SpoolError(
                    f"the spool in {directory} is in use by another collector process ({name} is locked)"
                ) from exc
            time.sleep(0.05)


class DurableSpool:
    """The appending side: bounded, crash-safe storage of accepted OTLP requests (see the module doc)."""

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
        self._syncing = False
        self._appended_seq = 0
        self._synced_seq = 0
        self._retired_fds: list[int] = []
        self._closed = False
        self._refreshed = 0.0
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(directory, "writer.lock", wait=0)
        checkpoint = _read_checkpoint(directory)
        if checkpoint is None:
            checkpoint = _Checkpoint(uuid.uuid4().hex, (0, 0), None)
            _write_checkpoint(directory, checkpoint)
        self.spool_id = checkpoint.spool_id
        self._sizes: dict[int, int] = {}  # segment -> bytes written
        self._recover(checkpoint)
        self._active = max([*self._sizes, checkpoint.cursor[0]]) + 1
        self._fd = self._open_segment(self._active)
        self._marker_fd = os.open(directory / _DURABLE, os.O_RDWR | os.O_CREAT, 0o600)
        self._publish(self._active, 0)
        _fsync_dir(directory)

    def _recover(self, checkpoint: _Checkpoint) -> None:
        """Index the segments left by earlier runs; cut a torn tail; drop fully drained segments."""
        keep = checkpoint.claim.segment if checkpoint.claim else checkpoint.cursor[0]
        for segment in _list_segments(self.directory):
            path = _segment_path(self.directory, segment)
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
        fd = os.open(_segment_path(self.directory, segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[segment] = 0
        return fd

    def _publish(self, segment: int, end: int) -> None:
        head = struct.pack("<QQ", segment, end)
        os.pwrite(self._marker_fd, _MARKER.pack(segment, end, zlib.crc32(head)), 0)

    # -- size accounting -------------------------------------------------------------------

    def _refresh_locked(self) -> None:
        """Forget segments the reader has deleted (it deletes what is fully drained)."""
        self._refreshed = time.monotonic()
        for segment in list(self._sizes):
            if segment != self._active and not _segment_path(self.directory, segment).exists():
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
                        _fsync_dir(self.directory)
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


class SpoolReader:
    """The draining side: claims batches up to the writer's durable position, commits them, deletes drained segments.

    ``wait`` is how long to wait for a previous reader (a process being replaced) to let go.
    """

    def __init__(self, directory: Path, *, wait: float = 30.0) -> None:
        self.directory = directory
        self._lock_fd = _lock(directory, "reader.lock", wait=wait)
        checkpoint = _read_checkpoint(directory)
        if checkpoint is None:
            raise SpoolError(f"no spool checkpoint in {directory}: the writer creates it first")
        self._checkpoint = checkpoint
        self._marker_fd = os.open(directory / _DURABLE, os.O_RDONLY)
        self.totals_at_open = self.totals
        self.skipped_bytes = 0
        self.lag_seconds = 0.0

    @property
    def spool_id(self) -> str:
        return self._checkpoint.spool_id

    @property
    def totals(self) -> dict[str, int]:
        """What committed batches came to since the spool began (see :meth:`commit`)."""
        return dict(self._checkpoint.totals)

    def _durable(self) -> tuple[int, int]:
        """The writer's published durable position (segment, end)."""
        for _ in range(100):
            data = os.pread(self._marker_fd, _MARKER.size, 0)
            if len(data) == _MARKER.size:
                segment, end, crc = _MARKER.unpack(data)
                if zlib.crc32(data[:16]) == crc:
                    return segment, end
            time.sleep(0.001)  # a write in progress (or none yet)
        return 0, 0

    def _size(self, segment: int) -> int | None:
        try:
            return _segment_path(self.directory, segment).stat().st_size
        except FileNotFoundError:
            return None

    def _next_range(self) -> tuple[int, int, int] | None:
        """(segment, start, end) of durable, undrained bytes from the cursor, else ``None``."""
        durable_segment, durable_end = self._durable()
        segment, offset = self._checkpoint.cursor
        while segment <= durable_segment:
            end = durable_end if segment == durable_segment else self._size(segment)
            if end is not None and offset < end:
                return segment, offset, end
            if segment == durable_segment:
                return None
            segment, offset = segment + 1, 0
        return None

    def has_data(self) -> bool:
        return self._checkpoint.claim is not None or self._next_range() is not None

    def wait_for_data(self, timeout: float, poll: float = 0.01) -> bool:
        """Poll (every ``poll`` s) until undrained durable records exist or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not self.has_data():
            if time.monotonic() >= deadline:
                self.lag_seconds = 0.0
                return False
            time.sleep(poll)
        return True

    def pending_bytes(self) -> int:
        """Durable bytes not yet drained."""
        durable_segment, durable_end = self._durable()
        segment, offset = self._checkpoint.cursor
        pending = 0
        for seg in range(segment, durable_segment + 1):
            end = durable_end if seg == durable_segment else (self._size(seg) or 0)
            pending += max(0, end - (offset if seg == segment else 0))
        return pending

    def wait_to_gather(
        self, min_bytes: int, linger: float, stop: threading.Event, poll: float = 0.02
    ) -> None:
        """Wait, up to ``linger`` seconds past the arrival of the oldest waiting record, for ``min_bytes`` to wait.

        Returns at once when a claim is pending, ``min_bytes`` are already waiting, the
        oldest record is already that old (or unreadable), or ``stop`` is set.
        """
        if self._checkpoint.claim is not None:
            return
        oldest = self._oldest_appended_ms()
        if oldest is None:
            return
        deadline = time.monotonic() + linger - max(0.0, time.time() - oldest / 1000)
        while not stop.is_set() and time.monotonic() < deadline and self.pending_bytes() < min_bytes:
            stop.wait(min(poll, max(0.0, deadline - time.monotonic())))

    def _oldest_appended_ms(self) -> int | None:
        """When the next record to drain was appended (from its header), if there is one."""
        found = self._next_range()
        if found is None:
            return None
        segment, offset, end = found
        if end - offset < HEADER_SIZE:
            return None
        try:
            with open(_segment_path(self.directory, segment), "rb", buffering=0) as file:
                header = os.pread(file.fileno(), HEADER_SIZE, offset)
        except OSError:
            return None
        parsed = _parse_header(header, 0)
        return None if parsed is None else parsed[2]

    def claim_batch(self, max_spans: int, max_bytes: int) -> SpoolBatch | None:
        """The next batch to insert, its claim made durable first; ``None`` when nothing is pending.

        A batch takes whole records from the cursor on, across segment ends, until the next
        record would pass ``max_spans`` or ``max_bytes`` (its first record is taken
        whatever its size) or the durable position is reached. A claim left by a crashed
        run is returned again, byte for byte, with the same token.
        """
        claim = self._checkpoint.claim
        if claim is not None:
            records = self._read_claim(claim)
        else:
            found = self._next_range()
            if found is None:
                return None
            claim, records = self._take(found[0], found[1], max_spans, max_bytes)
            self._checkpoint = _Checkpoint(
                self.spool_id, (claim.segment, claim.start), claim, self._checkpoint.totals
            )
            _write_checkpoint(self.directory, self._checkpoint)
        if records:
            self.lag_seconds = max(0.0, time.time() - records[0].appended_ms / 1000)
        return SpoolBatch(
            claim.segment,
            claim.start,
            claim.end,
            tuple(records),
            claim.token(self.spool_id),
            None if claim.end_segment == claim.segment else claim.end_segment,
        )

    def _segment_end(self, segment: int, durable: tuple[int, int]) -> int | None:
        """How far ``segment`` may be read: the durable offset in the writer's segment, else its size."""
        return durable[1] if segment == durable[0] else self._size(segment)

    def _take(
        self, segment: int, offset: int, max_spans: int, max_bytes: int
    ) -> tuple[_Claim, list[SpoolRecord]]:
        """Whole records from ``offset`` in ``segment`` on, within the limits, and the range they span.

        Only whole records lie below the durable position, so bytes that are not part of a
        valid record inside the range are damage: stepped over and counted.
        """
        durable = self._durable()
        first = (segment, offset)
        taken: list[SpoolRecord] = []
        spans = consumed = damaged = 0
        try:
            while True:
                end = self._segment_end(segment, durable)
                if end is not None and offset < end:
                    # Read only what the byte budget can take (at least one record for an empty
                    # batch); a record cut off by the window is left for the next batch.
                    budget = max(max_bytes - consumed, 0)
                    limit = min(end, offset + budget)
                    records = self._read(segment, offset, limit)
                    if not records and not taken and limit < end:
                        limit = end  # a record larger than the budget, or damage longer than it
                        records = self._read(segment, offset, limit)
                    for record in records:
                        if taken and (
                            spans + record.span_count > max_spans
                            or consumed + record.end - offset > max_bytes
                        ):
                            return _Claim(*first, segment, offset), taken
                        damaged += record.offset - offset
                        consumed += record.end - offset
                        offset = record.end
                        taken.append(record)
                        spans += record.span_count
                    if limit < end:
                        return _Claim(*first, segment, offset), taken
                    damaged += end - offset  # past the last valid record, below the durable position
                    consumed += end - offset
                    offset = end
                full = bool(taken) and (spans >= max_spans or consumed >= max_bytes)
                if segment >= durable[0] or full:
                    return _Claim(*first, segment, offset), taken
                segment, offset = segment + 1, 0
        finally:
            self._count_damage(first[0], damaged)

    def _read(self, segment: int, start: int, end: int) -> list[SpoolRecord]:
        """The valid records wholly inside ``[start, end)`` of ``segment``.

        The range is mapped, not read: checksums are computed on the page cache and the
        payloads are views of the mapping (no copy; ~0.45 us a span less than a read). Only
        bytes below the durable position are mapped, which nothing truncates while the
        spool is in use; the file's size is checked first all the same.
        """
        try:
            with open(_segment_path(self.directory, segment), "rb", buffering=0) as file:
                end = min(end, os.fstat(file.fileno()).st_size)
                if end <= start:
                    return []
                aligned = start - start % mmap.ALLOCATIONGRANULARITY
                mapped = mmap.mmap(file.fileno(), end - aligned, offset=aligned, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot read spool segment {segment}: {exc}") from exc
        return scan_records(mapped, start, segment, start - aligned)[0]

    def _read_claim(self, claim: _Claim) -> list[SpoolRecord]:
        """Every valid record of a claimed range, as when it was claimed."""
        durable = self._durable()
        records: list[SpoolRecord] = []
        damaged = 0
        for segment in range(claim.segment, claim.end_segment + 1):
            start = claim.start if segment == claim.segment else 0
            end = claim.end if segment == claim.end_segment else (self._segment_end(segment, durable) or 0)
            if start < end:
                found = self._read(segment, start, end)
                damaged += end - start - sum(record.end - record.offset for record in found)
                records += found
        self._count_damage(claim.segment, damaged)
        return records

    def _count_damage(self, segment: int, damaged: int) -> None:
        if damaged:
            _logger.error("spool segment %d: skipped %d damaged bytes", segment, damaged)
            self.skipped_bytes += damaged

    def commit(self, batch: SpoolBatch, counts: Mapping[str, int] | None = None) -> None:
        """Record that ``batch`` is in the store; delete segments that are fully drained.

        ``counts`` (spans written, spans dead-lettered …) are added to :attr:`totals` in the
        same checkpoint write, so they count each batch exactly once whatever crashes.
        """
        last = batch.last_segment
        cursor = (last, batch.end)
        durable_segment, _ = self._durable()
        size = self._size(last)
        if last < durable_segment and (size is None or batch.end >= size):
            cursor = (last + 1, 0)  # sealed and finished
        totals = self.totals
        for name, value in (counts or {}).items():
            totals[name] = totals.get(name, 0) + value
        self._checkpoint = _Checkpoint(self.spool_id, cursor, None, tuple(sorted(totals.items())))
        _write_checkpoint(self.directory, self._checkpoint)
        for segment in _list_segments(self.directory):
            if segment < cursor[0]:
                with contextlib.suppress(FileNotFoundError):
                    _segment_path(self.directory, segment).unlink()

    def close(self) -> None:
        """Release the reader lock."""
        os.close(self._marker_fd)
        os.close(self._lock_fd)
