"""Collector configuration: one set of defaults < TOML file < environment < flags, every problem at once."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from llmledger.exporter._internal.collector import SETTINGS, CollectorConfig
from llmledger.exporter._internal.collector.config import (
    FsyncPolicy,
    LogFormat,
    LogLevel,
    Setting,
    default_data_dir,
)
from llmledger.exporter._internal.collector.messages import DrainStart, decode_command, encode
from llmledger.exporter._internal.config import ConfigError
from llmledger.exporter.cli import build_parser
from llmledger.exporter.cli._collector import config_from_args


def test_defaults_listen_on_loopback_with_a_durable_spool(tmp_path: Path) -> None:
    config = CollectorConfig.build(env={"XDG_DATA_HOME": str(tmp_path)})
    assert config.endpoint("grpc") == ("127.0.0.1", 4317)
    assert config.endpoint("http") == ("127.0.0.1", 4318)
    assert config.fsync == "always"
    assert config.data_dir == tmp_path / "llmledger" / "collector"
    assert config.store.url == f"chdb://{tmp_path / 'llmledger' / 'store'}"
    assert config.bearer_token() is None


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file-token\n")
    config_file = tmp_path / "collector.toml"
    config_file.write_text(
        f"""
[collector]
clickhouse_url = "http://ch.internal:8123/ledger"
http_endpoint = "0.0.0.0:4318"
grpc_endpoint = "0.0.0.0:4317"
spool_max_bytes = "2GiB"
fsync = "never"
auth_token_file = "{token}"
apply_schema = false
"""
    )
    env = {
        "XDG_DATA_HOME": str(tmp_path),
        "LLMLEDGER_COLLECTOR_CONFIG": str(config_file),
        "LLMLEDGER_COLLECTOR_GRPC_ENDPOINT": "127.0.0.1:14317",
        "LLMLEDGER_COLLECTOR_SPOOL_MAX_BYTES": "512MiB",
    }
    config = CollectorConfig.build({"spool_max_bytes": "256MiB", "database": "other"}, env=env)
    assert config.store.url == "http://ch.internal:8123/ledger"  # file (no env, no flag)
    assert config.store.database == "other"  # flag
    assert config.http_endpoint == "0.0.0.0:4318"  # file
    assert config.grpc_endpoint == "127.0.0.1:14317"  # env over file
    assert config.spool_max_bytes == 256 << 20  # flag over env over file
    assert config.fsync == "never"
    assert config.apply_schema is False
    assert config.bearer_token() == "from-file-token"
    env["LLMLEDGER_CLICKHOUSE_URL"] = "chdb:///srv/store"
    assert CollectorConfig.build(env=env).store.url == "chdb:///srv/store"  # env over file


def test_the_file_lays_out_the_store_as_the_environment_does(tmp_path: Path) -> None:
    config_file = tmp_path / "collector.toml"
    config_file.write_text(
        """
