"""The direct span exporter: SDK spans straight into the store, no collector in between.

``OTEL_TRACES_EXPORTER=llmledger opentelemetry-instrument python app.py`` builds it with
no arguments (the store comes from ``LLMLEDGER_CLICKHOUSE_URL`` or the default embedded
store) behind the SDK's ``BatchSpanProcessor``, which flushes it on shutdown. The store
is opened and the schema applied on the first export, off the app's import path. Export
never raises into the app: a failure is logged once (until the next success) and
reported as ``FAILURE``; after a store fails to open, batches fail fast for
:data:`REOPEN_AFTER_S` before it is tried again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import StoreError, open_store
from llmledger.exporter._internal.writer import SpanWriter

__all__ = ["ClickHouseSpanExporter"]

_logger = logging.getLogger(__name__)

# After the store fails to open, batches fail fast for this long before the next attempt.
REOPEN_AFTER_S = 30.0


class ClickHouseSpanExporter(SpanExporter):
    """Writes finished spans to the llmledger store's ``otel_traces`` (and so ``llm_calls``)."""

    def __init__(self, config: StoreConfig | None = None, *, apply_schema: bool = True) -> None:
        self._config = config
        self._apply_schema = apply_schema
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._writer: SpanWriter | None = None
        self._failing = False
        self._shut_down = False
        self._reopen_at = 0.0

    def _open(self) -> SpanWriter:
        if self._writer is None:
            if time.monotonic() < self._reopen_at:
                # Opening an embedded store costs ~0.3 s of the app's CPU; a store that just
                # failed to open (locked, unreachable) is not tried again on every batch.
                raise StoreError(
                    f"not retrying the store for another {self._reopen_at - time.monotonic():.0f} s"
                )
            self._reopen_at = time.monotonic() + REOPEN_AFTER_S
            config = self._config or StoreConfig.from_env()
            self._config = config
            client = open_store(config, use_database=False)
            try:
                if self._apply_schema:
                    apply_migrations(client, config)
            except Exception:
                client.close()
                raise
            self._client = client
            self._writer = SpanWriter(client, config.database)
            self._reopen_at = 0.0
        return self._writer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans`` as one batch; ``FAILURE`` (logged once per outage) when that is impossible."""
        if self._shut_down:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            rows = SpanRows()
            rows.add_sdk_spans(spans)
            with self._lock:
                self._open().write(rows)
        except Exception as exc:
            if not self._failing:
                self._failing = True
                _logger.error("llmledger could not write %d span(s) to the store: %s", len(spans), exc)
            else:
                _logger.debug("llmledger span export still failing", exc_info=True)
            return SpanExportResult.FAILURE
        if self._failing:
            self._failing = False
            _logger.warning("llmledger span export recovered")
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export is written before it returns."""
        return True

    def shutdown(self) -> None:
        """Close the store; later exports return ``FAILURE``."""
        with self._lock:
            self._shut_down = True
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:
                    _logger.debug("closing the llmledger store failed", exc_info=True)
                self._client = None
                self._writer = None
