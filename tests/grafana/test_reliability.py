"""Reliability: latency and time to first chunk from the rollup's t-digests, errors, fallbacks."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from grafana.panel_sql import ALL, VariableValue
from llmledger.exporter._internal.metric_rows import MetricRows
from tests.grafana.conftest import Seeded, only
from tests.grafana.seed import RANGE_END, RANGE_START, SeedCall, in_calls_range, in_rollup_range

UID = "llmledger-reliability"


def _calls(seeded: Seeded, tenant: VariableValue = ALL) -> list[SeedCall]:
    return seeded.data.select(
        lambda c: in_rollup_range(c, RANGE_START, RANGE_END) and (tenant == ALL or c.tenant in tenant)
    )


@pytest.mark.parametrize("tenant", [ALL, ["acme"], ["acme", "globex"]])
def test_calls_errors_and_fallbacks(seeded: Seeded, tenant: VariableValue) -> None:
    row = only(seeded.panel_rows(UID, "Calls, errors and fallbacks", seeded.context(tenant=tenant)))
    calls = _calls(seeded, tenant)
    assert row["calls"] == len(calls)
    assert row["error_rate"] == pytest.approx(sum(not c.success for c in calls) / len(calls))
    assert row["fallback_rate"] == pytest.approx(sum(c.fallback_attempt > 0 for c in calls) / len(calls))
    assert 0 < row["fallback_rate"] < row["error_rate"] < 0.2


def _quantile(values: list[int], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def test_latency_and_ttft_quantiles_by_model(seeded: Seeded) -> None:
    rows = {
        r["model"]: r
        for r in seeded.panel_rows(UID, "Latency and time to first chunk by model", seeded.context())
    }
    calls = _calls(seeded)
    assert set(rows) == {c.model for c in calls}
    for model, row in rows.items():
        mine = [c for c in calls if c.model == model]
        durations = [c.duration_ms for c in mine]
        assert row["calls"] == len(mine)
        # t-digest quantiles are estimates: within a few percent of the exact ones here.
        assert row["p50_ms"] == pytest.approx(statistics.median(durations), rel=0.06)
        assert row["p95_ms"] == pytest.approx(_quantile(durations, 0.95), rel=0.1)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= max(durations) * 1.01
        ttfts = [c.ttft_ms for c in mine if c.ttft_ms is not None]
        if ttfts:
            assert row["ttft_p50_ms"] == pytest.approx(statistics.median(ttfts), rel=0.06)
            assert row["ttft_p50_ms"] <= row["ttft_p95_ms"] <= row["ttft_p99_ms"] <= max(ttfts) * 1.01
        else:  # no streams: no time to first chunk, rather than 0
            assert row["ttft_p50_ms"] is None
            assert row["ttft_p99_ms"] is None
    assert rows["gpt-4o-mini"]["ttft_p50_ms"] is not None


def test_p95_over_time_only_where_there_are_values(seeded: Seeded) -> None:
    context = seeded.context(interval=timedelta(days=1))
    latency = seeded.panel_rows(UID, "p95 latency by model", context)
    ttft = seeded.panel_rows(UID, "p95 time to first chunk by model", context)
    assert {r["model"] for r in latency} == {c.model for c in _calls(seeded)}
    assert {r["model"] for r in ttft} == {c.model for c in _calls(seeded) if c.ttft_ms is not None}
    assert all(r["p95_ms"] > 0 for r in latency)
    assert all(r["ttft_p95_ms"] > 0 for r in ttft)


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)


def test_error_and_fallback_rate_over_time(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Error and fallback rate", seeded.context(interval=timedelta(days=1)))
    by_day: dict[datetime, list[SeedCall]] = defaultdict(list)
    for call in _calls(seeded):
        by_day[_day(call.at)].append(call)
    assert [r["time"] for r in rows] == sorted(by_day)
    for r in rows:
        day = by_day[r["time"]]
        assert r["error_rate"] == pytest.approx(sum(not c.success for c in day) / len(day))
        assert r["fallback_rate"] == pytest.approx(sum(c.fallback_attempt > 0 for c in day) / len(day))


def test_error_rate_by_type(seeded: Seeded) -> None:
    rows = seeded.panel_rows(UID, "Error rate by error type", seeded.context(interval=timedelta(days=1)))
    by_day: dict[datetime, list[SeedCall]] = defaultdict(list)
    for call in _calls(seeded):
        by_day[_day(call.at)].append(call)
    expected = {
        (day, error): count / len(calls)
        for day, calls in by_day.items()
        for error, count in Counter(c.error for c in calls if c.error).items()
    }
    assert {(r["time"], r["error_type"]): r["error_rate"] for r in rows} == pytest.approx(expected)
    assert {r["error_type"] for r in rows} == {"RateLimitError", "APITimeoutError", "InternalServerError"}


@pytest.mark.parametrize("model", [ALL, ["gpt-4o-mini"]])
def test_errors_by_type_and_model(seeded: Seeded, model: VariableValue) -> None:
    rows = seeded.panel_rows(UID, "Errors by type and model", seeded.context(model=model))
    calls = seeded.data.select(
        lambda c: in_calls_range(c, RANGE_START, RANGE_END) and (model == ALL or c.model in model)
    )
    errors = Counter((c.error, c.model) for c in calls if c.error)
    assert {(r["error_type"], r["model"]): r["errors"] for r in rows} == dict(errors)
    totals = Counter(c.model for c in calls)
    for r in rows:
        assert r["calls"] == totals[r["model"]]
        assert r["error_rate"] == pytest.approx(r["errors"] / totals[r["model"]])
    assert [r["errors"] for r in rows] == sorted((r["errors"] for r in rows), reverse=True)


def _expected_pairs(
    calls: list[SeedCall], model: VariableValue
) -> dict[tuple[str, str, str], tuple[int, int]]:
    by_attempt = {(c.trace_id, c.fallback_attempt): c for c in calls}
    pairs: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for call in calls:
        if call.fallback_attempt == 0 or not in_calls_range(call, RANGE_START, RANGE_END):
            continue
        previous = by_attempt[call.trace_id, call.fallback_attempt - 1]
        if model != ALL and previous.model not in model and call.model not in model:
            continue
        counts = pairs[previous.model, previous.error or "", call.model]
        counts[0] += 1
        counts[1] += call.success
    return {key: (n, ok) for key, (n, ok) in pairs.items()}


@pytest.mark.parametrize("model", [ALL, ["mistral-small"]])
def test_which_models_fall_back_to_which(seeded: Seeded, model: VariableValue) -> None:
    rows = seeded.panel_rows(UID, "Which models fall back to which", seeded.context(model=model))
    expected = _expected_pairs(seeded.data.calls, model)
    got = {
        (r["from_model"], r["from_error"], r["to_model"]): (r["fallbacks"], r["fallback_succeeded"])
        for r in rows
    }
    assert got == expected
    if model == ALL:
        assert set(got) == {
            ("gpt-4o-2024-08-06", "RateLimitError", "gpt-4o-mini"),
            ("gpt-4o-mini", "APITimeoutError", "mistral-small"),
        }
        # Attempt 1 failed whenever attempt 2 exists; attempt 2 always succeeded.
        assert (
            got["gpt-4o-mini", "APITimeoutError", "mistral-small"][1]
            == got["gpt-4o-mini", "APITimeoutError", "mistral-small"][0]
        )
    for r in rows:
        assert r["success_rate"] == pytest.approx(r["fallback_succeeded"] / r["fallbacks"])


# -- the SDK's own duration histogram (otel_metrics_histogram) ----------------------------------

DURATION_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


def _duration_request(
    model: str, start: datetime, points: list[tuple[datetime, list[int]]]
) -> ExportMetricsServiceRequest:
    """One cumulative series: (time, bucket counts so far) per export."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = "billing-api"
    metric = resource_metrics.scope_metrics.add().metrics.add(
        name="gen_ai.client.operation.duration", unit="s"
    )
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for at, counts in points:
        point = metric.histogram.data_points.add()
        point.attributes.add(key="gen_ai.request.model").value.string_value = model
        point.start_time_unix_nano = int(start.timestamp()) * 10**9
        point.time_unix_nano = int(at.timestamp()) * 10**9
        point.explicit_bounds.extend(DURATION_BOUNDS)
        point.bucket_counts.extend(counts)
        point.count = sum(counts)
    return request


