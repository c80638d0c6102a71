"""How llmledger contains its own failures, for every distribution of llmledger.

A failure of llmledger's own code (a bug, not the app's exception and not an outside
failure a site exists to survive) is counted per site, logged once with its traceback,
and swallowed in production, so telemetry never breaks the app or the collector. Under
llmledger's own test suite (``LLMLEDGER_RAISE_INTERNAL_ERRORS=1``) it is re-raised instead,
so a test fails rather than the bug being swallowed.

Each distribution keeps its own :class:`InternalErrors` (its logger, its words, its counts);
this module is the one implementation they share. Other parts of llmledger use this module
only: what sits under ``_internal`` may change in any release.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Final

__all__ = ["RAISE_SWITCH", "InternalErrors", "raise_internal_errors"]

# The one switch for every distribution: a test suite sets it once for all of llmledger.
RAISE_SWITCH: Final = "LLMLEDGER_RAISE_INTERNAL_ERRORS"


def raise_internal_errors() -> bool:
    """Whether internal errors are re-raised (under llmledger's tests) rather than contained.

    Read on every error, not once at import, so a test can turn it off for its duration."""
    return os.environ.get(RAISE_SWITCH, "") not in ("", "0", "false")


class InternalErrors:
    """One distribution's internal errors: counted per site, the first at each site logged."""

    def __init__(self, logger: logging.Logger, level: int, message: str) -> None:
        """``message`` is logged at ``level`` on a site's first error, ``%s`` standing for the site:
        it says what a contained error means for whoever reads that distribution's log."""
        self.logger = logger
        self._level = level
        self._message = message
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, site: str, exc: BaseException) -> None:
        """A bug of llmledger's own at ``site``: counted, logged once, re-raised only under our tests."""
        with self._lock:
            self._counts[site] += 1
            first = self._counts[site] == 1
        if first:
            self.logger.log(self._level, self._message, site, exc_info=exc)
        if raise_internal_errors():
            raise exc

    def counts(self) -> dict[str, int]:
        """How many internal errors each site has contained since start (for health checks and tests)."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget the counts (for tests), so the next error at each site is logged again."""
        with self._lock:
            self._counts.clear()
