"""What both receivers share: authentication, admission, and the hand-off to the spool.

A receiver decodes a request (see :mod:`.otlp`) inside :meth:`Ingest.admit` (which bounds
how many requests are decoded at once, and so the memory they take), then calls
:meth:`Ingest.store`, which returns only once the spans are durable; only then does the
receiver acknowledge. Every outcome maps to one :class:`Outcome`, which each protocol
renders as its own status (HTTP code, gRPC code).
"""

from __future__ import annotations

import enum
import hmac
import logging
import threading
import time
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from typing import Final

from .metrics import CollectorMetrics
from .otlp import DecodedRequest
from .otlp_signals import Signal
from .repeats import RecentRequests
from .spool import DurableSpool, SpoolError, SpoolFullError

__all__ = ["RETRY_AFTER_SECONDS", "Ingest", "Outcome", "RefusedError"]

_logger = logging.getLogger("llmledger.collector.ingest")

# What a refused sender is told to wait before retrying (spool full, disk error, overload).
RETRY_AFTER_SECONDS: Final = 2


class Outcome(enum.Enum):
    """Why a request was not accepted; each receiver maps these to its protocol's codes."""

    INVALID = "invalid"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA = "unsupported_media"
    UNAUTHENTICATED = "unauthenticated"
    SPOOL_FULL = "spool_full"
    UNAVAILABLE = "unavailable"


class RefusedError(Exception):
    """A request refused with ``outcome`` and a message for the sender."""

    def __init__(self, outcome: Outcome, message: str, *, counted: bool = False) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.counted = counted

    @property
    def retryable(self) -> bool:
        return self.outcome in (Outcome.SPOOL_FULL, Outcome.UNAVAILABLE)


class Ingest:
    """Admission, authentication and the durable hand-off (see the module doc)."""

    def __init__(
        self,
        spool: DurableSpool,
        metrics: CollectorMetrics,
        *,
        token: str | None,
        max_request_bytes: int,
        max_concurrent_requests: int,
        signal_spools: Mapping[Signal, DurableSpool] | None = None,
        recent: RecentRequests | None = None,
    ) -> None:
        # Traces go to ``spool``; metrics and logs each to a spool of their own.
        self._spools = {**(signal_spools or {}), Signal.TRACES: spool}
        self.metrics = metrics
        self._token = token.encode() if token else None
        self.max_request_bytes = max_request_bytes
        self._slots = threading.BoundedSemaphore(max_concurrent_requests)
        self._recent = recent if recent is not None else RecentRequests()
        self.accepting = True
        # The last spool write's error while it is the latest outcome (readiness: requests
        # would be refused), and when it happened.
        self.spool_failure: tuple[float, str] | None = None

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value carries the configured bearer token (constant time)."""
        if self._token is None:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    @contextmanager
    def admit(self, timeout: float) -> Generator[None]:
        """Hold one of the decode slots; refuse as retryable when none frees up in ``timeout``."""
        if not self.accepting:
            raise RefusedError(Outcome.UNAVAILABLE, "the collector is shutting down")
        if not self._slots.acquire(timeout=timeout):
            raise RefusedError(Outcome.UNAVAILABLE, "the collector is at its concurrent request limit")
        try:
            yield
        finally:
            self._slots.release()

    def refuse(self, error: RefusedError) -> None:
        """Count a request refused before it reached :meth:`store` (once)."""
        if not error.counted:
            error.counted = True
            self.metrics.add("requests")
            self.metrics.add("rejected_requests")

    def accepts(self, signal: Signal) -> bool:
        """Whether this collector spools ``signal`` (traces always; metrics and logs when configured)."""
        return signal in self._spools

    def store(self, decoded: DecodedRequest, signal: Signal = Signal.TRACES) -> None:
        """Put the request in its signal's spool; return once durable, else raise :class:`RefusedError`."""
        metrics = self.metrics
        items = signal.items
        metrics.add("requests")
        digest = RecentRequests.digest(decoded.payload)
        if decoded.span_count and digest in self._recent:
            # A sender repeating a request it got no answer to: stored already, so acknowledged
            # and counted apart (not as received items, which would then never be written).
            metrics.add("repeated_requests")
            return
        metrics.add(f"received_{items}", decoded.span_count)
        if decoded.rejected_spans:
            metrics.add(f"rejected_{items}", decoded.rejected_spans)
        if not decoded.span_count:
            return
        if not self.accepting:
            self._reject(items, decoded.span_count)
            raise RefusedError(Outcome.UNAVAILABLE, "the collector is shutting down", counted=True)
        try:
            self._spools[signal].append(decoded.payload, decoded.span_count)
        except SpoolFullError as exc:
            self._reject(items, decoded.span_count)
            metrics.add("spool_full_refusals")
            raise RefusedError(Outcome.SPOOL_FULL, str(exc), counted=True) from exc
        except SpoolError as exc:
            self._reject(items, decoded.span_count)
            self.spool_failure = (time.monotonic(), str(exc))
            metrics.add("spool_errors")
            _logger.error("spool write failed, request refused: %s", exc)
            raise RefusedError(
                Outcome.UNAVAILABLE,
                f"the collector cannot store {signal.items.replace('_', ' ')} right now: {exc}",
                counted=True,
            ) from exc
        self._recent.add(digest)
        self.spool_failure = None
        metrics.add(f"spooled_{items}", decoded.span_count)

    def _reject(self, items: str, count: int) -> None:
        self.metrics.add("rejected_requests")
        self.metrics.add(f"rejected_{items}", count)
