"""A batch the store refuses, taken apart until every part that can be written is.

A :class:`Piece` is OTLP trace requests and the deduplication token they are inserted
with; the whole claimed spool batch is the first piece. When the store refuses a piece for
its content (:func:`refusal_reason`), the drain splits it (:func:`split`): by day when the
insert spans too many partitions (``TOO_MANY_PARTS``: "more than 100 partitions"), else in
halves — the requests of the piece, then the spans of a single request — down to a single
span, which goes to the dead-letter file. Other errors (the store away, a full disk, a
lost connection) are the store's condition: retried with back-off, never split. An error
that says neither (:func:`unexplained_error`) is retried, then split if it persists, and a
single span is set aside only when the store takes the rest (see the drain).

The tokens of the parts are the parent's with a suffix (``/d0``, ``/d1`` … for day groups,
``/0`` and ``/1`` for halves), and each split is a function of the piece's content and of
the kind of split, which the drain writes down before inserting any part. So a batch
replayed after a crash is split the same way with the same tokens, and the store's
deduplication drops the parts it already has: exactly once survives splitting.

Splitting is per signal: only this module knows the request type, so metrics and logs
can bring their own ``split`` and ``item_days`` and reuse the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmledger.exporter._internal.rows import signed_nanos

__all__ = [
    "MAX_DAYS_PER_INSERT",
    "Piece",
    "SplitKind",
    "refusal_reason",
    "split",
    "split_kind",
    "unexplained_error",
]

SplitKind = Literal["days", "halves"]

# Days per insert after a TOO_MANY_PARTS refusal: ``otel_traces`` is partitioned by day
# (in the store's time zone, so a UTC day may touch two), the views' tables by month, and
# the store's limit is 100 partitions per insert block.
MAX_DAYS_PER_INSERT: Final = 45
_DAY_NS: Final = 86_400 * 1_000_000_000

# ClickHouse error codes that say "this data", not "this store": the same rows fail the same
# way on every attempt. (TOO_MANY_PARTS also means "too many parts in a partition", which
# is the store being behind: only its partition-count message counts as the data's.)
_DATA_ERROR_CODES: Final = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
        407,  # DECIMAL_OVERFLOW
        469,  # VIOLATED_CONSTRAINT (a CHECK constraint an operator added)
    }
)
# Codes that say "this store, now" whatever the rows: never taken for the data's fault, however
# long they last (the disk, memory pressure is not here: smaller parts are what helps then).
_CONDITION_CODES: Final = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE (a schema behind the collector)
        47,  # UNKNOWN_IDENTIFIER
        60,  # UNKNOWN_TABLE
        76,  # CANNOT_OPEN_FILE
        81,  # UNKNOWN_DATABASE
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS (the partition-count variant is caught as the data's first)
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)
_TOO_MANY_PARTS: Final = 252
_PARTITIONS_MESSAGE: Final = "partitions for single insert block"
_CODE: Final = re.compile(r"Code: (\d+)\.")


@dataclass(frozen=True, slots=True)
class Piece:
    """Serialized trace requests inserted together under ``token``."""

    token: str
    payloads: tuple[bytes | memoryview, ...]
    spans: int


def refusal_reason(exc: BaseException) -> str | None:
    """Why the store refused a piece for its content (one line), or ``None`` for the store's own trouble."""
    if isinstance(exc, OperationalError | OSError | TimeoutError):
        return None  # connection, disk, timeout: the store's condition
    if isinstance(exc, ClickHouseError):
        message = str(exc)
        match = _CODE.search(message)
        if match is None:
            return None
        code = int(match.group(1))
        if code in _DATA_ERROR_CODES or (code == _TOO_MANY_PARTS and _PARTITIONS_MESSAGE in message.lower()):
            return _one_line(message)
        return None
    if isinstance(exc, ValueError | TypeError | OverflowError | KeyError | IndexError | DecodeError):
        # Raised while turning the spooled requests into rows: the same bytes fail again.
        return f"{type(exc).__name__}: {_one_line(str(exc))}"
    return None


def unexplained_error(exc: BaseException) -> str | None:
    """The store's error for an insert that names neither the data nor the store's state; one line.

    ``None`` for a refusal :func:`refusal_reason` knows, a known condition, or no answer from the
    store at all (connection, disk, timeout). Such an error may be either: the drain splits a
    piece that keeps failing with it, and sets a single span aside only when the store takes
    the rest, or after ``unexplained_error_seconds`` of failing alone while the store answers.
    """
    if isinstance(exc, OperationalError | OSError | TimeoutError) or refusal_reason(exc) is not None:
        return None
    message = str(exc)
    match = _CODE.search(message)
    if match is None or int(match.group(1)) in _CONDITION_CODES:
        return None
    return _one_line(message)


