"""Names written into SQL: one check, one quoting, the same refusal wherever a name comes from.

The helper is property-tested against the real engine: every name it accepts, quoted, is
read back by ClickHouse as exactly that name; everything else is refused before any SQL is
built. The call sites are tested through the ways users reach them (config, CLI, functions
that take a database name).
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from clickhouse_connect.driver.binding import quote_identifier as connect_quote
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmledger.exporter import ConfigError, StoreConfig
from llmledger.exporter._internal.budgets import budget_status, remove_budget, set_budget
from llmledger.exporter._internal.identifiers import (
    IdentifierError,
    identifier_problem,
    is_plain_identifier,
    quote_identifier,
)
from llmledger.exporter._internal.migrations import shared_sql
from llmledger.exporter._internal.prices import write_prices
from llmledger.exporter._internal.report import ReportQuery, run_report
from llmledger.exporter._internal.store import run_query
from llmledger.exporter._internal.tenant_access import tenant_access_statements
from llmledger.exporter.cli import main

PLAIN = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
HOSTILE = [
    "",
    "1st",
    "a b",
    "a`b",
    "a`; DROP DATABASE x; --",
    "x'y",
    'x"y',
    "db\n",
    "db\r\nSELECT 1",
    "a.b",
    "a-b",
    "`llmledger`",
    "llmledger;",
    "n\x00",
    "caf\u00e9",
    "\u0430dmin",  # a Cyrillic a
    "a" * 129,
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(name=PLAIN)
@example(name="_")
@example(name="a" * 128)
@example(name="SELECT")
@example(name="default")
def test_an_accepted_name_reaches_clickhouse_as_itself(store_client: Client, name: str) -> None:
    quoted = quote_identifier(name)
    assert quoted == f"`{name}`" == connect_quote(name)
    # The engine reads the quoted name back as exactly the name: no escape, keyword or case folding.
    result = run_query(store_client, f"SELECT 1 AS {quoted}, {quoted}")
    assert result.column_names == (name, name)


@given(name=st.text(max_size=140))
@example(name="db\n")
def test_the_check_is_exactly_the_plain_identifier_rule(name: str) -> None:
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name) is not None
    assert is_plain_identifier(name) is plain
    assert (identifier_problem(name, "database name") is None) is plain
    if plain:
        # Nothing that could end a quoted identifier or a statement survives the check.
        assert not set(name) & set("`'\"\\;.-\n\r\t\x00 ")
    else:
        with pytest.raises(IdentifierError):
            quote_identifier(name)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_refused_with_what_it_was_for(name: str) -> None:
    with pytest.raises(IdentifierError) as refused:
        quote_identifier(name, "database name")
    assert str(refused.value) == (
        f"database name {name!r} must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)"
    )
    assert isinstance(refused.value, ValueError)


def test_not_a_string_is_refused() -> None:
    for value in (None, 7, b"abc"):
        assert not is_plain_identifier(value)
        with pytest.raises(IdentifierError):
            quote_identifier(value)


# --- the call sites ---------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_store_config_reports_the_same_message_among_its_problems(name: str) -> None:
    with pytest.raises(ConfigError) as refused:
        StoreConfig(url="http://ch:8123", database=name, cluster="a b").validate()
    assert identifier_problem(name, "database name") in refused.value.problems
    assert identifier_problem("a b", "cluster name") in refused.value.problems


def test_store_config_refuses_a_trailing_newline_from_the_environment() -> None:
    # `^...$` matched "db\n"; the one check matches the whole name.
    with pytest.raises(ConfigError, match="database name 'db\\\\n'"):
        StoreConfig.from_env(
            {"LLMLEDGER_CLICKHOUSE_URL": "http://ch:8123", "LLMLEDGER_CLICKHOUSE_DATABASE": "db\n"}
        )


def test_the_cli_says_the_same_message_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tenant-user", "create", "--url", "http://ch:8123", "--tenant", "acme", "--dry-run"]
    assert main([*argv, "--user", "grafana`; DROP USER default; --"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "llmledger: " + str(
        identifier_problem("grafana`; DROP USER default; --", "user name")
    )
    assert main([*argv, "--user", "grafana", "--database", "x y"]) == 2
    assert str(identifier_problem("x y", "database name")) in capsys.readouterr().err


def test_every_function_that_takes_a_database_name_refuses_a_hostile_one(store_client: Client) -> None:
    bad = "llmledger`.`budgets"
    expected = identifier_problem(bad, "database name")
    calls = [
        lambda: set_budget(
            store_client, bad, tenant="a", period="monthly", limit=Decimal(1), enforcement="soft"
        ),
        lambda: remove_budget(store_client, bad, tenant="a", period="monthly"),
        lambda: budget_status(store_client, bad),
        lambda: run_report(store_client, bad, ReportQuery(group_by=("tenant",))),
        lambda: shared_sql(bad),
        lambda: write_prices(store_client, bad, []),
        lambda: tenant_access_statements(bad, "acme", "grafana", "pw"),
    ]
    for call in calls:
        with pytest.raises(IdentifierError) as refused:
            call()
        assert str(refused.value) == expected
    with pytest.raises(IdentifierError, match="cluster name"):
        tenant_access_statements("llmledger", "acme", "grafana", "pw", cluster="c`")
    with pytest.raises(IdentifierError, match="cluster name"):
        write_prices(store_client, "llmledger", [], cluster="c`")
