"""Collector configuration: defaults < TOML file < environment < flags, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmledger.exporter._internal.collector import SETTINGS, CollectorConfig
from llmledger.exporter._internal.config import ConfigError


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
    copy = CollectorConfig.from_json(config.to_json())
    assert "secret" not in config.to_json()
    assert copy.auth_token is None
    assert (copy.data_dir, copy.batch_max_spans, copy.store) == (tmp_path / "d", 500, config.store)


def test_every_setting_is_a_field_with_its_default() -> None:
    defaults = CollectorConfig.__dataclass_fields__
    for setting in SETTINGS:
        assert setting.name in defaults
        field_default = defaults[setting.name].default
        if setting.default is not None:
            assert field_default == setting.default, setting.name
