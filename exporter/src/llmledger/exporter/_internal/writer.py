"""One batch insert of span rows into ``otel_traces``, idempotent under retries.

The body is built here in ClickHouse's Native format (:mod:`.native_block`) with the
table's own column names and types, and sent with clickhouse-connect's ``raw_insert``,
which an embedded store and a ClickHouse server both take. Every batch carries a
deterministic ``insert_deduplication_token``: a batch written twice (a retry after a
timeout, a replayed spool file) is dropped by ``otel_traces`` and by each materialized
view downstream, so ``llm_calls`` and ``llm_usage_hourly`` do not count it twice.

On an embedded store the writers leave ``otel_traces``' attribute bloom filters to a
part's first merge (``defer_attribute_indexes``): building them on insert costs ~1.4 µs a
span, most of it the filter over every attribute value. Until the merge a query reads that
part without them, with the same results; the trace-id filter is built on insert. (Not on
a server: older servers refuse the setting, and the trade is the operator's.)
"""

from __future__ import annotations

import threading
from typing import Final

from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.native_block import encode_block
from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, SpanRows

__all__ = ["ATTRIBUTE_INDEXES", "SpanWriter", "deferred_index_settings"]

_COLUMN_NAMES: Final = [name for name, _ in OTEL_TRACES_COLUMNS]

# otel_traces' bloom filters over attribute keys and values (see the module doc).
ATTRIBUTE_INDEXES: Final = (
    "idx_res_attr_key",
    "idx_res_attr_value",
    "idx_span_attr_key",
    "idx_span_attr_value",
)


def deferred_index_settings() -> dict[str, object]:
    """Insert settings that leave :data:`ATTRIBUTE_INDEXES` to a part's first merge."""
    return {"exclude_materialize_skip_indexes_on_insert": ",".join(ATTRIBUTE_INDEXES)}


class SpanWriter:
    """Writes :class:`SpanRows` to ``<database>.otel_traces``, one insert per batch."""

    def __init__(self, client: Client, database: str, *, defer_attribute_indexes: bool = False) -> None:
        self._client = client
        self._table = f"{quote_identifier(database)}.{quote_identifier('otel_traces')}"
        self._lock = threading.Lock()
        self._settings = deferred_index_settings() if defer_attribute_indexes else {}

    def write(self, rows: SpanRows, dedup_token: str | None = None) -> int:
        """Insert ``rows`` as one batch; return the number of spans written (0 for an empty batch).

        ``dedup_token`` defaults to :meth:`SpanRows.dedup_token`; pass a token of your own
        (a spool file's id, say) when the same spans may be batched differently on retry.
        """
        count = len(rows)
        if not count:
            return 0
        token = dedup_token or rows.dedup_token()
        body = encode_block(rows.span_columns())
        with self._lock:
            self._client.raw_insert(  # pyright: ignore[reportUnknownMemberType]
                self._table,
                _COLUMN_NAMES,
                insert_block=body,
                settings={**self._settings, "insert_deduplication_token": token},
                fmt="Native",
            )
        return count
