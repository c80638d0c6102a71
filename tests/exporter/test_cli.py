"""The llmledger CLI's schema, sql, prices and tenant-user commands against the session store."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from decimal import Decimal

import pytest

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import load_migrations
from llmledger.exporter.cli import build_parser, main

SERVER_URL = os.environ.get("LLMLEDGER_TEST_CLICKHOUSE_URL")


def store_args(config: StoreConfig) -> list[str]:
    return ["--url", config.url, "--database", config.database]


def test_every_command_has_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("schema", "sql", "prices", "tenant-user"):
        assert command in out
    for argv in (["schema", "apply"], ["sql"], ["prices", "sync"], ["tenant-user", "create"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        assert "--url" in capsys.readouterr().out


def test_schema_apply_then_status(blank_config: StoreConfig, capsys) -> None:
    migrations = load_migrations()
    assert main(["schema", "status", *store_args(blank_config)]) == 0
    assert capsys.readouterr().out.count("pending") == len(migrations)
    assert (
        main(["schema", "apply", *store_args(blank_config), "--ttl-days", "7", "--calls-ttl-days", "30"]) == 0
    )
    out = capsys.readouterr().out
    assert all(f"applied {m.version:04d}_{m.name}" in out for m in migrations)
    assert main(["schema", "apply", *store_args(blank_config)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["schema", "status", *store_args(blank_config)]) == 0
    out = capsys.readouterr().out
    assert "pending" not in out
    assert out.count("applied") == len(migrations)


def test_invalid_flags_are_reported_together(capsys) -> None:
    assert main(["schema", "apply", "--url", "ftp://nope", "--database", "x-y"]) == 2
    err = capsys.readouterr().err
    assert "ftp://nope" in err
    assert "'x-y'" in err


def test_sql_prints_table_csv_and_json(config: StoreConfig, capsys) -> None:
    query = "SELECT toDecimal128('0.000435', 12) AS cost, 'acme' AS tenant, NULL AS missing"
    assert main(["sql", *store_args(config), "--format", "json", query]) == 0
    assert json.loads(capsys.readouterr().out) == [{"cost": "0.000435", "tenant": "acme", "missing": None}]
    assert main(["sql", *store_args(config), "--format", "csv", query]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["cost", "tenant", "missing"],
        ["0.000435", "acme", ""],
    ]
    assert main(["sql", *store_args(config), "SELECT count() AS n FROM llm_calls"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "-", "0", "(1 row)"]


def test_sql_is_read_only(config: StoreConfig, capsys) -> None:
    assert main(["sql", *store_args(config), "INSERT INTO budgets (tenant_id) VALUES ('x')"]) == 1
    assert "readonly" in capsys.readouterr().err
    assert main(["sql", *store_args(config), "--format", "json", "SELECT count() AS n FROM budgets"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 0}]


PRICE_FILE = """
[[price]]
provider = "openai"
model = "gpt-4o-mini"
input = 0.1
cached_input = 0.05
output = 0.4

