"""Call guards: checks that run before an LLM call and may refuse it (opt-in, e.g. hard budgets).

A guard gets the call's attribution (``tenant.id``, ``user.id``, ...) and raises to refuse
the call; its exception reaches the app, and no request is sent. With no guard registered
the wrappers pay one tuple truth test per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

CallGuard = Callable[[Mapping[str, str]], None]

_lock = threading.Lock()
guards: tuple[CallGuard, ...] = ()


def add_call_guard(guard: CallGuard) -> Callable[[], None]:
    """Run ``guard(attribution)`` before every instrumented LLM call; returns a function that removes it."""
    global guards
    with _lock:
        guards = (*guards, guard)

    def remove() -> None:
        global guards
        with _lock:
            guards = tuple(g for g in guards if g is not guard)

    return remove


def run_guards(attribution: Mapping[str, str]) -> None:
    for guard in guards:
        guard(attribution)
