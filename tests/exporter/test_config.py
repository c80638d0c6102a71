"""The exporter's one configuration module: defaults < settings file < environment < flags or arguments.

The store's resolution in full (file, environment, flags, every problem at once) is in
test_schema.py; here: which database a URL names at each rank.
"""

from __future__ import annotations

import pytest

from llmledger.exporter import StoreConfig

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
