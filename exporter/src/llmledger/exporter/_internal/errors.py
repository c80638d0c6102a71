"""Where every broad ``except`` in the exporter hands what it caught.

The exporter lives with failures that are not its own — a store that is down or refuses a
batch, a full disk, a peer that hangs up — and a site that must survive them catches
broadly, because the libraries below raise more kinds than they document. Such a site
names the failures it exists for (by default :data:`OUTSIDE_FAILURES`: the store's, the
network's, the disk's) and calls :func:`contain` first thing. What it names is handled as
the site says. Anything else is a bug in llmledger: counted per site, logged once with its
traceback, and contained in production — but re-raised under llmledger's own test suite
(``LLMLEDGER_RAISE_INTERNAL_ERRORS=1``, the instrumentation's switch), so a test fails
instead of the bug being swallowed: :mod:`llmledger.instrumentation.containment` is the
mechanism, shared with the instrumentation; the counts here are the exporter's own. A test whose subject is the containment itself turns
the switch off for its duration (the ``internal_errors_contained`` fixture).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from contextlib import contextmanager
from typing import Final

from clickhouse_connect.driver.exceptions import ClickHouseError

from llmledger.instrumentation.containment import InternalErrors

__all__ = [
    "OUTSIDE_FAILURES",
    "contain",
    "contained",
    "internal_error",
    "internal_error_counts",
]

_logger = logging.getLogger("llmledger.exporter")

# The store (clickhouse-connect wraps the server's and chDB's errors alike), the network and
# the disk (OSError covers connection resets, timeouts, a full or read-only disk).
OUTSIDE_FAILURES: Final[tuple[type[BaseException], ...]] = (OSError, ClickHouseError)

# The exporter's own counts and words; the mechanism (and the switch) is the instrumentation's.
# An error, not a warning: here a contained bug can cost stored telemetry, not only a span.
_errors = InternalErrors(
    _logger,
    logging.ERROR,
    "llmledger: internal error in %s (contained; further errors here are counted, not logged)",
)
internal_error = _errors.record
internal_error_counts = _errors.counts


def contain(
    site: str, exc: BaseException, expected: tuple[type[BaseException], ...] = OUTSIDE_FAILURES
) -> None:
    """Return when ``exc`` is one of the ``expected`` failures ``site`` exists to survive;
    otherwise treat it as llmledger's own bug (:func:`internal_error`)."""
    if not isinstance(exc, expected):
        internal_error(site, exc)


@contextmanager
def contained(site: str, expected: tuple[type[BaseException], ...] = OUTSIDE_FAILURES) -> Generator[None]:
    """:func:`contain` as a block, for a step whose failure changes nothing (closing what is let go)."""
    try:
        yield
    except Exception as exc:
        contain(site, exc, expected)
        _logger.debug("%s failed", site, exc_info=exc)
