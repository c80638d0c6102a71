"""The exporter's broad ``except`` sites: outside failures handled, llmledger's own bugs loud under tests.

Every ``except Exception`` / ``except BaseException`` in the exporter either re-raises or hands
what it caught to ``errors.contain`` (``internal_error``) first, so a bug that reaches such a
site fails the test that provoked it instead of being swallowed, as in the instrumentation.
"""

from __future__ import annotations

import ast
import logging
import os
import socket
import sys
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from llmledger.exporter._internal import errors
from llmledger.exporter._internal.budgets import BudgetExceededError, BudgetGuard, BudgetStatus
from llmledger.exporter._internal.collector import drain_process
from llmledger.exporter._internal.collector.config import CollectorConfig
from llmledger.exporter._internal.collector.metrics import CollectorMetrics

SRC = Path(__file__).resolve().parents[2] / "exporter" / "src"
# Handing the exception to one of these is routing it through the helper (_engine_error
# contains before it translates chDB's errors into ClickHouse's).
_ROUTES = {"contain", "contained", "internal_error", "_engine_error"}


def _is_broad(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(
        isinstance(kind, ast.Name) and kind.id in ("Exception", "BaseException") for kind in kinds
    )


def _routes(node: ast.AST) -> bool:
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call):
            name = inner.func.id if isinstance(inner.func, ast.Name) else getattr(inner.func, "attr", "")
            if name in _ROUTES:
                return True
    return False


def _broad_sites_not_routed() -> dict[str, int]:
    found: Counter[str] = Counter()
    package = SRC / "llmledger" / "exporter"
    for path in sorted(package.rglob("*.py")):
        relative = (
            path.relative_to(package / "_internal")
            if "_internal" in path.parts
            else path.relative_to(package)
        )
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and _is_broad(node):
                reraises = isinstance(node.body[-1], ast.Raise)
                if not reraises and not any(_routes(statement) for statement in node.body):
                    found[relative.as_posix()] += 1
            if isinstance(node, ast.withitem) and _suppresses_broadly(node.context_expr):
                found[relative.as_posix()] += 1
    return dict(found)


def _suppresses_broadly(expr: ast.expr) -> bool:
    return (
        isinstance(expr, ast.Call)
        and getattr(expr.func, "attr", getattr(expr.func, "id", "")) == "suppress"
        and any(isinstance(arg, ast.Name) and arg.id in ("Exception", "BaseException") for arg in expr.args)
    )


def test_every_broad_except_re_raises_or_goes_through_the_helper() -> None:
    assert _broad_sites_not_routed() == {}


def test_the_rule_sees_a_swallowing_site() -> None:
    swallowing = ast.parse("try:\n    f()\nexcept Exception:\n    pass\n")
    handler = next(node for node in ast.walk(swallowing) if isinstance(node, ast.ExceptHandler))
    assert _is_broad(handler)
    assert not isinstance(handler.body[-1], ast.Raise)
    assert not any(_routes(statement) for statement in handler.body)
    assert _suppresses_broadly(ast.parse("contextlib.suppress(Exception)", mode="eval").body)


# --- the helper -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outside", [OSError("disk full"), ConnectionResetError(), OperationalError("down"), DatabaseError("x")]
)
def test_an_outside_failure_is_left_to_the_site(outside: Exception) -> None:
    before = errors.internal_error_counts()
    errors.contain("a test site", outside)  # returns: the site handles it as designed
    assert errors.internal_error_counts() == before


def test_a_bug_is_raised_under_the_tests() -> None:
    bug = TypeError("'NoneType' object is not subscriptable")
    with pytest.raises(TypeError) as raised:
        errors.contain("a test site raising", bug)
    assert raised.value is bug
    with pytest.raises(KeyError), errors.contained("a test block"):
        raise KeyError("missing")


