"""The direct metrics exporter: in process, under opentelemetry-instrument beside the span exporter, and failing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from llmledger.exporter import ClickHouseMetricExporter, StoreConfig
from tests.fake_openai_server import fake_openai_server

from .test_span_exporter import BIN, child_env


def test_metrics_land_in_the_collector_tables(config: StoreConfig, query) -> None:
    exporter = ClickHouseMetricExporter(config)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider([reader], resource=Resource.create({"service.name": "direct-metrics"}))
    meter = provider.get_meter("llmledger.instrumentation", "0.1.0")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(120, {"gen_ai.token.type": "input"})
    tokens.record(30, {"gen_ai.token.type": "output"})
    meter.create_counter("llmledger.client.cost", unit="USD").add(0.000435)
    provider.force_flush()

    db = config.database
    rows = query(
        f"SELECT MetricName, Attributes['gen_ai.token.type'] AS type, Count, Sum, ServiceName, ScopeName "
        f"FROM {db}.otel_metrics_histogram ORDER BY type"
    )
    assert rows == [
        {"MetricName": "gen_ai.client.token.usage", "type": t, "Count": 1, "Sum": s, "ServiceName": "direct-metrics",
         "ScopeName": "llmledger.instrumentation"}
        for t, s in (("input", 120.0), ("output", 30.0))
    ]  # fmt: skip
    (cost,) = query(f"SELECT Value, IsMonotonic, AggregationTemporality FROM {db}.otel_metrics_sum")
    assert cost == {"Value": 0.000435, "IsMonotonic": True, "AggregationTemporality": 2}

    provider.shutdown()  # a second collection: cumulative totals, a new row per point
    assert query(f"SELECT count() AS n FROM {db}.otel_metrics_histogram") == [{"n": 4}]


def test_a_repeated_export_is_written_once(config: StoreConfig, query) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], resource=Resource.create({"service.name": "retried"}))
    provider.get_meter("m").create_counter("requests").add(3)
    data = reader.get_metrics_data()
    assert data is not None
    exporter = ClickHouseMetricExporter(config)
    assert exporter.export(data) is MetricExportResult.SUCCESS
    assert exporter.export(data) is MetricExportResult.SUCCESS  # a retry after a timeout
    assert query(f"SELECT count() AS n FROM {config.database}.otel_metrics_sum") == [{"n": 1}]
    exporter.shutdown()
    assert exporter.export(data) is MetricExportResult.FAILURE
    provider.shutdown()


def test_an_unusable_store_fails_the_export_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    exporter = ClickHouseMetricExporter(StoreConfig(url=f"chdb://{blocker / 'store'}"))
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader])
    provider.get_meter("m").create_counter("requests").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    with caplog.at_level(logging.DEBUG, logger="llmledger.exporter._internal.metric_exporter"):
        assert exporter.export(data) is MetricExportResult.FAILURE
        assert exporter.export(data) is MetricExportResult.FAILURE  # fails fast, not logged again
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "could not write metrics to the store" in errors[0].getMessage()
    provider.shutdown()


APP = textwrap.dedent(
    """
    import openai
    from llmledger.instrumentation import attribution

    client = openai.OpenAI(max_retries=0)
    with attribution(tenant_id="acme", feature="lead_scoring"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    print("app done")
    """
)


@pytest.mark.subprocess
def test_traces_and_metrics_straight_to_the_store_print_nothing(
    tmp_path: Path, tmp_store_path: Path, tiktoken_offline: Path
) -> None:
    """``OTEL_TRACES_EXPORTER=llmledger OTEL_METRICS_EXPORTER=llmledger opentelemetry-instrument``: no collector."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    with fake_openai_server() as base_url:
        env = child_env(
            tmp_store_path,
            OTEL_TRACES_EXPORTER="llmledger",
            OTEL_METRICS_EXPORTER="llmledger",
            OTEL_SERVICE_NAME="direct-app",
            OPENAI_BASE_URL=base_url,
            OPENAI_API_KEY="sk-test",
            TIKTOKEN_CACHE_DIR=str(tiktoken_offline),
        )
        run = subprocess.run(
            [BIN / "opentelemetry-instrument", sys.executable, app],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == "app done\n"
    assert run.stderr == ""  # no export error, no warning: nothing at all

    def sql(statement: str) -> list[dict[str, object]]:
        done = subprocess.run(
            [BIN / "llmledger", "sql", "--format", "json", statement],
            env=child_env(tmp_store_path), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    calls = sql("SELECT count() AS n, sum(cost_usd) AS cost FROM llm_calls WHERE ServiceName = 'direct-app'")
    assert calls[0]["n"] == 2
    histograms = sql(
        "SELECT MetricName AS name, sum(Count) AS n FROM otel_metrics_histogram "
        "WHERE ServiceName = 'direct-app' GROUP BY name ORDER BY name"
    )
    assert histograms == [
        {"name": "gen_ai.client.operation.duration", "n": 2},
        {"name": "gen_ai.client.token.usage", "n": 3},  # chat: input and output; embeddings: input
    ]
    costs = sql(
        "SELECT Attributes['gen_ai.operation.name'] AS operation, Value AS usd FROM otel_metrics_sum "
        "WHERE MetricName = 'llmledger.client.cost' AND ServiceName = 'direct-app' ORDER BY operation"
    )
    assert [row["operation"] for row in costs] == ["chat", "embeddings"]
    # The counter is a double on the wire (OTLP); the calls' exact Decimal total agrees to the last cent fraction.
    total = sum(Decimal(str(row["usd"])) for row in costs)
    assert abs(total - Decimal(str(calls[0]["cost"]))) < Decimal("1e-12")