[[price]]
provider = "openai"
model = "gpt-4o-mini"
service_tier = "priority"
input = 9
output = 9
"""


def test_prices_sync_writes_the_apps_price_book_and_replaces_it_whole(
    config: StoreConfig, tmp_path, query, capsys
) -> None:
    price_file = tmp_path / "prices.toml"
    price_file.write_text(PRICE_FILE)
    assert main(["prices", "sync", *store_args(config), "--price-file", str(price_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote the price book to {config.database}.model_prices: ")
    newest = (
        f"SELECT service_tier, source, input_per_mtok, cached_input_per_mtok, output_per_mtok "
        f"FROM {config.database}.model_prices WHERE provider = 'openai' AND model = 'gpt-4o-mini' "
        f"AND lookup = 'name' AND synced_at = (SELECT max(synced_at) FROM {config.database}.model_prices) "
        "ORDER BY service_tier"
    )
    rows = query(newest)
    by_tier = {
        row["service_tier"]: (
            row["source"],
            row["input_per_mtok"],
            row["cached_input_per_mtok"],
            row["output_per_mtok"],
        )
        for row in rows
    }
    assert by_tier[""] == ("custom", Decimal("0.1"), Decimal("0.05"), Decimal("0.4"))
    assert by_tier["priority"] == ("custom", Decimal(9), Decimal(9), Decimal(9))  # the tier's own entry
    # The entry without a tier prices the tiers genai-prices prices apart, as the app does.
    assert by_tier["batch"] == by_tier[""]

    assert main(["prices", "sync", *store_args(config)]) == 0  # without the file now
    assert {(row["source"], row["input_per_mtok"]) for row in query(newest) if row["service_tier"] == ""} == {
        ("genai-prices", Decimal("0.15"))
    }


def test_prices_sync_needs_the_schema(blank_config: StoreConfig, capsys) -> None:
    assert main(["prices", "sync", *store_args(blank_config)]) == 2
    assert "llmledger schema apply" in capsys.readouterr().err


def test_tenant_user_dry_run_shows_policies_without_the_password(capsys) -> None:
    argv = [
        "tenant-user",
        "create",
        "--url",
        "http://ch:8123",
        "--tenant",
        "ac'me",
        "--user",
        "grafana_acme",
        "--password",
        "s3cret",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    for table in ("llm_call_rows", "llm_usage_hourly", "llm_usage_daily", "budgets", "otel_traces"):
        assert f"ON `llmledger`.`{table}` AS RESTRICTIVE USING" in out
    assert "GRANT SELECT ON `llmledger`.`llm_calls` TO" in out
    assert "tenant_id = 'ac\\'me'" in out
    assert "readonly = 2" in out
    assert "IDENTIFIED WITH sha256_password BY '<password>'" in out
    # A password that occurs in the SQL text must not garble it.
    assert main([*argv[:-2], "p", "--dry-run"]) == 0
    assert "SpanAttributes['traceloop.association.properties.tenant_id']" in capsys.readouterr().out


def test_a_url_names_its_database_unless_database_is_given(monkeypatch, capsys) -> None:
    argv = ["tenant-user", "create", "--tenant", "acme", "--user", "grafana_acme", "--dry-run"]
    assert main([*argv, "--url", "http://ch:8123/ledger"]) == 0
    assert "GRANT SELECT ON `ledger`.`llm_calls` TO" in capsys.readouterr().out
    assert main([*argv, "--url", "http://ch:8123/ledger", "--database", "other"]) == 0
    assert "GRANT SELECT ON `other`.`llm_calls` TO" in capsys.readouterr().out
    # The URL on the command line ranks above the environment's database, as its flag would.
    monkeypatch.setenv("LLMLEDGER_CLICKHOUSE_DATABASE", "from_env")
    assert main([*argv, "--url", "http://ch:8123/ledger"]) == 0
    assert "GRANT SELECT ON `ledger`.`llm_calls` TO" in capsys.readouterr().out
    assert main([*argv, "--url", "http://ch:8123"]) == 0
    assert "GRANT SELECT ON `from_env`.`llm_calls` TO" in capsys.readouterr().out


def test_tenant_user_needs_a_server(config: StoreConfig, capsys) -> None:
    if not config.embedded:
        pytest.skip("about the embedded store")
    assert main(["tenant-user", "create", *store_args(config), "--tenant", "a", "--user", "u_a"]) == 2
    assert "need a ClickHouse server" in capsys.readouterr().err


@pytest.mark.clickhouse_server
@pytest.mark.skipif(
    not SERVER_URL, reason="needs LLMLEDGER_TEST_CLICKHOUSE_URL (a ClickHouse server with users)"
)
def test_tenant_user_sees_only_its_tenant(config: StoreConfig, store_client, recorder, capsys) -> None:
    from urllib.parse import urlsplit

    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from llmledger.exporter._internal.rows import SpanRows
    from llmledger.exporter._internal.writer import SpanWriter

    for tenant in ("acme", "globex"):
        recorder.call(
            "chat",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m",
                "tenant.id": tenant,
                "gen_ai.usage.input_tokens": 1,
            },
        )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)
    user = f"tenant_{uuid.uuid4().hex[:8]}"
    assert (
        main(
            [
                "tenant-user",
                "create",
                *store_args(config),
                "--tenant",
                "acme",
                "--user",
                user,
                "--password",
                "Pw-12345-xyz",
            ]
        )
        == 0
    )
    parts = urlsplit(config.url)
    tenant_client = clickhouse_connect.get_client(
        host=parts.hostname,
        port=parts.port or 8123,
        username=user,
        password="Pw-12345-xyz",
        secure=parts.scheme == "https",
    )
    try:
        for table in ("llm_calls", "llm_usage_hourly", "llm_usage_daily"):
            tenants = tenant_client.query(
                f"SELECT DISTINCT tenant_id FROM {config.database}.{table}"
            ).result_rows
            assert tenants == [("acme",)]
        spans = tenant_client.query(f"SELECT count() FROM {config.database}.otel_traces").result_rows
        assert spans == [(1,)]
        with pytest.raises(ClickHouseError, match=r"(?i)readonly|not enough privileges"):
            tenant_client.command(f"INSERT INTO {config.database}.budgets (tenant_id) VALUES ('acme')")
    finally:
        tenant_client.close()
        store_client.command(f"DROP USER IF EXISTS {user}")