clickhouse_url = "http://ch.internal:8123/ledger"
cluster = "prod"
spans_ttl_days = 30
calls_ttl_days = "400"
rollup_ttl_days = 0
"""
    )
    env = {"XDG_DATA_HOME": str(tmp_path)}
    store = CollectorConfig.build(env=env, config_file=config_file).store
    assert (store.url, store.database, store.cluster) == ("http://ch.internal:8123/ledger", "ledger", "prod")
    assert (store.spans_ttl_days, store.calls_ttl_days, store.rollup_ttl_days) == (30, 400, 0)
    env |= {"LLMLEDGER_CLICKHOUSE_CLUSTER": "staging", "LLMLEDGER_SPANS_TTL_DAYS": "7"}
    store = CollectorConfig.build(env=env, config_file=config_file).store
    assert (store.cluster, store.spans_ttl_days, store.calls_ttl_days) == ("staging", 7, 400)  # env over file

    config_file.write_text('spans_ttl_days = "a month"\ncalls_ttl_days = true\nrollup_ttl_days = 10\n')
    with pytest.raises(ConfigError) as raised:
        CollectorConfig.build(env={"XDG_DATA_HOME": str(tmp_path)}, config_file=config_file)
    problems = raised.value.problems
    assert f"spans_ttl_days (from {config_file}): 'a month' is not a whole number of days" in problems
    assert f"calls_ttl_days (from {config_file}): True is not a whole number of days" in problems
    config_file.write_text("spans_ttl_days = 90\ncalls_ttl_days = 30\n")
    with pytest.raises(ConfigError, match="spans_ttl_days must not exceed calls_ttl_days"):
        CollectorConfig.build(env={"XDG_DATA_HOME": str(tmp_path)}, config_file=config_file)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config_file = tmp_path / "collector.toml"
    config_file.write_text('fsync = "sometimes"\nunknown_key = 1\n')
    with pytest.raises(ConfigError) as raised:
        CollectorConfig.build(
            {
                "http_endpoint": "no-port",
                "max_request_bytes": "lots",
                "tls_cert_file": str(tmp_path / "missing.pem"),
                "clickhouse_url": "ftp://nowhere",
            },
            env={"XDG_DATA_HOME": str(tmp_path), "LLMLEDGER_COLLECTOR_QUERY_SERVER": "maybe"},
            config_file=config_file,
        )
    text = str(raised.value)
    for expected in (
        "fsync (from",
        "is not one of always, never",
        "unknown setting 'unknown_key'",
        "max_request_bytes (from --max-request-bytes): 'lots' is not a size",
        "query_server (from LLMLEDGER_COLLECTOR_QUERY_SERVER): 'maybe' is not true or false",
        "must start with http://, https:// or chdb://",
    ):
        assert expected in text
    with pytest.raises(ConfigError) as raised:
        CollectorConfig.build(
            {
                "http_endpoint": "no-port",
                "grpc_endpoint": "",
                "tls_cert_file": str(tmp_path / "missing.pem"),
                "spool_max_bytes": "1MiB",
            },
            env={"XDG_DATA_HOME": str(tmp_path)},
        )
    problems = raised.value.problems
    assert "http_endpoint 'no-port' must be host:port" in problems
    assert "TLS needs both tls_cert_file and tls_key_file" in problems
    assert any("spool_max_bytes must be at least twice spool_segment_bytes" in p for p in problems)
    assert any("tls_cert_file" in p and "does not exist" in p for p in problems)


def test_the_drain_process_gets_the_same_config_without_secrets(tmp_path: Path) -> None:
    config = CollectorConfig.build(
        {"auth_token": "secret", "data_dir": str(tmp_path / "d"), "batch_max_spans": "500"},
        env={"XDG_DATA_HOME": str(tmp_path)},
    )
    line = encode(DrainStart(config))
    assert "secret" not in line
    start = decode_command(line)
    assert isinstance(start, DrainStart)
    assert start.config == dataclasses.replace(config, auth_token=None)
    assert (start.config.data_dir, start.config.batch_max_spans) == (tmp_path / "d", 500)


def test_every_field_but_the_store_is_a_setting_and_its_choices_are_its_type() -> None:
    fields = {item.name for item in dataclasses.fields(CollectorConfig)}
    assert fields - {"store"} == {setting.name for setting in SETTINGS}
    choices = {setting.name: setting.choices for setting in SETTINGS if setting.kind == "choice"}
    assert choices == {
        "fsync": get_args(FsyncPolicy),
        "log_format": get_args(LogFormat),
        "log_level": get_args(LogLevel),
    }


def _written(setting: Setting) -> str:
    """A default as a user would write it in a flag or a variable."""
    value = setting.default
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # numbers as they are, strings quoted (TOML basic strings)


def test_flags_variables_file_cli_and_drain_process_read_the_same_defaults(tmp_path: Path) -> None:
    """One set of defaults: each source, given each default written out, builds the same configuration."""
    env = {"XDG_DATA_HOME": str(tmp_path)}
    defaults = CollectorConfig.build(env=env)
    assert defaults == CollectorConfig(store=defaults.store, data_dir=default_data_dir(env))
    given = [setting for setting in SETTINGS if setting.default is not None]
    assert len(given) >= 20  # every setting but the unset ones and the computed data directory

    # The CLI, with no flag given and with every default given as a flag.
    parser = build_parser()
    assert config_from_args(parser.parse_args(["collector"]), env=env) == defaults
    argv = ["collector"]
    for setting in given:
        if setting.kind == "bool":
            argv.append(setting.flag if setting.default else "--no-" + setting.flag[2:])
        else:
            argv += [setting.flag, _written(setting)]
    assert config_from_args(parser.parse_args(argv), env=env) == defaults

    # Flags as CollectorConfig.build takes them, the environment, and the TOML file.
    assert CollectorConfig.build({setting.name: _written(setting) for setting in given}, env=env) == defaults
    variables = {setting.env: _written(setting) for setting in given}
    assert CollectorConfig.build(env={**env, **variables}) == defaults
    config_file = tmp_path / "collector.toml"
    config_file.write_text(
        "[collector]\n" + "".join(f"{setting.name} = {_toml(setting.default)}\n" for setting in given)
    )
    assert CollectorConfig.build(env=env, config_file=config_file) == defaults

    # The drain process, a fresh interpreter whose own environment says otherwise: it reads
    # the configuration it is sent, not defaults (or variables) of its own.
    child = subprocess.run(
        [sys.executable, "-c", _ECHO_CONFIGURATION],
        input=encode(DrainStart(defaults)) + "\n",
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LLMLEDGER_COLLECTOR_BATCH_MAX_SPANS": "7", "XDG_DATA_HOME": str(tmp_path / "x")},
    )
    echoed = decode_command(child.stdout)
    assert isinstance(echoed, DrainStart)
    assert echoed.config == defaults


_ECHO_CONFIGURATION = """
import sys
from llmledger.exporter._internal.collector.drain_process import read_configuration
from llmledger.exporter._internal.collector.messages import DrainStart, encode
print(encode(DrainStart(read_configuration(sys.stdin))))
"""


def test_the_documented_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    """docs/collector.md's table says each default as the collector reads it."""
    text = (Path(__file__).parents[2] / "docs" / "collector.md").read_text()
    documented = {
        cells[1].strip(" `"): cells[4].strip(" `")
        for line in text.splitlines()
        if line.startswith("| `") and len(cells := line.split("|")) > 5 and cells[2].strip().startswith("`--")
    }
    assert set(documented) == {setting.name for setting in SETTINGS}
    env = {"XDG_DATA_HOME": str(tmp_path)}
    for setting in SETTINGS:
        if setting.default is None:
            continue  # unset (—), random per start, or the data directory (checked above)
        read = CollectorConfig.build({setting.name: documented[setting.name]}, env=env)
        assert getattr(read, setting.name) == setting.default, setting.name
