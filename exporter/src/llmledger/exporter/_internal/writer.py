"""One batch insert of span rows into ``otel_traces``, idempotent under retries.

Column names and types are explicit (no schema round trip per insert) and every batch
carries a deterministic ``insert_deduplication_token``: a batch written twice (a retry
after a timeout, a replayed spool file) is dropped by ``otel_traces`` and by each
materialized view downstream, so ``llm_calls`` and ``llm_usage_hourly`` do not count it
twice.
"""

from __future__ import annotations

import threading

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext

from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, SpanRows

__all__ = ["SpanWriter"]


class SpanWriter:
    """Writes :class:`SpanRows` to ``<database>.otel_traces``, one insert per batch."""

    def __init__(self, client: Client, database: str) -> None:
        self._client = client
        self._database = database
        self._lock = threading.Lock()
        self._context: InsertContext | None = None

    def _insert_context(self) -> InsertContext:
        if self._context is None:
            self._context = self._client.create_insert_context(
                table="otel_traces",
                database=self._database,
                column_names=[name for name, _ in OTEL_TRACES_COLUMNS],
                column_type_names=[type_name for _, type_name in OTEL_TRACES_COLUMNS],
                column_oriented=True,
            )
        return self._context

    def write(self, rows: SpanRows, dedup_token: str | None = None) -> int:
        """Insert ``rows`` as one batch; return the number of spans written (0 for an empty batch).

        ``dedup_token`` defaults to :meth:`SpanRows.dedup_token`; pass a token of your own
        (a spool file's id, say) when the same spans may be batched differently on retry.
        """
        count = len(rows)
        if not count:
            return 0
        token = dedup_token or rows.dedup_token()
        with self._lock:
            context = self._insert_context()
            context.settings["insert_deduplication_token"] = token
            try:
                context.data = rows.columns
                self._client.insert(context=context)
            finally:
                context.data = None
        return count
