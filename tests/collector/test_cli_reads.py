"""While the collector owns an embedded store, the CLI's read commands go through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from .harness import CollectorProcess, make_request, wait_for

LLMLEDGER = str(Path(sys.executable).parent / "llmledger")


def _cli(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMLEDGER_CLICKHOUSE_URL": store}
    return subprocess.run(
        [LLMLEDGER, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_sql_and_report_read_through_the_running_collector(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    collector = CollectorProcess(tmp_path / "data", store).start()
    try:
        for seed, tenant in ((1, "acme"), (2, "globex")):
            status, _, body = collector.post_traces(make_request(40, seed, tenant=tenant).SerializeToString())
            assert status == 200, body
        wait_for(lambda: collector.metric("written_spans_total") >= 80, 30, "the spans written")

        sql = _cli(
            "sql",
            "SELECT tenant_id, count() AS n FROM llm_calls GROUP BY tenant_id ORDER BY tenant_id",
            "--format",
            "json",
            store=store,
        )
        assert sql.returncode == 0, sql.stderr
        assert json.loads(sql.stdout) == [{"tenant_id": "acme", "n": 40}, {"tenant_id": "globex", "n": 40}]

        report = _cli("report", "--by", "tenant", "--format", "json", store=store)
        assert report.returncode == 0, report.stderr
        by_tenant = {row["tenant"]: row for row in json.loads(report.stdout)}
        assert by_tenant["acme"]["calls"] == 40
        assert Decimal(by_tenant["acme"]["cost_usd"]) == Decimal("0.000435") * 40

        bad = _cli("sql", "SELECT nope FROM llm_calls", store=store)
        assert bad.returncode != 0
        assert "nope" in bad.stderr
    finally:
        assert collector.stop() == 0, collector.log()
