"""The ``llmledger collector`` service: OTLP in over gRPC and HTTP, a durable spool, ClickHouse out.

:class:`Collector` runs it; :class:`CollectorConfig` configures it; :func:`query_via_collector`
lets the CLI read an embedded store that a running collector owns.
"""

from llmledger.exporter._internal.collector.config import SETTINGS, CollectorConfig
from llmledger.exporter._internal.collector.query_server import (
    CollectorQueryError,
    CollectorQueryResult,
    query_via_collector,
)
from llmledger.exporter._internal.collector.service import Collector

__all__ = [
    "SETTINGS",
    "Collector",
    "CollectorConfig",
    "CollectorQueryError",
    "CollectorQueryResult",
    "query_via_collector",
]
