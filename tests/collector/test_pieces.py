"""Splitting a refused batch: by day for too many partitions, else halves; every span kept once, tokens fixed."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.collector.pieces import (
    MAX_DAYS_PER_INSERT,
    TRACE_REQUESTS,
    Piece,
    SplitKind,
    refusal_reason,
    unexplained_error,
)

from .harness import make_request, span_ids

DAY_NS = 86_400 * 1_000_000_000
TOO_MANY_PARTITIONS = DatabaseError(
    "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). (TOO_MANY_PARTS)"
)


def split(piece: Piece, kind: SplitKind) -> list[Piece]:
    return TRACE_REQUESTS.split(piece, kind)


def piece_of(requests: list[ExportTraceServiceRequest]) -> Piece:
    return Piece(
        "spool-x-1-0-99",
        tuple(r.SerializeToString() for r in requests),
        sum(len(span_ids(r)) for r in requests),
    )


def ids(piece: Piece) -> list[str]:
    return [
        i
        for payload in piece.payloads
        for i in span_ids(ExportTraceServiceRequest.FromString(bytes(payload)))
    ]


def days(piece: Piece) -> set[int]:
    return {
        span.start_time_unix_nano // DAY_NS
        for payload in piece.payloads
        for rs in ExportTraceServiceRequest.FromString(bytes(payload)).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }


@settings(max_examples=40, deadline=None)
@given(
    requests=st.integers(1, 4), spans=st.integers(1, 60), spread=st.integers(1, 400), seed=st.integers(0, 99)
)
def test_a_day_split_keeps_every_span_once_under_the_partition_limit(
    requests: int, spans: int, spread: int, seed: int
) -> None:
    batch = [make_request(spans, seed=seed + n, attributes=3) for n in range(requests)]
    for n, request in enumerate(batch):
        for index, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
            span.start_time_unix_nano -= ((index * 7 + n) % spread) * DAY_NS
    piece = piece_of(batch)
    parts = split(piece, "days")
    if not parts:  # one span: nothing to split (it goes to the dead-letter file)
        assert piece.items == 1
        return
    assert sorted(i for part in parts for i in ids(part)) == sorted(ids(piece))
    assert all(part.items == len(ids(part)) for part in parts)
    if len(days(piece)) > MAX_DAYS_PER_INSERT:
        assert all(len(days(part)) <= MAX_DAYS_PER_INSERT for part in parts)
        assert [part.token for part in parts] == [f"{piece.token}/d{n}" for n in range(len(parts))]
    # The same content splits the same way: a replay after a crash repeats the tokens.
    assert [(p.token, p.payloads) for p in split(piece, "days")] == [(p.token, p.payloads) for p in parts]


def test_halves_go_down_to_a_single_span_and_keep_resource_and_scope() -> None:
    piece = piece_of([make_request(3, seed=5, service="svc")])
    first, second = split(piece, "halves")
    assert (first.token, second.token, first.items, second.items) == (
        f"{piece.token}/0",
        f"{piece.token}/1",
        1,
        2,
    )
    request = ExportTraceServiceRequest.FromString(bytes(second.payloads[0]))
    assert request.resource_spans[0].resource.attributes[0].value.string_value == "svc"
    assert request.resource_spans[0].scope_spans[0].scope.name == "llmledger"
    assert split(first, "halves") == []
    several = piece_of([make_request(2, seed=n) for n in range(5)])
    assert [len(part.payloads) for part in split(several, "halves")] == [2, 3]


def test_an_unparseable_request_is_split_from_the_others_and_has_no_parts_alone() -> None:
    piece = Piece("t", (b"\x0a\xff", make_request(2, seed=1).SerializeToString()), 3)
    assert [part.payloads for part in split(piece, "halves")] == [(b"\x0a\xff",), piece.payloads[1:]]
    assert split(Piece("t", (b"\x0a\xff",), 1), "halves") == []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TOO_MANY_PARTITIONS, "Too many partitions"),
        (
            DatabaseError("Code: 469. DB::Exception: Constraint `c` is violated. (VIOLATED_CONSTRAINT)"),
            "Constraint",
        ),
        (OverflowError("int too big to convert"), "OverflowError: int too big to convert"),
        (
            DatabaseError("Code: 252. DB::Exception: Too many parts (300) in partition. (TOO_MANY_PARTS)"),
            None,
        ),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"), None),
        (OperationalError("connection refused"), None),
        (OSError(28, "No space left on device"), None),
        (RuntimeError("something else"), None),
    ],
)
def test_only_refusals_about_the_data_are_split(error: Exception, reason: str | None) -> None:
    found = refusal_reason(error)
    assert found is None if reason is None else reason in (found or "")


@pytest.mark.parametrize(
    ("error", "unexplained"),
    [
        (DatabaseError("Code: 153. DB::Exception: Division by zero. (ILLEGAL_DIVISION)"), True),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"), True),  # smaller parts help
        (DatabaseError("Code: 469. DB::Exception: Constraint `c` is violated. (VIOLATED_CONSTRAINT)"), False),
        (DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB. (NOT_ENOUGH_SPACE)"), False),
        (
            DatabaseError("Code: 252. DB::Exception: Too many parts (300) in partition. (TOO_MANY_PARTS)"),
            False,
        ),
        (
            DatabaseError("Code: 60. DB::Exception: Unknown table llmledger.otel_traces. (UNKNOWN_TABLE)"),
            False,
        ),
        (OperationalError("Code: 210. connection refused"), False),
        (OSError(28, "No space left on device"), False),
        (RuntimeError("something without a code"), False),
    ],
)
def test_an_error_naming_neither_the_data_nor_the_store_is_unexplained(
    error: Exception, unexplained: bool
) -> None:
    found = unexplained_error(error)
    assert (found is not None) is unexplained
    if found is not None:
        assert "\n" not in found
        assert found.startswith("Code:")


def test_too_many_partitions_splits_by_day_anything_else_in_halves() -> None:
    piece = piece_of([make_request(2, seed=1)])
    assert TRACE_REQUESTS.split_kind(piece, refusal_reason(TOO_MANY_PARTITIONS) or "") == "days"
    assert TRACE_REQUESTS.split_kind(piece, "Code: 469. constraint violated") == "halves"
