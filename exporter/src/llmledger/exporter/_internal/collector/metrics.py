"""The collector's own counters and gauges, rendered in the Prometheus text format.

Counters are plain integers behind one lock (a handful of increments per request, not per
span); gauges are read from the spool when ``/metrics`` is scraped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Final

from llmledger.exporter._internal.errors import contain

__all__ = ["CollectorMetrics"]

_COUNTERS: Final = {
    "received_spans": "Spans in requests that passed validation (before the spool)",
    "spooled_spans": "Spans stored durably in the spool and acknowledged",
    "written_spans": "Spans inserted into the store",
    "rejected_spans": "Spans refused: invalid, unauthorised, too large, spool full or disk error",
    "retried_spans": "Spans whose insert failed and was retried",
    "received_data_points": "Metric data points in requests that passed validation (before the spool)",
    "spooled_data_points": "Metric data points stored durably in the spool and acknowledged",
    "written_data_points": "Metric data points inserted into the store",
    "rejected_data_points": "Metric data points refused: spool full, disk error or shutting down",
    "received_log_records": "Log records in requests that passed validation (before the spool)",
    "spooled_log_records": "Log records stored durably in the spool and acknowledged",
    "written_log_records": "Log records inserted into the store",
    "rejected_log_records": "Log records refused: spool full, disk error or shutting down",
    "requests": "OTLP export requests received (any outcome)",
    "rejected_requests": "OTLP export requests refused",
    "spool_full_refusals": "Requests refused with a retryable status because the spool was full",
    "spool_errors": "Disk errors while writing or reading the spool",
    "store_errors": "Failed store inserts or connection attempts",
    "repeated_requests": "Requests identical to one stored recently (a sender's retry), acknowledged and not stored again",
    "split_batches": "Batches or parts of one the store refused for their content, written in parts",
    "dead_letter_spans": "Spans the store refused for their content, kept in the dead-letter file",
    "dead_letter_data_points": "Metric data points the store refused for their content, kept in the dead-letter file",
    "dead_letter_log_records": "Log records the store refused for their content, kept in the dead-letter file",
    "dead_letter_records": "Entries added to the dead-letter file",
}


class CollectorMetrics:
    """Counters by name (see ``_COUNTERS``) plus gauges computed at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(_COUNTERS, 0)
        self._gauges: dict[str, tuple[str, str, Callable[[], float]]] = {}

    def add(self, name: str, amount: int = 1) -> None:
        """Increase counter ``name`` by ``amount``."""
        with self._lock:
            self._values[name] += amount

    def get(self, name: str) -> int:
        """The current value of counter ``name``."""
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, int]:
        """Every counter's current value."""
        with self._lock:
            return dict(self._values)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read when metrics are rendered."""
        self._gauges[name] = ("gauge", help_text, read)

    def counter_from(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a counter kept elsewhere (read when metrics are rendered)."""
        self._gauges[f"{name}_total"] = ("counter", help_text, read)

    def render(self, extra: Mapping[str, int] | None = None) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4).

        ``extra`` holds counters kept by another process (the drain's), added to these.
        """
        with self._lock:
            values = dict(self._values)
        for name, value in (extra or {}).items():
            if name in values:
                values[name] += value
        lines: list[str] = []
        for name, help_text in _COUNTERS.items():
            metric = f"llmledger_collector_{name}_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", f"{metric} {values[name]}"]
        for name, (kind, help_text, read) in self._gauges.items():
            metric = f"llmledger_collector_{name}"
            try:
                value = float(read())
            except Exception as exc:  # a gauge that cannot be read is shown as missing, not fatal
                contain(f"the collector's {metric} gauge", exc)
                value = float("nan")
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}", f"{metric} {value:g}"]
        return "\n".join(lines) + "\n"
