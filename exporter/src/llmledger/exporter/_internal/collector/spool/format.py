"""The spool's on-disk layout: the files of a spool directory and the bytes in each.

Both sides read and write these; nothing here keeps state. Layout of the directory::

    segment-00000000000000000001.log   framed records, append-only, never rewritten
    segment-00000000000000000002.log   (a new segment per restart and every segment_bytes)
    durable                            how far the writer has made segments durable
    checkpoint.json                    spool id, drain cursor, the batch being written, totals
    writer.lock, reader.lock           one writer and one reader at a time (flock)

Each record is a 28-byte header and the payload (a serialized OTLP export request)::

    magic "LLSP" | payload length u32 | span count u32 | appended at (unix ms) u64
    | payload CRC-32 u32 | header CRC-32 u32 (over the 24 bytes before it)

Readers trust nothing: a record counts only when both CRCs match (:func:`scan_records`).
``durable`` holds (segment u64, end u64, CRC-32 of the two) little-endian: every segment
before the named one is complete, the named one is durable up to the offset.

Spools written by earlier versions are read as they are: these bytes do not change.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CHECKPOINT",
    "DURABLE",
    "DURABLE_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "Checkpoint",
    "Claim",
    "SpoolError",
    "SpoolRecord",
    "frame_record",
    "fsync_dir",
    "list_segments",
    "lock_spool",
    "pack_durable",
    "parse_header",
    "read_checkpoint",
    "scan_records",
    "segment_path",
    "unpack_durable",
    "write_checkpoint",
]

MAGIC: Final = b"LLSP"
_HEADER: Final = struct.Struct("<4sIIQI")  # magic, payload length, span count, unix ms, payload crc
_HEADER_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _HEADER_CRC.size
_MAX_PAYLOAD: Final = 1 << 30
_SEGMENT_NAME: Final = re.compile(r"^segment-(\d{20})\.log$")
CHECKPOINT: Final = "checkpoint.json"
DURABLE: Final = "durable"
_POSITION: Final = struct.Struct("<QQ")  # segment, end
_DURABLE_MARKER: Final = struct.Struct("<QQI")  # segment, end, crc32 of the two
DURABLE_SIZE: Final = _DURABLE_MARKER.size


class SpoolError(OSError):
    """The spool could not store or read a record (a disk error, reported, never swallowed)."""


# -- records -------------------------------------------------------------------------------


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


def frame_record(payload: bytes, span_count: int, appended_ms: int) -> bytes:
    """The on-disk bytes of one record."""
    header = _HEADER.pack(MAGIC, len(payload), span_count, appended_ms, zlib.crc32(payload))
    return header + _HEADER_CRC.pack(zlib.crc32(header)) + payload


def parse_header(data: bytes | memoryview, offset: int) -> tuple[int, int, int, int] | None:
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
        header = parse_header(view, position)
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


# -- segments and the durable marker -------------------------------------------------------


def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"segment-{segment:020d}.log"


def list_segments(directory: Path) -> list[int]:
    """The numbers of the segment files in ``directory``, in order."""
    found: list[int] = []
    for entry in os.listdir(directory):
        match = _SEGMENT_NAME.match(entry)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def pack_durable(segment: int, end: int) -> bytes:
    """The bytes of the ``durable`` file for position (``segment``, ``end``)."""
    return _DURABLE_MARKER.pack(segment, end, zlib.crc32(_POSITION.pack(segment, end)))


def unpack_durable(data: bytes) -> tuple[int, int] | None:
    """(segment, end) from the ``durable`` file's bytes; ``None`` while they are incomplete or torn."""
    if len(data) != _DURABLE_MARKER.size:
        return None
    segment, end, crc = _DURABLE_MARKER.unpack(data)
    if zlib.crc32(data[: _POSITION.size]) != crc:
        return None
    return segment, end


# -- the checkpoint ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
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
    def from_json(cls, value: list[object]) -> Claim:
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
class Checkpoint:
    """What ``checkpoint.json`` holds: the spool's id, the drain's cursor and its pending claim."""

    spool_id: str
    cursor: tuple[int, int]
    claim: Claim | None
    # What the committed batches came to since the spool began ("written_spans",
    # "dead_letter_spans"), written with the cursor: exact across crashes and restarts.
    totals: tuple[tuple[str, int], ...] = ()


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """The directory's checkpoint, ``None`` when there is none yet; :class:`SpoolError` when unreadable."""
    path = directory / CHECKPOINT
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        claim = state.get("claim")
        totals: dict[str, Any] = state.get("totals") or {}
        return Checkpoint(
            str(state["spool_id"]),
            (int(state["segment"]), int(state["offset"])),
            Claim.from_json(claim) if claim else None,
            tuple(sorted((str(name), int(value)) for name, value in totals.items())),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SpoolError(f"cannot read the spool checkpoint {path}: {exc}") from exc


def write_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably (file and directory entry fsynced)."""
    path = directory / CHECKPOINT
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
        fsync_dir(directory)
    except OSError as exc:
        raise SpoolError(f"cannot write the spool checkpoint {path}: {exc}") from exc


# -- the directory -------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_spool(directory: Path, name: str, *, wait: float) -> int:
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
