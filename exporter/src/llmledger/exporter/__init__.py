"""llmledger exporter: the ClickHouse schema, span writer, direct span and metrics exporters, collector and CLI."""

from llmledger.exporter._internal.budgets import BudgetExceededError, BudgetGuard
from llmledger.exporter._internal.config import ConfigError, StoreConfig
from llmledger.exporter._internal.metric_exporter import ClickHouseMetricExporter
from llmledger.exporter._internal.span_exporter import ClickHouseSpanExporter
from llmledger.exporter._internal.store import StoreError, StoreLockedError
from llmledger.exporter.version import __version__

__all__ = [
    "BudgetExceededError",
    "BudgetGuard",
    "ClickHouseMetricExporter",
    "ClickHouseSpanExporter",
    "ConfigError",
    "StoreConfig",
    "StoreError",
    "StoreLockedError",
    "__version__",
]
