"""The direct span exporter: in process, under opentelemetry-instrument, and when the store is unusable."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from llmledger.exporter import ClickHouseSpanExporter, StoreConfig

BIN = Path(sys.executable).parent
EMBEDDED_ONLY = pytest.mark.skipif(
    bool(os.environ.get("LLMLEDGER_TEST_CLICKHOUSE_URL")), reason="about the embedded store's lock"
)


def child_env(store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMLEDGER_"))}
    env.update(LLMLEDGER_CLICKHOUSE_URL=f"chdb://{store}", **extra)
    return env


def test_exports_spans_and_applies_the_schema_itself(blank_config: StoreConfig, recorder, query) -> None:
    exporter = ClickHouseSpanExporter(blank_config)
    recorder.call(
        "chat gpt-4o-mini",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "tenant.id": "acme",
            "gen_ai.usage.input_tokens": 7,
            "gen_ai.usage.output_tokens": 3,
        },
    )
    assert exporter.export(recorder.finished()) is SpanExportResult.SUCCESS
    assert exporter.export(recorder.finished()) is SpanExportResult.SUCCESS  # a retry: deduplicated
    exporter.shutdown()
    assert query(f"SELECT tenant_id, input_tokens, output_tokens FROM {blank_config.database}.llm_calls") == [
        {"tenant_id": "acme", "input_tokens": 7, "output_tokens": 3}
    ]
    assert exporter.export(recorder.finished()) is SpanExportResult.FAILURE  # after shutdown


def test_an_unreachable_store_fails_the_export_quietly_and_logs_once(recorder, caplog) -> None:
    exporter = ClickHouseSpanExporter(StoreConfig(url="http://127.0.0.1:9/nowhere"))
    recorder.call("chat", {"gen_ai.operation.name": "chat"})
    with caplog.at_level(logging.DEBUG, logger="llmledger.exporter"):
        results = [exporter.export(recorder.finished()) for _ in range(3)]
    assert results == [SpanExportResult.FAILURE] * 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "could not write 1 span(s)" in errors[0].getMessage()
    # The store is not tried again on every batch: the later failures fail fast.
    causes = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert len(causes) == 2
    assert all("not retrying the store" in cause for cause in causes)
    exporter.shutdown()


APP = textwrap.dedent(
    """
    from opentelemetry import trace

    tracer = trace.get_tracer("child.app")
    for i in range(3):
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT) as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 10, "gen_ai.usage.cost": 0.25, "tenant.id": "acme",
            })
    print("app done")
    """
)


@pytest.mark.subprocess
def test_opentelemetry_instrument_writes_straight_to_the_store(tmp_path: Path, tmp_store_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = child_env(
        tmp_store_path,
        OTEL_TRACES_EXPORTER="llmledger",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="child-app",
    )
    run = subprocess.run(
        [BIN / "opentelemetry-instrument", sys.executable, app],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "app done" in run.stdout

    # The child owned the store while it ran; read it back once it has exited (on shutdown it flushed).
    read = subprocess.run(
        [
            BIN / "llmledger",
            "sql",
            "--format",
            "json",
            "SELECT ServiceName, tenant_id, input_tokens, cost_usd FROM llm_calls ORDER BY input_tokens",
        ],
        env=child_env(tmp_store_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == [
        {
            "ServiceName": "child-app",
            "tenant_id": "acme",
            "input_tokens": 100 + i,
            "cost_usd": "0.250000000000",
        }
        for i in range(3)
    ]


@EMBEDDED_ONLY
@pytest.mark.subprocess
def test_a_locked_embedded_store_gets_a_clear_error(store_client, store_url: str) -> None:
    # This test process owns the session store; another process cannot open it.
    path = store_url.removeprefix("chdb://")
    run = subprocess.run(
        [BIN / "llmledger", "schema", "status", "--url", store_url],
        env=child_env(Path(path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    assert (
        f"the embedded llmledger store at {path} is in use by another process (held by PID {os.getpid()})"
        in run.stderr
    )
    assert "LLMLEDGER_CLICKHOUSE_URL" in run.stderr
