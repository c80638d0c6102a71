"""Waiting in tests for something another thread or process does: poll until it holds, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable

# How long to wait for a collector's store to open or a backlog to drain. Opening the
# embedded store and applying the schema takes ~6 s on an idle core and 30 s or more on one
# shared with other test suites (60 s waits timed out there); a wait returns as soon as its
# condition holds, so a long deadline costs a passing test nothing.
SLOW_MACHINE_SECONDS = 180


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Return once ``condition()`` holds; fail after ``timeout`` seconds naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
