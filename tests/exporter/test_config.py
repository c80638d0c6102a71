"""The exporter's one configuration module: defaults < settings file < environment < flags or arguments.

The store's resolution in full (file, environment, flags, every problem at once) is in
test_schema.py; here: which database a URL names at each rank, the direct exporter's
batching variables, and the CLI's defaults from the environment.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from llmledger.exporter import ClickHouseSpanExporter, StoreConfig
from llmledger.exporter._internal.config import ExportSettings, PriceSources, tenant_user_password

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


# --- the database a URL names ------------------------------------------------------------

URL_ENV = "LLMLEDGER_CLICKHOUSE_URL"
DATABASE_ENV = "LLMLEDGER_CLICKHOUSE_DATABASE"


@pytest.mark.parametrize(
    ("env", "file", "flags", "database"),
    [
        # The CLI passes every flag, None when not given: --url alone brings its database.
        ({}, None, {"url": "http://h:8123/fromurl", "database": None}, "fromurl"),
        ({}, None, {"url": "http://h:8123/fromurl", "database": "named"}, "named"),
        ({}, None, {"url": "http://h:8123", "database": None}, "llmledger"),
        ({URL_ENV: "http://h:8123/fromenv"}, None, {}, "fromenv"),
        ({URL_ENV: "http://h:8123/fromenv", DATABASE_ENV: "named"}, None, {}, "named"),
        # A URL above the environment names the database over the environment's.
        ({DATABASE_ENV: "named"}, None, {"url": "http://h:8123/fromurl", "database": None}, "fromurl"),
        # ... and one below it does not.
        ({DATABASE_ENV: "named"}, {"url": "http://h:8123/fromfile"}, {}, "named"),
        ({URL_ENV: "http://h:8123/fromenv"}, {"database": "infile"}, {}, "fromenv"),
        # A URL without a path names no database: the one below it stays.
        ({URL_ENV: "http://h:8123"}, {"database": "infile"}, {}, "infile"),
        # As clickhouse-connect reads a DSN: the first path segment, unquoted.
        ({URL_ENV: "https://u:p@h:8443/led%5Fger/extra"}, None, {}, "led_ger"),
        ({URL_ENV: "chdb:///tmp/store"}, None, {}, "llmledger"),
    ],
)
def test_a_urls_path_names_the_database_at_the_urls_rank(
    env: dict[str, str], file: dict[str, object] | None, flags: dict[str, object], database: str
) -> None:
    assert StoreConfig.resolve(env, file, flags).database == database


# --- the direct exporter's batching -----------------------------------------------------


def test_export_settings_are_defaults_then_environment_then_arguments() -> None:
    assert ExportSettings.resolve({}) == ExportSettings(max_batch_spans=20_000, max_delay_s=1.0)
    env = {"LLMLEDGER_EXPORT_BATCH_SPANS": "500", "LLMLEDGER_EXPORT_DELAY_MS": "0"}
    assert ExportSettings.resolve(env) == ExportSettings(max_batch_spans=500, max_delay_s=0.0)
    arguments: dict[str, object] = {"max_batch_spans": 7, "max_delay_s": None}
    assert ExportSettings.resolve(env, arguments) == ExportSettings(max_batch_spans=7, max_delay_s=0.0)


def test_a_bad_export_variable_is_logged_by_name_and_its_default_used(caplog) -> None:
    env = {"LLMLEDGER_EXPORT_BATCH_SPANS": "0", "LLMLEDGER_EXPORT_DELAY_MS": "soon"}
    with caplog.at_level(logging.ERROR, logger="llmledger.exporter"):
        assert ExportSettings.resolve(env) == ExportSettings()
    assert sorted(r.getMessage() for r in caplog.records) == [
        "LLMLEDGER_EXPORT_BATCH_SPANS='0' is not a whole number >= 1; using 20000",
        "LLMLEDGER_EXPORT_DELAY_MS='soon' is not a whole number >= 0; using 1000",
    ]


def test_a_bad_export_argument_is_refused_in_code() -> None:
    with pytest.raises(ValueError, match="max_batch_spans must be at least 1"):
        ExportSettings.resolve({}, {"max_batch_spans": 0})
    with pytest.raises(ValueError, match="max_delay_s must be >= 0"):
        ClickHouseSpanExporter(StoreConfig(url="http://127.0.0.1:9/nowhere"), max_delay_s=-1)


def test_the_exporter_reads_its_variables_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LLMLEDGER_EXPORT_BATCH_SPANS", "3")
    monkeypatch.setenv("LLMLEDGER_EXPORT_DELAY_MS", "250")
    exporter = ClickHouseSpanExporter(StoreConfig(url="http://127.0.0.1:9/nowhere"))
    assert (exporter._max_batch, exporter._max_delay) == (3, 0.25)  # pyright: ignore[reportPrivateUsage]
    exporter.shutdown()


def test_the_documented_export_defaults_are_the_settings_defaults() -> None:
    rows = dict(re.findall(r"^\| `(LLMLEDGER_EXPORT_\w+)` \| (\d+) \|", DOCS.read_text(), re.MULTILINE))
    defaults = ExportSettings()
    assert rows == {
        "LLMLEDGER_EXPORT_BATCH_SPANS": str(defaults.max_batch_spans),
        "LLMLEDGER_EXPORT_DELAY_MS": str(round(defaults.max_delay_s * 1000)),
    }


# --- the CLI's defaults from the environment --------------------------------------------


def test_price_sources_are_the_apps_variables_under_the_flags() -> None:
    env = {
        "LLMLEDGER_PRICE_FILE": "/etc/prices.toml",
        "LLMLEDGER_AZURE_DEPLOYMENTS": "a=gpt-4o,b=gpt-4o-mini",
    }
    assert PriceSources.resolve({}) == PriceSources()
    assert PriceSources.resolve(env) == PriceSources("/etc/prices.toml", {"a": "gpt-4o", "b": "gpt-4o-mini"})
    flagged = PriceSources.resolve(env, price_file="mine.toml", azure_deployments={"b": "o3", "c": "o4-mini"})
    assert flagged == PriceSources("mine.toml", {"a": "gpt-4o", "b": "o3", "c": "o4-mini"})


def test_the_tenant_users_password_is_the_flag_then_the_variable() -> None:
    env = {"LLMLEDGER_TENANT_USER_PASSWORD": "from-env"}
    assert tenant_user_password("from-flag", env) == "from-flag"
    assert tenant_user_password(None, env) == "from-env"
    assert tenant_user_password(None, {}) is None
