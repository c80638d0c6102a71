"""Recognising a request the collector has already stored, so a sender's repeat lands once.

An OTLP exporter that did not get the answer to a request (a lost connection, a timeout,
its own process killed between our answer and its bookkeeping) sends the same bytes again:
the standard exporters' retries do, and llmledger's buffered exporter does after a crash.
Each repeat would otherwise be a new spool record, and a new insert with a different
deduplication token. So the receivers remember a digest of each request stored recently
(BLAKE2b-128 of the spooled payload: random trace and span ids and nanosecond timestamps
make two different requests with equal bytes practically impossible) and acknowledge a
repeat without storing it again.

Kept in memory, bounded by count: a repeat is recognised when it comes back to the same
collector process within the last ``capacity`` requests (65,536 by default, ~10 MB). A
request stored just before this collector restarted and repeated after is not recognised.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Final

__all__ = ["RecentRequests"]

DEFAULT_CAPACITY: Final = 65536


class RecentRequests:
    """A bounded set of digests of stored requests, oldest forgotten first (thread-safe)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def digest(payload: bytes) -> bytes:
        return hashlib.blake2b(payload, digest_size=16).digest()

    def __contains__(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self._digests

    def add(self, digest: bytes) -> None:
        with self._lock:
            self._digests[digest] = None
            if len(self._digests) > self._capacity:
                self._digests.popitem(last=False)
