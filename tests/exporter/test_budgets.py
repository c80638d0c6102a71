"""Budgets: set/list/remove, `budget check` exit codes, and hard-budget enforcement in an instrumented app."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.trace import TracerProvider

from llmledger.exporter import BudgetExceededError, BudgetGuard, StoreConfig
from llmledger.exporter._internal.budgets import budget_status, parse_limit
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.exporter.cli import main
from llmledger.instrumentation import LLMLedgerInstrumentor, attribution

from .conftest import Recorder


def store_args(config: StoreConfig) -> list[str]:
    return ["--url", config.url, "--database", config.database]


def spend(store_client: Client, config: StoreConfig, tenant: str, user: str, cost: str) -> None:
    """One priced call, now, through the product's own writer path."""
    recorder = Recorder({"service.name": "budget-test"}, "llmledger.instrumentation")
    recorder.call(
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.cost": float(cost),
            "tenant.id": tenant,
            "user.id": user,
        },
        start_ns=time.time_ns() - 1_000_000_000,
    )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)


@pytest.fixture
def spent(config: StoreConfig, store_client: Client) -> StoreConfig:
    spend(store_client, config, "acme", "alice", "8.50")
    spend(store_client, config, "acme", "bob", "1.25")
    spend(store_client, config, "globex", "hank", "3.00")
    return config


def test_set_list_remove(spent: StoreConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["budget", "set", "acme", "10", "--hard", *store_args(spent)]) == 0
    assert (
        main(["budget", "set", "acme", "5", "--user", "alice", "--period", "daily", *store_args(spent)]) == 0
    )
    assert main(["budget", "set", "globex", "100", *store_args(spent)]) == 0
    assert main(["budget", "set", "globex", "50", *store_args(spent)]) == 0  # changes, not duplicates
    capsys.readouterr()
    assert main(["budget", "list", "--format", "json", *store_args(spent)]) == 0
    listed = {(r["tenant"], r["user"], r["period"]): r for r in json.loads(capsys.readouterr().out)}
    assert set(listed) == {("acme", "*", "monthly"), ("acme", "alice", "daily"), ("globex", "*", "monthly")}
    assert Decimal(listed[("acme", "*", "monthly")]["spent_usd"]) == Decimal("9.75")
    assert listed[("acme", "*", "monthly")]["state"] == "near"
    assert listed[("acme", "alice", "daily")]["state"] == "BREACHED"
    assert Decimal(listed[("globex", "*", "monthly")]["limit_usd"]) == 50
    assert main(["budget", "remove", "acme", "--user", "alice", "--period", "daily", *store_args(spent)]) == 0
    assert main(["budget", "remove", "acme", "--user", "alice", "--period", "daily", *store_args(spent)]) == 1
    assert "no daily budget for acme / alice" in capsys.readouterr().err


def test_check_exit_codes(spent: StoreConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["budget", "check", *store_args(spent)]) == 0  # no budgets at all
    assert main(["budget", "set", "acme", "12", *store_args(spent)]) == 0
    assert main(["budget", "check", *store_args(spent)]) == 0  # 9.75 of 12 = 81%: near, not breached
    out = capsys.readouterr().out
    assert "near" in out
    assert "0 breached, 1 near" in out
    assert main(["budget", "set", "globex", "3", "--period", "daily", *store_args(spent)]) == 0
    assert main(["budget", "check", *store_args(spent)]) == 1  # 3.00 of 3: breached
    assert "1 breached" in capsys.readouterr().out
    assert main(["budget", "check", "--warn-at", "1.5", *store_args(spent)]) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "is not an amount"),
        ("-5", "must be a positive amount"),
        ("0", "must be a positive amount"),
        ("1e-13", "more than 12 decimal places"),
    ],
)
def test_bad_limits(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_limit(text)
    assert parse_limit("$19.99") == Decimal("19.99")


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider())
    yield
    instrumentor.uninstrument()


def test_hard_budget_refuses_calls_in_the_app(
    spent: StoreConfig, store_client: Client, instrumented: None
) -> None:
    assert main(["budget", "set", "acme", "9", "--hard", *store_args(spent)]) == 0  # 9.75 spent: over
    assert main(["budget", "set", "globex", "3.50", *store_args(spent)]) == 0  # soft: never refuses
    sent: list[Any] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(
            200,
            json={
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    client = openai.OpenAI(api_key="k", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    guard = BudgetGuard(lambda: budget_status(store_client, spent.database), refresh_s=3600)
    uninstall = guard.install()
    try:
        with attribution(tenant_id="acme", user_id="bob"), pytest.raises(BudgetExceededError) as info:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert sent == []  # refused before anything was sent
        assert "tenant 'acme' is over its hard monthly budget: spent $9.75 of $9" in str(info.value)
        with attribution(tenant_id="globex"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )  # no tenant
        assert len(sent) == 2
        # Raising the budget takes effect at the next background refresh, never a query per call.
        assert main(["budget", "set", "acme", "20", "--hard", *store_args(spent)]) == 0
        with attribution(tenant_id="acme"), pytest.raises(BudgetExceededError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        guard.refresh()
        with attribution(tenant_id="acme"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert len(sent) == 3
    finally:
        uninstall()
    with attribution(tenant_id="acme"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_failed_refresh_keeps_last_figures(caplog: pytest.LogCaptureFixture) -> None:
    from datetime import UTC, datetime

    from clickhouse_connect.driver.exceptions import OperationalError

    from llmledger.exporter._internal.budgets import BudgetStatus

    over = BudgetStatus("acme", "", "daily", "hard", Decimal(1), datetime.now(UTC), Decimal(2))
    # What clickhouse-connect raises for a store that does not answer.
    answers: list[Any] = [[over], OperationalError("store unreachable")]

    def fetch() -> list[BudgetStatus]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    guard = BudgetGuard(fetch)
    guard.refresh()
    guard.refresh()
    assert "budget figures could not be refreshed" in caplog.text
    with pytest.raises(BudgetExceededError):
        guard.check({"tenant.id": "acme"})
