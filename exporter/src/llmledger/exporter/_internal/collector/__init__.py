"""The ``llmledger collector`` service: OTLP in over gRPC and HTTP, a durable spool, ClickHouse out.

:class:`Collector` runs it; :class:`CollectorConfig` configures it. Read :mod:`.pipeline`
first: it names the stages a span goes through, in order, and the modules that do each.
While it owns an embedded store it serves that store over ClickHouse's HTTP interface
(:mod:`.clickhouse_http`), which :func:`~llmledger.exporter._internal.store.open_store`
finds for every other tool.
"""

from llmledger.exporter._internal.collector.config import SETTINGS, CollectorConfig
from llmledger.exporter._internal.collector.service import Collector, CollectorStartError

__all__ = ["SETTINGS", "Collector", "CollectorConfig", "CollectorStartError"]
