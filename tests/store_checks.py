"""Checks on the store shared by the exporter and collector tests."""

from __future__ import annotations

from typing import Any

from llmledger.exporter._internal.store import run_query
from llmledger.exporter._internal.writer import ATTRIBUTE_INDEXES

# Every skip index of otel_traces; the attribute ones may be left to a part's first merge.
OTEL_TRACES_INDEXES = (*ATTRIBUTE_INDEXES, "idx_trace_id", "idx_duration")


def built_skip_indexes(client: Any, database: str) -> dict[str, bool]:
    """Which of ``database``.otel_traces' skip indexes hold data in its active parts."""
    result = run_query(
        client,
        "SELECT name, data_compressed_bytes FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = 'otel_traces'",
        parameters={"db": database},
    )
    return {str(name): int(size) > 0 for name, size in result.result_rows}
