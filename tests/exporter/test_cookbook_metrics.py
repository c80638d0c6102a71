"""The cookbook's metrics queries answer correctly on metrics the OpenTelemetry SDK recorded (and on cumulative
series that began before the window)."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.metric_rows import MetricRows
from llmledger.exporter._internal.store import run_query

from .test_cookbook import BLOCKS

QUERIES = {title: sql for title, sql in BLOCKS if title.startswith("Metrics:")}
DURATION_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12]


def answer(client: Client, config: StoreConfig, title: str) -> list[dict[str, Any]]:
    client.database = config.database
    try:
        return [
            dict(row) for row in run_query(client, QUERIES[title], settings={"readonly": 1}).named_results()
        ]
    finally:
        client.database = "default"


@pytest.fixture
def recorded(config: StoreConfig, store_client: Client) -> StoreConfig:
    """Two processes' metrics, each exported twice (cumulative), as the SDK makes them."""
    for process, (fast, slow) in enumerate(((10, 0), (0, 10))):
        reader = InMemoryMetricReader()
        provider = MeterProvider([reader], resource=Resource.create({"service.name": "app"}))
        meter = provider.get_meter("llmledger.instrumentation")
        tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
        duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BOUNDS
        )
        cost = meter.create_counter("llmledger.client.cost", unit="USD")
        for export in range(2):
            for _ in range(fast):
                duration.record(0.05, {"gen_ai.request.model": "gpt-4o-mini"})
            for _ in range(slow):
                duration.record(0.5, {"gen_ai.request.model": "gpt-4o-mini"})
            duration.record(3.0, {"gen_ai.request.model": "gpt-4o"})
            tokens.record(100, {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.token.type": "input"})
            tokens.record(20, {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.token.type": "output"})
            cost.add(0.125, {"gen_ai.request.model": "gpt-4o-mini"})
            data = reader.get_metrics_data()
            assert data is not None
            rows = MetricRows()
            rows.add_otlp(encode_metrics(data))
            rows.write(store_client, config.database, f"process-{process}-export-{export}")
        provider.shutdown()
    return config


def test_tokens_by_model_and_type(recorded: StoreConfig, store_client: Client) -> None:
    rows = answer(store_client, recorded, "Metrics: tokens by model and type, last 24 hours")
    # Each process recorded 100 + 100 input tokens; the second export's cumulative row holds both.
    assert rows == [
        {"model": "gpt-4o-mini", "token_type": "input", "tokens": 400.0},
        {"model": "gpt-4o-mini", "token_type": "output", "tokens": 80.0},
    ]


def test_latency_quantiles_from_buckets(recorded: StoreConfig, store_client: Client) -> None:
    rows = answer(store_client, recorded, "Metrics: latency quantiles by model from the histogram buckets")
    by_model = {row["model"]: row for row in rows}
    assert by_model["gpt-4o-mini"]["calls"] == 40
    # 20 calls in (0.04, 0.08], 20 in (0.32, 0.64]: the median is the first bucket's top,
    # p95 sits 90 % into the second bucket.
    p50, p95, p99 = by_model["gpt-4o-mini"]["p50_p95_p99_s"]
    assert p50 == pytest.approx(0.08)
    assert p95 == pytest.approx(0.32 + 0.32 * 0.9)
    assert p99 == pytest.approx(0.32 + 0.32 * 0.98)
    assert by_model["gpt-4o"]["calls"] == 4
    assert by_model["gpt-4o"]["p50_p95_p99_s"][0] == pytest.approx(2.56 + 2.56 * 0.5)


def test_cost_counter_by_model(recorded: StoreConfig, store_client: Client) -> None:
    rows = answer(store_client, recorded, "Metrics: cost counter by model, last 24 hours")
    assert rows == [{"model": "gpt-4o-mini", "usd": 0.5}]


def cumulative_point(request: ExportMetricsServiceRequest, at_ns: int, start_ns: int, total: float) -> None:
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    point = metric.sum.data_points.add()
    point.start_time_unix_nano, point.time_unix_nano, point.as_double = start_ns, at_ns, total
    attribute = point.attributes.add()
    attribute.key, attribute.value.string_value = "gen_ai.request.model", "gpt-4o"


def test_a_series_that_began_before_the_window_counts_only_what_it_added(
    config: StoreConfig, store_client: Client
) -> None:
    now = time.time_ns()
    hour = 3600 * 10**9
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.scope_metrics.add().metrics.add(name="llmledger.client.cost", unit="USD")
    metric = resource_metrics.scope_metrics[0].metrics[0]
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    start = now - 30 * hour
    cumulative_point(request, now - 24 * hour - hour // 2, start, 10.0)  # before the window: 10 USD so far
    cumulative_point(request, now - 2 * hour, start, 12.5)
    cumulative_point(request, now - hour, start, 13.0)  # 3 USD added in the window
    rows = MetricRows()
    rows.add_otlp(request)
    rows.write(store_client, config.database, "window")
    (row,) = answer(store_client, config, "Metrics: cost counter by model, last 24 hours")
    assert row["model"] == "gpt-4o"
    assert math.isclose(row["usd"], 3.0)
