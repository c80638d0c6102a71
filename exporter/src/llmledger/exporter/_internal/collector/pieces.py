"""A batch the store refuses, taken apart until every part that can be written is.

A :class:`Piece` is OTLP export requests of one signal and the deduplication token they
are inserted with; the whole claimed spool batch is the first piece. When the store
refuses a piece for its content (:func:`refusal_reason`), the drain splits it
(:meth:`RequestShape.split`): by day when the insert spans too many partitions
(``TOO_MANY_PARTS``: "more than 100 partitions"), else in halves — the requests of the
piece, then the items (spans, data points, log records) of a single request — down to a
single item, which goes to the dead-letter file. Other errors (the store away, a full
disk, a lost connection) are the store's condition: retried with back-off, never split. An
error that says neither (:func:`unexplained_error`) is retried, then split if it persists,
and a single item is set aside only when the store takes the rest (see :mod:`.piecewise`).

The tokens of the parts are the parent's with a suffix (``/d0``, ``/d1`` … for day groups,
``/0`` and ``/1`` for halves), and each split is a function of the piece's content and of
the kind of split, which the drain writes down before inserting any part (see
:mod:`.piecewise`). So a batch replayed after a crash is split the same way with the same
tokens, and the store's deduplication drops the parts it already has: exactly once
survives splitting.

A metrics piece is one insert per table under one token, so the store may have taken some
of its tables before it refused another. A refused metrics piece with points for several
tables is therefore split by table first (``/gauge``, ``/sum`` …), each part inserted under
the parent's token (:attr:`Piece.dedup_token`): a table that landed is dropped as a
duplicate, and only the parts of a single table's points get tokens of their own.

What differs between the signals (the request type, where its items sit, which time
picks an item's partition) is a :class:`RequestShape`: :data:`TRACE_REQUESTS`,
:data:`METRIC_REQUESTS`, :data:`LOG_REQUESTS`. The splitting is one implementation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, Literal

from clickhouse_connect.driver.exceptions import ClickHouseError, DataError, OperationalError
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.errors import OUTSIDE_FAILURES
from llmledger.exporter._internal.rows import signed_nanos
from llmledger.exporter._internal.store import StoreError

__all__ = [
    "INSERT_FAILURES",
    "LOG_REQUESTS",
    "MAX_DAYS_PER_INSERT",
    "METRIC_REQUESTS",
    "SHAPES",
    "SPLIT_KINDS",
    "TRACE_REQUESTS",
    "Piece",
    "RefusedError",
    "RequestShape",
    "SplitKind",
    "SuspectError",
    "refusal_reason",
    "unexplained_error",
]

SplitKind = Literal["days", "halves", "tables"]
SPLIT_KINDS: Final[frozenset[str]] = frozenset({"days", "halves", "tables"})

# Days per insert after a TOO_MANY_PARTS refusal: every table is partitioned by day (in the
# store's time zone, so a UTC day may touch two), the views' tables by month, and the
# store's limit is 100 partitions per insert block.
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
# What inserting spooled requests lives through: the store's, the network's and the disk's
# failures, and a request whose content cannot become rows (bytes that do not parse, a value
# out of range; refusal_reason says which). A TypeError, KeyError, IndexError or
# AttributeError there is llmledger's own bug: contained the same way, but raised under our tests.
INSERT_FAILURES: Final = (*OUTSIDE_FAILURES, StoreError, DecodeError, ValueError, OverflowError)


@dataclass(frozen=True, slots=True)
class Piece:
    """Serialized export requests of one signal, inserted together; ``token`` names the piece."""

    token: str
    payloads: tuple[bytes | memoryview, ...]
    items: int
    # The inserts' deduplication token when it is not ``token``: a metrics piece's part by
    # table repeats its parent's insert of that table (see the module doc).
    insert_token: str | None = None

    @property
    def dedup_token(self) -> str:
        return self.token if self.insert_token is None else self.insert_token

    @property
    def spans(self) -> int:
        """``items``, by the traces drain's name for them."""
        return self.items


class RefusedError(Exception):
    """The store refused a piece for its content (``reason``, one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SuspectError(RefusedError):
    """A piece keeps failing with an error that names neither its content nor the store's state."""


