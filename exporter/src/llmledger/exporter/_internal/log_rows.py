"""OTLP log records as rows of the Collector ``clickhouse`` exporter's ``otel_logs``.

Values as that exporter writes them (schema ``0010``): ``Timestamp`` is the record's time,
or its observed time when the record has none; trace and span ids in hex, ``""`` when
absent; ``Body`` and attribute values stringified as pdata's ``AsString`` does (a map or
array body as compact JSON); ``ServiceName`` from the resource's ``service.name`` string.
``TimestampTime`` is left to the table's default.
"""

from __future__ import annotations

from typing import Any, Final

from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from llmledger.exporter._internal.metric_rows import insert_rows, otlp_attributes
from llmledger.exporter._internal.stringify import stringify_any_value

__all__ = ["OTEL_LOGS_COLUMNS", "LogRows"]

_MAP: Final = "Map(LowCardinality(String), String)"
OTEL_LOGS_COLUMNS: Final = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("TraceFlags", "UInt8"),
    ("SeverityText", "LowCardinality(String)"),
    ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"),
    ("Body", "String"),
    ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", _MAP),
    ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", _MAP),
    ("LogAttributes", _MAP),
)


def _hex_or_empty(raw: bytes) -> str:
    return raw.hex() if raw.strip(b"\x00") else ""


class LogRows:
    """Log records from OTLP requests, ready to insert into ``otel_logs``."""

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows, in :data:`OTEL_LOGS_COLUMNS` order."""
        return self._rows

    def add_otlp(self, request: ExportLogsServiceRequest) -> None:
        """Add every log record of ``request``."""
        rows = self._rows
        for resource_logs in request.resource_logs:
            resource_attributes = otlp_attributes(resource_logs.resource.attributes)
            service = ""
            for kv in resource_logs.resource.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value  # pdata Str(): "" unless a string
            for scope_logs in resource_logs.scope_logs:
                scope = scope_logs.scope
                scope_attributes = otlp_attributes(scope.attributes)
                rows.extend(
                    (
                        record.time_unix_nano or record.observed_time_unix_nano,
                        _hex_or_empty(record.trace_id),
                        _hex_or_empty(record.span_id),
                        record.flags & 0xFF,  # the trace flags are the low byte
                        record.severity_text,
                        int(record.severity_number) & 0xFF,
                        service,
                        stringify_any_value(record.body),
                        resource_logs.schema_url,
                        resource_attributes,
                        scope_logs.schema_url,
                        scope.name,
                        scope.version,
                        scope_attributes,
                        otlp_attributes(record.attributes),
                    )
                    for record in scope_logs.log_records
                )

    def write(self, client: Client, database: str, dedup_token: str) -> int:
        """Insert the rows as one block with ``dedup_token``; return how many."""
        if self._rows:
            insert_rows(client, database, "otel_logs", OTEL_LOGS_COLUMNS, self._rows, dedup_token)
        return len(self._rows)