def _one_line(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "no detail"
    return line[:300]


def split_kind(reason: str) -> SplitKind:
    """How to split a piece the store refused for ``reason``."""
    return "days" if _PARTITIONS_MESSAGE in reason.lower() else "halves"


def _spans(request: ExportTraceServiceRequest) -> list[Span]:
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _regroup(
    payload: bytes | memoryview, group_of: Callable[[int, Span], int], groups: int
) -> list[tuple[bytes, int]]:
    """The request's spans in ``groups`` requests (resource and scope kept), with their span counts."""
    request = ExportTraceServiceRequest.FromString(bytes(payload))
    parts = [ExportTraceServiceRequest() for _ in range(groups)]
    counts = [0] * groups
    index = 0
    for rs in request.resource_spans:
        targets: dict[int, object] = {}
        for ss in rs.scope_spans:
            scoped: dict[int, object] = {}
            for span in ss.spans:
                group = group_of(index, span)
                index += 1
                if group not in targets:
                    new_rs = parts[group].resource_spans.add()
                    new_rs.resource.CopyFrom(rs.resource)
                    new_rs.schema_url = rs.schema_url
                    targets[group] = new_rs
                if group not in scoped:
                    new_ss = targets[group].scope_spans.add()  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
                    new_ss.scope.CopyFrom(ss.scope)  # pyright: ignore[reportUnknownMemberType]
                    new_ss.schema_url = ss.schema_url
                    scoped[group] = new_ss
                scoped[group].spans.append(span)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
                counts[group] += 1
    return [(part.SerializeToString(), count) for part, count in zip(parts, counts, strict=True)]


def _day(span: Span) -> int:
    return signed_nanos(span.start_time_unix_nano) // _DAY_NS


def _by_days(piece: Piece) -> list[Piece]:
    requests = [ExportTraceServiceRequest.FromString(bytes(payload)) for payload in piece.payloads]
    days = sorted({_day(span) for request in requests for span in _spans(request)})
    if len(days) <= MAX_DAYS_PER_INSERT:
        return _halves(piece)  # a refusal these groups would not avoid
    group_of_day = {day: position // MAX_DAYS_PER_INSERT for position, day in enumerate(days)}
    groups = (len(days) + MAX_DAYS_PER_INSERT - 1) // MAX_DAYS_PER_INSERT
    payloads: list[list[bytes]] = [[] for _ in range(groups)]
    spans = [0] * groups
    for payload in piece.payloads:
        for group, (part, count) in enumerate(
            _regroup(payload, lambda _index, span: group_of_day[_day(span)], groups)
        ):
            if count:
                payloads[group].append(part)
                spans[group] += count
    return [
        Piece(f"{piece.token}/d{group}", tuple(payloads[group]), spans[group])
        for group in range(groups)
        if spans[group]
    ]


def _halves(piece: Piece) -> list[Piece]:
    if len(piece.payloads) > 1:
        middle = len(piece.payloads) // 2
        first, second = piece.payloads[:middle], piece.payloads[middle:]
        counted = [_count(first), _count(second)]
        return [
            Piece(f"{piece.token}/{side}", part, count)
            for side, (part, count) in enumerate(zip((first, second), counted, strict=True))
        ]
    if piece.spans <= 1 or not piece.payloads:
        return []
    middle = piece.spans // 2
    parts = _regroup(piece.payloads[0], lambda index, _span: 0 if index < middle else 1, 2)
    return [
        Piece(f"{piece.token}/{side}", (part,), count) for side, (part, count) in enumerate(parts) if count
    ]


def _count(payloads: Sequence[bytes | memoryview]) -> int:
    return sum(len(_spans(ExportTraceServiceRequest.FromString(bytes(payload)))) for payload in payloads)


def split(piece: Piece, kind: SplitKind) -> list[Piece]:
    """``piece`` in parts (see the module doc); ``[]`` when it is one span and cannot be split.

    A request that does not parse cannot be split by span: as one of several it is split
    from the others, alone it has no parts (and goes to the dead-letter file whole).
    """
    try:
        return _by_days(piece) if kind == "days" else _halves(piece)
    except DecodeError:
        if len(piece.payloads) > 1:
            middle = len(piece.payloads) // 2
            halves = (piece.payloads[:middle], piece.payloads[middle:])
            # Span counts of unparseable requests are unknown; the parts share the parent's.
            return [Piece(f"{piece.token}/{side}", part, 0) for side, part in enumerate(halves)]
        return []
