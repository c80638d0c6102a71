"""Recognising a request the collector has already stored, so a sender's repeat lands once.

An OTLP exporter that did not get the answer to a request (a lost connection, a timeout, a
collector stopped between storing a request and answering it, its own process killed
between our answer and its bookkeeping) sends the same bytes again: the standard
exporters' retries do, and llmledger's buffered exporter does after a restart. Each repeat
would otherwise be a new spool record, and a new insert with a different deduplication
token. So the receivers remember a digest of each request stored recently (the first 16
bytes of the spooled payload's SHA-256, which the CPU's SHA instructions compute at about
twice BLAKE2b's speed here, ~0.4 µs per span; random trace and span ids and nanosecond
timestamps make two different requests with equal bytes practically impossible) and
acknowledge a repeat without storing it again.

The digests of the last ``capacity`` stored requests (65,536 by default) are kept in memory
and appended to a file in the data directory (16 bytes per request, no fsync: it survives a
crash of the process, like the spool with ``fsync = never``), which the next start reads
back, so a repeat is recognised across a restart of the collector too. A digest is written
after its request is in the spool: a crash between the two can only make a repeat be
stored twice, never make a new request be taken for a repeat.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Final

__all__ = ["RecentRequests"]

_logger = logging.getLogger("llmledger.collector.ingest")

DEFAULT_CAPACITY: Final = 65536
DIGEST_SIZE: Final = 16


class RecentRequests:
    """A bounded set of digests of stored requests, oldest forgotten first (thread-safe)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, path: Path | None = None) -> None:
        self._capacity = capacity
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._path = path
        self._fd = -1
        self._logged = 0
        if path is not None:
            self._load(path)

    @staticmethod
    def digest(payload: bytes) -> bytes:
        return hashlib.sha256(payload).digest()[:DIGEST_SIZE]

    def __contains__(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self._digests

    def __len__(self) -> int:
        with self._lock:
            return len(self._digests)

    def add(self, digest: bytes) -> None:
        with self._lock:
            self._digests[digest] = None
            if len(self._digests) > self._capacity:
                self._digests.popitem(last=False)
            if self._fd < 0:
                return
            try:
                os.write(self._fd, digest)
                self._logged += 1
                if self._logged >= 2 * self._capacity:
                    self._rewrite()
            except OSError as exc:
                # Remembering is best effort: without the file, repeats are still recognised
                # until the next restart.
                _logger.warning(
                    "cannot record a request digest in %s (%s); continuing in memory", self._path, exc
                )
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            _logger.warning("cannot read request digests from %s (%s); starting without them", path, exc)
            data = b""
        # A torn last digest (a crash mid-write) is dropped with the rest of that partial entry.
        whole = len(data) - len(data) % DIGEST_SIZE
        start = max(0, whole - self._capacity * DIGEST_SIZE)
        for offset in range(start, whole, DIGEST_SIZE):
            self._digests[data[offset : offset + DIGEST_SIZE]] = None
        try:
            self._rewrite()
        except OSError as exc:
            _logger.warning("cannot write request digests to %s (%s); keeping them in memory only", path, exc)

    def _rewrite(self) -> None:
        """Replace the file by the digests held now (atomically), and append to it from there."""
        assert self._path is not None
        self._close()
        temporary = self._path.with_name(self._path.name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(b"".join(self._digests))
        os.replace(temporary, self._path)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._logged = len(self._digests)
