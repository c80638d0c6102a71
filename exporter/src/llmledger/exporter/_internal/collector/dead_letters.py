"""The dead-letter file: what the store refused for good, kept byte for byte for a replay after a fix.

The drain moves a piece of a batch here only when the store refused it for its content
(see :mod:`.pieces`) and it cannot be split further: one span, data point or log
record, or one request it cannot take apart. Everything else in the batch is written; the
pipeline goes on.

One append-only file, ``<data_dir>/dead-letters/dead-letters.log``, of framed records::

    magic "LLDL" | meta length u32 | payload length u32 | CRC-32 of meta + payload u32
    | header CRC-32 u32 (over the 16 bytes before it) | meta (UTF-8 JSON) | payload

An entry's meta is ``{"key", "signal", "reason", "items", "at"}`` and its payload an OTLP
export request of its ``signal`` (``traces``, ``metrics`` or ``logs``); a replay appends a
marker ``{"replayed": key, "at"}``. Keys are the piece's token, so a piece the drain
dead-letters again after a crash is not added twice, and a replay inserts it with a token
of its own that a repeated replay repeats (dropped by the store's deduplication).

The reader trusts nothing, like the spool's: a record counts only when both CRCs match and
its meta is the JSON it should be; damage is skipped by scanning for the next magic, and
a torn tail (a crash mid-append) is ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["DeadLetter", "DeadLetterFile", "frame_dead_letter", "read_dead_letters"]

MAGIC: Final = b"LLDL"
_HEADER: Final = struct.Struct("<4sIII")  # magic, meta length, payload length, crc of meta + payload
_HEADER_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _HEADER_CRC.size
_MAX_META: Final = 1 << 16
_MAX_PAYLOAD: Final = 1 << 30
FILE_NAME: Final = "dead-letters.log"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused piece: its key, what it holds, why the store refused it, and its bytes."""

    key: str
    signal: str
    reason: str
    items: int
    at_ms: int
    payload: bytes
    replayed: bool = False


def frame_dead_letter(meta: dict[str, Any], payload: bytes = b"") -> bytes:
    """The on-disk bytes of one record."""
    encoded = json.dumps(meta, separators=(",", ":"), ensure_ascii=True).encode()
    header = _HEADER.pack(MAGIC, len(encoded), len(payload), zlib.crc32(payload, zlib.crc32(encoded)))
    return header + _HEADER_CRC.pack(zlib.crc32(header)) + encoded + payload


def _records(data: bytes) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Every valid (meta, payload) record in ``data``, damage and a torn tail skipped."""
    position = 0
    size = len(data)
    while position < size:
        if size - position >= HEADER_SIZE:
            magic, meta_length, payload_length, crc = _HEADER.unpack_from(data, position)
            (header_crc,) = _HEADER_CRC.unpack_from(data, position + _HEADER.size)
            start = position + HEADER_SIZE
            end = start + meta_length + payload_length
            if (
                magic == MAGIC
                and meta_length <= _MAX_META
                and payload_length <= _MAX_PAYLOAD
                and zlib.crc32(data[position : position + _HEADER.size]) == header_crc
                and end <= size
                and zlib.crc32(data[start + meta_length : end], zlib.crc32(data[start : start + meta_length]))
                == crc
            ):
                meta = _meta(data[start : start + meta_length])
                if meta is not None:
                    yield meta, data[start + meta_length : end]
                    position = end
                    continue
        found = data.find(MAGIC, position + 1)
        if found < 0:
            return
        position = found


def _meta(raw: bytes) -> dict[str, Any] | None:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None  # pyright: ignore[reportUnknownVariableType]


def read_dead_letters(data: bytes) -> list[DeadLetter]:
    """The entries in a dead-letter file's bytes, in order, each once, marked when replayed."""
    entries: dict[str, DeadLetter] = {}
    replayed: set[str] = set()
    for meta, payload in _records(data):
        key = meta.get("key")
        if isinstance(key, str):
            if key in entries:
                continue
            signal, reason = meta.get("signal"), meta.get("reason")
            items, at_ms = meta.get("items"), meta.get("at")
            entries[key] = DeadLetter(
                key,
                signal if isinstance(signal, str) else "traces",
                reason if isinstance(reason, str) else "",
                items if isinstance(items, int) else 0,
                at_ms if isinstance(at_ms, int) else 0,
                payload,
            )
        elif isinstance(meta.get("replayed"), str):
            replayed.add(meta["replayed"])
    return [
        DeadLetter(e.key, e.signal, e.reason, e.items, e.at_ms, e.payload, True) if e.key in replayed else e
        for e in entries.values()
    ]


class DeadLetterFile:
    """Appends to (and reads) ``<directory>/dead-letters.log``; safe across processes (``flock``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self._lock = threading.Lock()
        self._keys: set[str] | None = None

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def entries(self) -> list[DeadLetter]:
        """Every entry, replayed ones marked."""
        return read_dead_letters(self._read())

    def _append(self, record: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # never half a record in front of a later good one
                raise
        finally:
            os.close(fd)

    def has(self, key: str) -> bool:
        """Whether an entry with ``key`` is in the file."""
        with self._lock:
            if self._keys is None:
                self._keys = {entry.key for entry in self.entries()}
            return key in self._keys

    def add(self, key: str, reason: str, items: int, payload: bytes, signal: str = "traces") -> bool:
        """Keep a refused piece (durably); ``False`` when an entry with ``key`` is already there."""
        with self._lock:
            if self._keys is None:
                self._keys = {entry.key for entry in self.entries()}
            if key in self._keys:
                return False
            meta = {
                "key": key,
                "signal": signal,
                "reason": reason,
                "items": items,
                "at": int(time.time() * 1000),
            }
            self._append(frame_dead_letter(meta, payload))
            self._keys.add(key)
            return True

    def mark_replayed(self, key: str) -> None:
        """Record that the entry ``key`` is in the store now."""
        with self._lock:
            self._append(frame_dead_letter({"replayed": key, "at": int(time.time() * 1000)}))