def refusal_reason(exc: BaseException) -> str | None:
    """Why the store refused a piece for its content (one line), or ``None`` for the store's own trouble."""
    if isinstance(exc, OperationalError | OSError | TimeoutError):
        return None  # connection, disk, timeout: the store's condition
    if isinstance(exc, DataError):
        # clickhouse-connect could not encode a value for its column (a time past 2262 for
        # DateTime64(9), say), before anything was sent; the cause says which value.
        cause = exc.__cause__
        return _one_line(str(exc) if cause is None else f"{exc} ({type(cause).__name__}: {cause})")
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


_Children = Callable[[Any], Any]  # a message -> the repeated field holding its children


@dataclass(frozen=True, slots=True)
class RequestShape:
    """One signal's export requests: their type, where their items sit, which time picks a partition.

    ``levels`` leads from the request to its items (request -> resources -> scopes -> items,
    with metrics between scopes and data points); every container on the way is kept
    around the items it holds when a request is taken apart.
    """

    signal: str  # as the dead-letter file names it
    noun: str  # one item, for log lines
    request: type[Message]
    levels: tuple[_Children, ...]
    item_nanos: Callable[[Any], int]  # the time that picks the item's partition
    tables: tuple[str, ...] = ()  # when the items go to several tables: their names for tokens
    table_of: Callable[[Any], int] | None = None  # the table (index) of an item's container

    def parse(self, payload: bytes | memoryview) -> Any:
        return self.request.FromString(bytes(payload))

    def count(self, payloads: Sequence[bytes | memoryview]) -> int:
        """The items in ``payloads``."""
        return sum(1 for payload in payloads for _ in self._items(self.parse(payload)))

    def split_kind(self, piece: Piece, reason: str) -> SplitKind:
        """How to split ``piece``, refused for ``reason``."""
        if self.table_of is not None and len(self._tables_of(piece)) > 1:
            return "tables"
        return "days" if _PARTITIONS_MESSAGE in reason.lower() else "halves"

    def split(self, piece: Piece, kind: SplitKind) -> list[Piece]:
        """``piece`` in parts (see the module doc); ``[]`` when it is one item and cannot be split.

        A request that does not parse cannot be split by item: as one of several it is
        split from the others, alone it has no parts (and goes to the dead-letter file whole).
        """
        try:
            if kind == "tables":
                return self._by_tables(piece)
            return self._by_days(piece) if kind == "days" else self._halves(piece)
        except DecodeError:
            if len(piece.payloads) > 1:
                middle = len(piece.payloads) // 2
                halves = (piece.payloads[:middle], piece.payloads[middle:])
                # Item counts of unparseable requests are unknown; the parts share the parent's.
                return [Piece(f"{piece.token}/{side}", part, 0) for side, part in enumerate(halves)]
            return []

    # -- taking requests apart ---------------------------------------------------------------

    def _items(self, request: Any) -> Iterator[tuple[Any, Any]]:
        """(container, item) for every item of ``request``, in order."""
        containers: list[Any] = [request]
        for children in self.levels[:-1]:
            containers = [child for container in containers for child in children(container)]
        items = self.levels[-1]
        for container in containers:
            for item in items(container):
                yield container, item

    def _regroup(
        self, payload: bytes | memoryview, group_of: Callable[[int, Any, Any], int], groups: int
    ) -> list[tuple[bytes, int]]:
        """The request's items in ``groups`` requests (their containers kept), with their item counts.

        ``group_of(index, item, container)`` picks an item's group; the items keep their order.
        """
        request = self.parse(payload)
        parts = [self.request() for _ in range(groups)]
        counts = [0] * groups
        index = 0
        last = len(self.levels) - 1

        def walk(source: Any, target: Callable[[int], Any], depth: int) -> None:
            nonlocal index
            children = self.levels[depth]
            if depth < last:
                for child in children(source):
                    walk(child, self._copies(child, depth, target), depth + 1)
                return
            for item in children(source):
                group = group_of(index, item, source)
                index += 1
                children(target(group)).append(item)
                counts[group] += 1

        walk(request, parts.__getitem__, 0)
        return [(part.SerializeToString(), count) for part, count in zip(parts, counts, strict=True)]

    def _copies(self, source: Any, depth: int, parent: Callable[[int], Any]) -> Callable[[int], Any]:
        """The container ``source`` (without its children) in each group's request, made on first use."""
        shell = type(source)()
        shell.CopyFrom(source)
        children = self.levels[depth + 1](shell)
        if len(children):
            del children[:]
        made: dict[int, Any] = {}

        def copy_in(group: int) -> Any:
            copy = made.get(group)
            if copy is None:
                copy = made[group] = self.levels[depth](parent(group)).add()
                copy.CopyFrom(shell)
            return copy

        return copy_in

    def _day(self, item: Any) -> int:
        return signed_nanos(self.item_nanos(item)) // _DAY_NS

    def _by_days(self, piece: Piece) -> list[Piece]:
        requests = [self.parse(payload) for payload in piece.payloads]
        days = sorted({self._day(item) for request in requests for _, item in self._items(request)})
        if len(days) <= MAX_DAYS_PER_INSERT:
            return self._halves(piece)  # a refusal these groups would not avoid
        group_of_day = {day: position // MAX_DAYS_PER_INSERT for position, day in enumerate(days)}
        groups = (len(days) + MAX_DAYS_PER_INSERT - 1) // MAX_DAYS_PER_INSERT
        return self._grouped(
            piece,
            lambda _index, item, _container: group_of_day[self._day(item)],
            [f"d{n}" for n in range(groups)],
        )

    def _tables_of(self, piece: Piece) -> set[int]:
        table_of = self.table_of
        if table_of is None:
            return set()
        try:
            return {
                table_of(container)
                for payload in piece.payloads
                for container, _ in self._items(self.parse(payload))
            }
        except DecodeError:
            return set()  # split by requests, not tables (see split)

    def _by_tables(self, piece: Piece) -> list[Piece]:
        table_of = self.table_of
        if table_of is None:
            return self._halves(piece)
        parts = self._grouped(piece, lambda _index, _item, container: table_of(container), list(self.tables))
        # Each repeats its table's insert of the parent, under the parent's token.
        return [Piece(part.token, part.payloads, part.items, piece.dedup_token) for part in parts]

    def _grouped(
        self, piece: Piece, group_of: Callable[[int, Any, Any], int], suffixes: list[str]
    ) -> list[Piece]:
        """``piece``'s items regrouped request by request into the groups named by ``suffixes`` (empty ones left out)."""
        payloads: list[list[bytes]] = [[] for _ in suffixes]
        counts = [0] * len(suffixes)
        for payload in piece.payloads:
            for group, (part, count) in enumerate(self._regroup(payload, group_of, len(suffixes))):
                if count:
                    payloads[group].append(part)
                    counts[group] += count
        return [
            Piece(f"{piece.token}/{suffix}", tuple(payloads[group]), counts[group])
            for group, suffix in enumerate(suffixes)
            if counts[group]
        ]

    def _halves(self, piece: Piece) -> list[Piece]:
        if len(piece.payloads) > 1:
            middle = len(piece.payloads) // 2
            halves = (piece.payloads[:middle], piece.payloads[middle:])
            return [
                Piece(f"{piece.token}/{side}", half, self.count(half)) for side, half in enumerate(halves)
            ]
        if piece.items <= 1 or not piece.payloads:
            return []
        middle = piece.items // 2
        return self._grouped(piece, lambda index, _item, _container: 0 if index < middle else 1, ["0", "1"])


def _data_points(metric: Any) -> Any:
    which = metric.WhichOneof("data")
    return () if which is None else getattr(metric, which).data_points


# The metric kinds in the order MetricRows writes their tables (otel_metrics_<kind>).
_METRIC_KINDS: Final = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_METRIC_KIND_INDEX: Final = {kind: index for index, kind in enumerate(_METRIC_KINDS)}

TRACE_REQUESTS: Final = RequestShape(
    "traces",
    "span",
    ExportTraceServiceRequest,
    (attrgetter("resource_spans"), attrgetter("scope_spans"), attrgetter("spans")),
    attrgetter("start_time_unix_nano"),  # otel_traces' Timestamp
)
METRIC_REQUESTS: Final = RequestShape(
    "metrics",
    "data point",
    ExportMetricsServiceRequest,
    (attrgetter("resource_metrics"), attrgetter("scope_metrics"), attrgetter("metrics"), _data_points),
    attrgetter("time_unix_nano"),  # the tables' TimeUnix
    _METRIC_KINDS,
    lambda metric: _METRIC_KIND_INDEX[metric.WhichOneof("data")],
)
LOG_REQUESTS: Final = RequestShape(
    "logs",
    "log record",
    ExportLogsServiceRequest,
    (attrgetter("resource_logs"), attrgetter("scope_logs"), attrgetter("log_records")),
    lambda record: record.time_unix_nano or record.observed_time_unix_nano,  # otel_logs' Timestamp
)
SHAPES: Final = {shape.signal: shape for shape in (TRACE_REQUESTS, METRIC_REQUESTS, LOG_REQUESTS)}
