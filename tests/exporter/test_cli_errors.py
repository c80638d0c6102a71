"""CLI error paths: each says what went wrong and what to do next, with a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmledger.exporter import StoreConfig

LLMLEDGER = str(Path(sys.executable).parent / "llmledger")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMLEDGER, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.subprocess
def test_unreachable_server() -> None:
    done = _cli("report", "--url", "http://127.0.0.1:9/llmledger")
    assert done.returncode == 2
    assert "cannot open the llmledger store http://127.0.0.1:9/llmledger" in done.stderr
    assert "check that the ClickHouse server is up" in done.stderr
    assert "Retrying" not in done.stderr  # the driver's per-attempt noise stays out


@pytest.mark.subprocess
def test_locked_embedded_store_names_its_holder(store_url: str, store_client: object) -> None:
    if not store_url.startswith("chdb://"):
        pytest.skip("the session store is a server")
    done = _cli("sql", "SELECT 1", "--url", store_url)
    assert done.returncode == 2
    assert f"is open in another process (PID {os.getpid()}) that does not serve it" in done.stderr
    assert "llmledger collector" in done.stderr  # what to do next
    assert "Cannot lock file" not in done.stderr  # chDB's own message never reaches the terminal


@pytest.mark.subprocess
def test_bad_url_and_ttl_reported_together() -> None:
    done = _cli("report", env={"LLMLEDGER_CLICKHOUSE_URL": "ftp://x", "LLMLEDGER_SPANS_TTL_DAYS": "soon"})
    assert done.returncode == 2
    assert "store URL 'ftp://x' must start with http://, https:// or chdb://" in done.stderr
    assert "LLMLEDGER_SPANS_TTL_DAYS='soon' is not a whole number of days" in done.stderr


def test_unknown_column(config: StoreConfig, capsys: pytest.CaptureFixture[str]) -> None:
    from llmledger.exporter.cli import main

    code = main(
        ["sql", "SELECT no_such_column FROM llm_calls", "--url", config.url, "--database", config.database]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "no_such_column" in err
    assert "DESCRIBE llm_calls" in err  # where to look for the right names
