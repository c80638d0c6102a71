"""The one boundary where llmledger's own failures are caught.

The app's exceptions are never handled here: they pass through the wrappers unchanged.
Our failures (a bad response shape, a pricing bug, an exporter hiccup) are logged once per
site, counted, and swallowed, so telemetry can never break a request. Under llmledger's own
test suite (``LLMLEDGER_RAISE_INTERNAL_ERRORS=1``) they are re-raised instead, so bugs fail loudly.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter

logger = logging.getLogger("llmledger.instrumentation")

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def _raise_internal() -> bool:
    return os.environ.get("LLMLEDGER_RAISE_INTERNAL_ERRORS", "") not in ("", "0", "false")


def internal_error(site: str, exc: BaseException) -> None:
    """Record a failure of llmledger's own code at ``site``; re-raise only under our tests."""
    with _lock:
        _counts[site] += 1
        first = _counts[site] == 1
    if first:
        logger.warning(
            "llmledger: internal error in %s (telemetry for this call may be incomplete; "
            "the application is not affected). Further errors here are counted, not logged.",
            site,
            exc_info=exc,
        )
    if _raise_internal():
        raise exc


def internal_error_counts() -> dict[str, int]:
    """How many internal errors each site has swallowed since start (for health checks and tests)."""
    with _lock:
        return dict(_counts)


def reset_internal_error_counts() -> None:
    with _lock:
        _counts.clear()