def test_a_bug_is_contained_counted_and_logged_once_in_production(
    internal_errors_contained: None, caplog: pytest.LogCaptureFixture
) -> None:
    site = "a test site in production"
    with caplog.at_level(logging.ERROR, logger="llmledger.exporter"):
        for _ in range(3):
            errors.contain(site, AttributeError("no such attribute"))
            with errors.contained(site):
                raise IndexError("out of range")
    assert errors.internal_error_counts()[site] == 6
    logged = [record for record in caplog.records if site in record.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


def test_each_distribution_counts_and_words_its_own_errors_under_one_switch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One implementation (llmledger.instrumentation.containment), two records: the exporter's
    errors are its own, logged as errors; the instrumentation's, as warnings (the app went on)."""
    from llmledger.instrumentation._internal import errors as instrumentation_errors

    site = "a site both distributions name"
    with caplog.at_level(logging.WARNING):
        with pytest.raises(KeyError):  # the switch the suite sets holds for both
            instrumentation_errors.internal_error(site, KeyError("under the tests"))
        monkeypatch.setenv("LLMLEDGER_RAISE_INTERNAL_ERRORS", "0")
        errors.internal_error(site, KeyError("the exporter's"))
        errors.internal_error(site, KeyError("the exporter's again"))
        instrumentation_errors.internal_error(site, KeyError("the instrumentation's again"))
    assert errors.internal_error_counts()[site] == 2
    assert instrumentation_errors.internal_error_counts()[site] == 2
    logged = [(record.name, record.levelno) for record in caplog.records if site in record.getMessage()]
    assert logged == [("llmledger.instrumentation", logging.WARNING), ("llmledger.exporter", logging.ERROR)]


def test_a_site_names_the_failures_it_exists_for() -> None:
    errors.contain("a decoding site", ValueError("bad bytes"), (ValueError,))
    with pytest.raises(OSError, match="disk"):
        errors.contain("a decoding site", OSError("disk"), (ValueError,))


# --- a site ---------------------------------------------------------------------------


def _guard_fetching(*answers: object) -> BudgetGuard:
    queue = list(answers)

    def fetch() -> list[BudgetStatus]:
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, list)
        return answer  # pyright: ignore[reportUnknownVariableType]

    return BudgetGuard(fetch)


def test_the_budget_guard_keeps_its_figures_when_the_store_is_down() -> None:
    over = BudgetStatus("acme", "", "daily", "hard", Decimal(1), datetime.now(UTC), Decimal(2))
    guard = _guard_fetching([over], OperationalError("store unreachable"))
    guard.refresh()
    guard.refresh()
    with pytest.raises(BudgetExceededError):
        guard.check({"tenant.id": "acme"})


def test_a_bug_behind_the_budget_guard_fails_the_test() -> None:
    guard = _guard_fetching(TypeError("a bug in reading the figures"))
    with pytest.raises(TypeError, match="a bug"):
        guard.refresh()


def test_a_bug_behind_the_budget_guard_is_contained_in_production(internal_errors_contained: None) -> None:
    over = BudgetStatus("acme", "", "daily", "hard", Decimal(1), datetime.now(UTC), Decimal(2))
    guard = _guard_fetching([over], TypeError("a bug in reading the figures"))
    guard.refresh()
    guard.refresh()  # the guard goes on with the last figures
    with pytest.raises(BudgetExceededError):
        guard.check({"tenant.id": "acme"})
    assert errors.internal_error_counts()["the budget guard refreshing its figures"] >= 1


# --- the drain process starting the embedded store's ClickHouse HTTP interface ---------------

QUERY_SERVER = "the drain process starting the ClickHouse HTTP interface"


def _start_query_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listening_fd: int, drain: object
) -> tuple[object, str | None, int]:
    """Start the interface as the drain process does, on ``listening_fd``; (server, error, store errors)."""
    monkeypatch.setattr(sys, "argv", ["drain", str(os.getpid()), str(listening_fd)])
    config = CollectorConfig.build(env={"XDG_DATA_HOME": str(tmp_path)})
    metrics = CollectorMetrics()
    server, error = drain_process._start_query_server(config, drain, metrics)  # pyright: ignore[reportPrivateUsage, reportArgumentType]
    return server, error, metrics.get("store_errors")


def test_a_query_server_that_cannot_start_is_the_stores_condition(monkeypatch, tmp_path: Path) -> None:
    with socket.socket() as closed:
        fd = os.dup(closed.fileno())
    os.close(fd)  # a descriptor that is no longer open: the OS refuses it
    before = errors.internal_error_counts()
    server, error, store_errors = _start_query_server(monkeypatch, tmp_path, fd, drain=object())
    assert server is None
    assert error is not None
    assert "cannot start" in error
    assert store_errors == 1
    assert errors.internal_error_counts() == before


def test_a_bug_starting_the_query_server_fails_the_test(monkeypatch, tmp_path: Path) -> None:
    # A drain without engine_open: the kind of slip a refactoring leaves behind.
    with (
        socket.create_server(("127.0.0.1", 0)) as listening,
        pytest.raises(AttributeError, match="engine_open"),
    ):
        _start_query_server(monkeypatch, tmp_path, os.dup(listening.fileno()), drain=object())


def test_a_bug_starting_the_query_server_is_contained_and_counted_in_production(
    internal_errors_contained: None, monkeypatch, tmp_path: Path
) -> None:
    before = errors.internal_error_counts().get(QUERY_SERVER, 0)
    with socket.create_server(("127.0.0.1", 0)) as listening:
        server, error, store_errors = _start_query_server(
            monkeypatch, tmp_path, os.dup(listening.fileno()), drain=object()
        )
    assert server is None
    assert error is not None
    assert "engine_open" in error  # reads through the collector are off, and the status says why
    assert store_errors == 1
    assert errors.internal_error_counts()[QUERY_SERVER] == before + 1
