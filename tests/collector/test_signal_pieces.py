"""Splitting refused metrics and logs: every data point and log record kept once, as the rows it was.

The requests are drawn by hypothesis (several resources, scopes, every metric kind, times
over hundreds of days and at the ends of the uint64 range); the promise checked is the
one the drain relies on: the rows built from the parts are exactly the rows built from
the whole, and the same piece always splits the same way.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from llmledger.exporter._internal.collector.pieces import (
    LOG_REQUESTS,
    MAX_DAYS_PER_INSERT,
    METRIC_REQUESTS,
    TRACE_REQUESTS,
    Piece,
    RequestShape,
    SplitKind,
)
from llmledger.exporter._internal.log_rows import LogRows
from llmledger.exporter._internal.metric_rows import METRIC_TABLES, MetricRows

from .harness import make_logs_request, make_metrics_request

DAY_NS = 86_400 * 1_000_000_000
BASE = 1_767_225_600_000_000_000
KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
TOO_MANY_PARTITIONS = "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100)"

times = st.one_of(
    st.integers(0, 400).map(lambda days: BASE - days * DAY_NS),
    st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]),
)


@st.composite
def metrics_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    seq = 0
    for r in range(draw(st.integers(1, 3))):
        resource_metrics = request.resource_metrics.add()
        resource_metrics.schema_url = f"resource-{r}"
        kv = resource_metrics.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", f"svc-{r}"
        for s in range(draw(st.integers(1, 2))):
            scope_metrics = resource_metrics.scope_metrics.add()
            scope_metrics.scope.name, scope_metrics.schema_url = f"scope-{s}", f"scope-url-{s}"
            for m in range(draw(st.integers(0, 3))):
                metric = scope_metrics.metrics.add()
                metric.name, metric.unit, metric.description = f"m-{r}-{s}-{m}", "1", "d"
                kind = draw(st.sampled_from((*KINDS, None)))
                if kind is None:
                    continue  # a metric without data: no rows, and none in any part
                data: Any = getattr(metric, kind)
                if kind == "sum":
                    data.is_monotonic = True
                if kind != "gauge" and kind != "summary":
                    data.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
                data.SetInParent()
                for _ in range(draw(st.integers(0, 4))):
                    point = data.data_points.add()
                    attribute = point.attributes.add()
                    attribute.key, attribute.value.string_value = "seq", str(seq)
                    seq += 1
                    point.time_unix_nano = draw(times)
                    point.start_time_unix_nano = BASE
                    if kind in ("gauge", "sum"):
                        point.as_double = 1.5
                    elif kind == "histogram":
                        point.count, point.sum = 2, 3.0
                        point.explicit_bounds.extend([1.0, 2.0])
                        point.bucket_counts.extend([0, 2, 0])
                    elif kind == "exponential_histogram":
                        point.count, point.scale = 2, 3
                        point.positive.offset = 1
                        point.positive.bucket_counts.extend([1, 1])
                    else:
                        point.count, point.sum = 2, 3.0
                        quantile = point.quantile_values.add()
                        quantile.quantile, quantile.value = 0.5, 1.0
    return request


@st.composite
def logs_requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    seq = 0
    for r in range(draw(st.integers(1, 3))):
        resource_logs = request.resource_logs.add()
        kv = resource_logs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", f"svc-{r}"
        for s in range(draw(st.integers(1, 2))):
            scope_logs = resource_logs.scope_logs.add()
            scope_logs.scope.name = f"scope-{s}"
            for _ in range(draw(st.integers(0, 5))):
                record = scope_logs.log_records.add()
                record.body.string_value = f"record {seq}"
                seq += 1
                if draw(st.booleans()):
                    record.time_unix_nano = draw(times)
                else:
                    record.observed_time_unix_nano = draw(times)  # Timestamp falls back to it
    return request


def rows_of(shape: RequestShape, payloads: tuple[bytes | memoryview, ...]) -> list[str]:
    """Every row the drain would insert for ``payloads``, table by table, as sorted text."""
    if shape is METRIC_REQUESTS:
        metric_rows = MetricRows()
        for payload in payloads:
            metric_rows.add_otlp(ExportMetricsServiceRequest.FromString(bytes(payload)))
        return sorted(f"{table} {row!r}" for table in METRIC_TABLES for row in metric_rows.rows(table))
    log_rows = LogRows()
    for payload in payloads:
        log_rows.add_otlp(ExportLogsServiceRequest.FromString(bytes(payload)))
    return sorted(repr(row) for row in log_rows.rows())


def piece_of(shape: RequestShape, requests: list[Any]) -> Piece:
    payloads = tuple(request.SerializeToString() for request in requests)
    return Piece("llmledger-spool-x-1-0-99", payloads, shape.count(payloads))


def tables_in(piece: Piece) -> set[str]:
    return {row.split(" ", 1)[0] for row in rows_of(METRIC_REQUESTS, piece.payloads)}


def days_in(shape: RequestShape, piece: Piece) -> set[int]:
    nanos = {
        shape.item_nanos(item)
        for payload in piece.payloads
        for _, item in shape._items(shape.parse(payload))  # pyright: ignore[reportPrivateUsage]
    }
    return {(n - (1 << 64) if n >= 1 << 63 else n) // DAY_NS for n in nanos}


def leaves(shape: RequestShape, piece: Piece, kind: SplitKind) -> list[Piece]:
    """Split ``piece`` as the drain would if every part were refused, down to what cannot be split."""
    parts = shape.split(piece, kind)
    if not parts:
        return [piece]
    return [leaf for part in parts for leaf in leaves(shape, part, shape.split_kind(part, "refused"))]


def check_split(shape: RequestShape, requests: list[Any], kind: SplitKind) -> None:
    piece = piece_of(shape, requests)
    parts = shape.split(piece, kind)
    if parts:
        assert sorted(row for part in parts for row in rows_of(shape, part.payloads)) == rows_of(
            shape, piece.payloads
        )
        assert all(part.items == len(rows_of(shape, part.payloads)) for part in parts)
        assert len({part.token for part in parts}) == len(parts)
        assert all(part.token.startswith(f"{piece.token}/") for part in parts)
    else:
        assert piece.items <= 1 or kind == "tables"
    # A replay after a crash splits the same piece the same way: same tokens, same bytes.
    again = shape.split(piece, kind)
    assert [(p.token, p.dedup_token, p.payloads) for p in again] == [
        (p.token, p.dedup_token, p.payloads) for p in parts
    ]
    if kind == "tables" and len(tables_in(piece)) > 1:
        assert all(len(tables_in(part)) == 1 for part in parts)
        assert all(part.dedup_token == piece.dedup_token for part in parts)  # see the module doc
    if kind == "days" and len(days_in(shape, piece)) > MAX_DAYS_PER_INSERT:
        assert all(len(days_in(shape, part)) <= MAX_DAYS_PER_INSERT for part in parts)
        assert all(part.dedup_token == part.token for part in parts)
    everything = leaves(shape, piece, kind)
    assert sorted(row for leaf in everything for row in rows_of(shape, leaf.payloads)) == rows_of(
        shape, piece.payloads
    )
    assert all(leaf.items <= 1 for leaf in everything) or len(everything) == 1


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(metrics_requests(), min_size=1, max_size=3),
    kind=st.sampled_from(["days", "halves", "tables"]),
)
def test_a_metrics_split_keeps_every_data_point_once_as_the_row_it_was(
    requests: list[ExportMetricsServiceRequest], kind: SplitKind
) -> None:
    check_split(METRIC_REQUESTS, requests, kind)


@settings(max_examples=60, deadline=None)
@given(requests=st.lists(logs_requests(), min_size=1, max_size=3), kind=st.sampled_from(["days", "halves"]))
def test_a_logs_split_keeps_every_log_record_once_as_the_row_it_was(
    requests: list[ExportLogsServiceRequest], kind: SplitKind
) -> None:
    check_split(LOG_REQUESTS, requests, kind)


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=3),
    items=st.integers(0, 5),
    kind=st.sampled_from(["days", "halves", "tables"]),
)
def test_any_bytes_split_without_an_error(payloads: list[bytes], items: int, kind: SplitKind) -> None:
    """Spooled requests were validated on receipt, but the splitter trusts nothing it parses."""
    for shape in (TRACE_REQUESTS, METRIC_REQUESTS, LOG_REQUESTS):
        piece = Piece("t", tuple(payloads), items)
        for part in shape.split(piece, kind):
            assert part.token.startswith("t/")
        shape.split_kind(piece, "refused")


def test_a_metrics_piece_over_several_tables_is_split_by_table_first() -> None:
    histogram = make_metrics_request(3, seed=1)
    gauge = ExportMetricsServiceRequest()
    gauge.CopyFrom(histogram)
    metric = gauge.resource_metrics[0].scope_metrics[0].metrics[0]
    metric.ClearField("histogram")
    point = metric.gauge.data_points.add()
    point.as_int, point.time_unix_nano = 7, BASE
    piece = piece_of(METRIC_REQUESTS, [histogram, gauge])
    assert METRIC_REQUESTS.split_kind(piece, TOO_MANY_PARTITIONS) == "tables"
    by_table = METRIC_REQUESTS.split(piece, "tables")
    assert [(part.token, part.dedup_token, part.items) for part in by_table] == [
        (f"{piece.token}/gauge", piece.token, 1),
        (f"{piece.token}/histogram", piece.token, 3),
    ]
    # One table: by day or in halves as for traces, each part with a token of its own.
    assert METRIC_REQUESTS.split_kind(by_table[1], TOO_MANY_PARTITIONS) == "days"
    assert METRIC_REQUESTS.split_kind(by_table[1], "Code: 469. violated") == "halves"
    halves = METRIC_REQUESTS.split(by_table[1], "halves")
    assert [(part.token, part.dedup_token, part.items) for part in halves] == [
        (f"{piece.token}/histogram/0", f"{piece.token}/histogram/0", 1),
        (f"{piece.token}/histogram/1", f"{piece.token}/histogram/1", 2),
    ]
    first = ExportMetricsServiceRequest.FromString(bytes(halves[1].payloads[0]))
    kept = first.resource_metrics[0].scope_metrics[0].metrics[0]
    assert (kept.name, kept.unit, kept.histogram.aggregation_temporality) == (
        "gen_ai.client.token.usage",
        "{token}",
        AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
    )


def test_logs_over_120_days_are_split_in_groups_of_days() -> None:
    request = make_logs_request(120, seed=3)
    for index, record in enumerate(request.resource_logs[0].scope_logs[0].log_records):
        record.time_unix_nano -= index * DAY_NS
    piece = piece_of(LOG_REQUESTS, [request])
    assert LOG_REQUESTS.split_kind(piece, TOO_MANY_PARTITIONS) == "days"
    parts = LOG_REQUESTS.split(piece, "days")
    assert [(part.token, part.items) for part in parts] == [
        (f"{piece.token}/d0", 45),
        (f"{piece.token}/d1", 45),
        (f"{piece.token}/d2", 30),
    ]
