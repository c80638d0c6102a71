"""The direct metrics exporter: SDK metrics straight into the store's ``otel_metrics_*`` tables.

``OTEL_METRICS_EXPORTER=llmledger opentelemetry-instrument python app.py`` builds it with
no arguments (the store from ``LLMLEDGER_CLICKHOUSE_URL`` or the default embedded store)
behind the SDK's ``PeriodicExportingMetricReader``, which collects every
``OTEL_METRIC_EXPORT_INTERVAL`` (60 s) and once more at exit. Paired with
``OTEL_TRACES_EXPORTER=llmledger`` an app needs no collector at all, and exits as fast as
the app plus one flush (without it the SDK's default OTLP metrics exporter keeps retrying a
collector that is not there).

Each export is one collection, encoded as the OTLP request an OTLP exporter would send and
written as the collector writes it (:class:`MetricRows`), one insert per table with a
token derived from the request's bytes (a retried export is dropped by the store). The
store is opened and the schema applied on the first export, off the app's import path.

Export never raises into the app. Metrics are cumulative by default, so a collection that
could not be written is not kept: the next one carries the totals. A failure is logged
once until the next success; after the store fails to open it is not tried again for
:data:`.direct_store.REOPEN_AFTER_S`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.direct_store import FailureLog, LazyStore
from llmledger.exporter._internal.errors import contain
from llmledger.exporter._internal.metric_rows import MetricRows
from llmledger.exporter._internal.store import STORE_FAILURES

__all__ = ["ClickHouseMetricExporter"]

_logger = logging.getLogger(__name__)


class ClickHouseMetricExporter(MetricExporter):
    """Writes SDK metrics to the llmledger store's ``otel_metrics_*`` tables (see the module doc)."""

    def __init__(
        self,
        config: StoreConfig | None = None,
        *,
        apply_schema: bool = True,
        preferred_temporality: dict[type, Any] | None = None,
        preferred_aggregation: dict[type, Any] | None = None,
    ) -> None:
        super().__init__(
            preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation
        )
        self._store = LazyStore(config, apply_schema=apply_schema)
        self._lock = threading.Lock()
        self._failures = FailureLog(_logger, "metric export")
        self._shut_down = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Write one collection; ``FAILURE`` (logged once) when it could not be written."""
        del timeout_millis, kwargs
        if self._shut_down:
            return MetricExportResult.FAILURE
        try:
            request = encode_metrics(metrics_data)
            rows = MetricRows()
            rows.add_otlp(request)
            if not len(rows):
                return MetricExportResult.SUCCESS
            token = "llmledger-metrics-" + hashlib.sha256(request.SerializeToString()).hexdigest()[:32]
            with self._lock:
                client, config = self._store.open()
                rows.write(client, config.database, token)
        except Exception as exc:
            contain("the metric exporter writing a collection", exc, STORE_FAILURES)
            self._failures.failed(
                exc, "llmledger could not write metrics to the store (the next collection retries): %s", exc
            )
            return MetricExportResult.FAILURE
        self._failures.succeeded()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is held here: every export is written before it returns."""
        del timeout_millis
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close the store; later exports return ``FAILURE``."""
        del timeout_millis, kwargs
        with self._lock:
            self._shut_down = True
            self._store.close("the metric exporter closing the store")
