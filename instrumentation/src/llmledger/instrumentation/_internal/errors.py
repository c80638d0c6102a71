"""The one boundary where the instrumentation's own failures are caught.

The app's exceptions are never handled here: they pass through the wrappers unchanged.
Our failures (a bad response shape, a pricing bug, an exporter hiccup) are logged once per
site, counted, and swallowed, so telemetry can never break a request. Under llmledger's own
test suite (``LLMLEDGER_RAISE_INTERNAL_ERRORS=1``) they are re-raised instead, so bugs fail
loudly. The mechanism is :mod:`llmledger.instrumentation.containment`, shared with the exporter;
the counts here are the instrumentation's own.
"""

from __future__ import annotations

import logging

from llmledger.instrumentation.containment import InternalErrors

__all__ = ["internal_error", "internal_error_counts", "logger", "reset_internal_error_counts"]

logger = logging.getLogger("llmledger.instrumentation")

# A warning, not an error: the app's request went through; only its telemetry may be short.
_errors = InternalErrors(
    logger,
    logging.WARNING,
    "llmledger: internal error in %s (telemetry for this call may be incomplete; "
    "the application is not affected). Further errors here are counted, not logged.",
)

internal_error = _errors.record
internal_error_counts = _errors.counts
reset_internal_error_counts = _errors.reset