def _buckets(**by_index: int) -> list[int]:
    counts = [0] * (len(DURATION_BOUNDS) + 1)
    for index, count in by_index.items():
        counts[int(index.removeprefix("b"))] = count
    return counts


def test_latency_from_the_sdk_histograms(seeded: Seeded) -> None:
    started = RANGE_START - timedelta(hours=3)
    rows = MetricRows()
    # Began before the range with 50 calls in (0.08, 0.16]; in the range it adds 10 there
    # and 10 in (0.32, 0.64].
    rows.add_otlp(_duration_request("gpt-4o-mini", started, [
        (RANGE_START - timedelta(minutes=1), _buckets(b4=50)),
        (RANGE_START + timedelta(hours=5), _buckets(b4=55, b6=5)),
        (RANGE_START + timedelta(hours=6), _buckets(b4=60, b6=10)),
    ]))  # fmt: skip
    # A second model whose series began in the range; its point after the range does not count.
    rows.add_otlp(_duration_request("gpt-4o", RANGE_START, [
        (RANGE_START + timedelta(days=1), _buckets(b9=4)),
        (RANGE_END + timedelta(hours=1), _buckets(b9=40)),
    ]))  # fmt: skip
    rows.write(seeded.client, seeded.database, "reliability-sdk-histograms")
    title = "Latency by model from the SDK's histograms"
    by_model = {r["model"]: r for r in seeded.panel_rows(UID, title, seeded.context())}
    assert set(by_model) == {"gpt-4o-mini", "gpt-4o"}
    mini = by_model["gpt-4o-mini"]
    assert mini["calls"] == 20
    assert mini["p50_ms"] == pytest.approx(160.0)  # the top of (0.08, 0.16]: half the calls are in it
    assert mini["p95_ms"] == pytest.approx(320 + 320 * 0.9)
    assert by_model["gpt-4o"]["calls"] == 4
    assert by_model["gpt-4o"]["p50_ms"] == pytest.approx(2560 + 2560 * 0.5)
    only_4o = seeded.panel_rows(UID, title, seeded.context(model=["gpt-4o"]))
    assert [r["model"] for r in only_4o] == ["gpt-4o"]
