"""The app-side buffer: OTLP requests the collector has not acknowledged yet, on local disk.

One file per process, under a directory shared by the processes of one app. A file is a
sequence of framed records:

    magic "LLB1" | kind u8 | payload length u32 | span count u32 | written at f64 |
    CRC-32 of the payload u32 | CRC-32 of the header before it u32 | payload

A ``DATA`` record holds one serialized ``ExportTraceServiceRequest``; an ``ACK`` record
holds the offset of a ``DATA`` record that was delivered (or given up on) and so is done.
Every record is one ``write`` to a file opened for appending, so a crash (even SIGKILL)
leaves whole records and at most one torn record at the end; the page cache keeps what was
written when the process dies (not across a power loss: nothing here calls ``fsync``, which
would cost more than the export it protects).

The owner holds an exclusive ``flock`` on its file for its whole life; the kernel releases
it when the process dies however it dies. A process that starts takes over every file in
the directory it can lock (``adopt_orphans``): those belong to processes that are gone. A
new file is created under a hidden name, locked, then renamed, so no other process can lock
it first.

Readers trust nothing (:func:`scan_records`): a record counts only when both checksums
match; a torn tail is ignored, and damage elsewhere is stepped over by searching for the
next valid header.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "ACK",
    "DATA",
    "HEADER_SIZE",
    "Adopted",
    "BufferFile",
    "PendingRecord",
    "Record",
    "ScanResult",
    "adopt_orphans",
    "encode_record",
    "pending_records",
    "scan_records",
]

MAGIC: Final = b"LLB1"
DATA: Final = 1
ACK: Final = 2
_HEADER: Final = struct.Struct("<4sBIIdI")  # magic, kind, length, spans, written_at, payload crc
_HEADER_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _HEADER_CRC.size
_ACK_PAYLOAD: Final = struct.Struct("<Q")
# Larger than any OTLP request an exporter sends (the SDK's own limit is 64 MiB); a header
# claiming more is damage, not data.
MAX_PAYLOAD: Final = 256 * 1024 * 1024
SUFFIX: Final = ".otlpbuf"


def encode_record(kind: int, payload: bytes, spans: int, written_at: float) -> bytes:
    head = _HEADER.pack(MAGIC, kind, len(payload), spans, written_at, zlib.crc32(payload))
    return head + _HEADER_CRC.pack(zlib.crc32(head)) + payload


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    kind: int
    spans: int
    written_at: float
    payload_offset: int
    length: int


@dataclass(slots=True)
class ScanResult:
    records: list[Record] = field(default_factory=list[Record])
    end: int = 0
    """Where the last whole record ends (a torn tail, if any, starts here)."""
    damaged_bytes: int = 0
    """Bytes before ``end`` that belong to no valid record."""


def _record_at(view: memoryview, pos: int) -> Record | None:
    """The record at ``pos`` if it is whole and both checksums match, else ``None``."""
    size = len(view)
    if size - pos < HEADER_SIZE:
        return None
    head = bytes(view[pos : pos + _HEADER.size])
    magic, kind, length, spans, written_at, payload_crc = _HEADER.unpack(head)
    if magic != MAGIC or kind not in (DATA, ACK) or length > MAX_PAYLOAD:
        return None
    if kind == ACK and length != _ACK_PAYLOAD.size:
        return None
    (header_crc,) = _HEADER_CRC.unpack_from(view, pos + _HEADER.size)
    start = pos + HEADER_SIZE
    # A payload running past the end is the record being written at a crash.
    if zlib.crc32(head) != header_crc or start + length > size:
        return None
    if zlib.crc32(view[start : start + length]) != payload_crc:
        return None
    return Record(pos, kind, spans, written_at, start, length)


def scan_records(data: bytes | memoryview) -> tuple[ScanResult, dict[int, int]]:
    """Every valid record in ``data`` and, for each ``ACK``, the offset of the record it closes.

    Returns the scan and ``{ack offset: acknowledged DATA offset}``.
    """
    result = ScanResult()
    acks: dict[int, int] = {}
    raw = bytes(data)
    view = memoryview(raw)
    pos = 0
    skipped = 0  # damage since the last whole record: part of the body only if one follows
    while pos < len(raw):
        record = _record_at(view, pos)
        if record is None:
            nxt = raw.find(MAGIC, pos + 1)
            if nxt < 0:
                # Nothing valid follows: the rest is a torn tail (or garbage to the end).
                break
            skipped += nxt - pos
            pos = nxt
            continue
        if record.kind == ACK:
            (acks[pos],) = _ACK_PAYLOAD.unpack_from(view, record.payload_offset)
        result.records.append(record)
        pos = record.payload_offset + record.length
        result.end = pos
        result.damaged_bytes += skipped
        skipped = 0
    return result, acks


def pending_records(scan: ScanResult, acks: dict[int, int]) -> list[Record]:
    """``DATA`` records no ``ACK`` closes, oldest first."""
    done = set(acks.values())
    return [r for r in scan.records if r.kind == DATA and r.offset not in done]


@dataclass(slots=True)
class PendingRecord:
    """A ``DATA`` record waiting for delivery, and the file that holds it."""

    file: BufferFile
    offset: int
    payload_offset: int
    length: int
    spans: int
    written_at: float

    def read(self) -> bytes:
        return self.file.read(self.payload_offset, self.length)


class BufferFile:
    """One locked buffer file: append ``DATA``, close records with ``ACK``, read payloads back.

    Not thread-safe: the exporter serialises calls with its own lock.
    """

    def __init__(self, path: Path, fd: int, size: int, *, adopted: bool) -> None:
        self.path = path
        self._fd = fd
        self.size = size
        self.adopted = adopted
        self.open_records = 0

    @classmethod
    def create(cls, directory: Path) -> BufferFile:
        """A new file of this process's own, locked before any other process can see it."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{time.time_ns()}-{secrets.token_hex(4)}"
        hidden = directory / f".{name}.tmp"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = directory / f"{name}{SUFFIX}"
            os.rename(hidden, path)
        except BaseException:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        return cls(path, fd, 0, adopted=False)

    def append(self, kind: int, payload: bytes, spans: int, written_at: float) -> int:
        """Append one record; return its offset. A failed or short write is cut back off."""
        record = encode_record(kind, payload, spans, written_at)
        offset = self.size
        try:
            written = os.write(self._fd, record)
            while written < len(record):
                written += os.write(self._fd, record[written:])
        except OSError:
            # Nothing may follow half a record: cut the file back to where it was.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, offset)
            raise
        self.size = offset + len(record)
        return offset

    def ack(self, offset: int) -> None:
        self.append(ACK, _ACK_PAYLOAD.pack(offset), 0, time.time())
        self.open_records -= 1

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise OSError(f"{self.path}: short read at {offset}")
        return data

    def reset(self) -> None:
        """Empty the file: only once every record in it is closed."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self, *, delete: bool) -> None:
        """Release the lock; ``delete`` removes the file first (while still holding the lock)."""
        if self._fd < 0:
            return
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0


@dataclass(slots=True)
class Adopted:
    file: BufferFile
    pending: list[PendingRecord]
    damaged_bytes: int


def adopt_orphans(directory: Path, *, max_file_bytes: int) -> Iterator[Adopted]:
    """Lock and read every buffer file in ``directory`` whose owner is gone.

    A file another live process holds is skipped. A file that was deleted by its adopter
    between our ``open`` and our lock (so the path no longer names what we locked) is
    skipped too. Files larger than ``max_file_bytes`` are read up to it (the bound the
    writer kept; anything beyond is not ours to trust).
    """
    try:
        candidates = sorted(directory.glob(f"*{SUFFIX}"))
    except OSError:
        return
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(size, max_file_bytes), 0)
        except OSError:
            os.close(fd)
            continue
        scan, acks = scan_records(data)
        if scan.end < size:
            # A torn record at the end (the owner died mid-write): cut it so ACKs we append
            # follow whole records.
            try:
                os.ftruncate(fd, scan.end)
            except OSError:
                os.close(fd)
                continue
        file = BufferFile(path, fd, scan.end, adopted=True)
        pending = [
            PendingRecord(file, r.offset, r.payload_offset, r.length, r.spans, r.written_at)
            for r in pending_records(scan, acks)
        ]
        file.open_records = len(pending)
        yield Adopted(file, pending, scan.damaged_bytes)
