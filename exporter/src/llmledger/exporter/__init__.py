"""llmledger exporter: the ClickHouse schema, span writer, direct span exporter, collector and CLI."""

from llmledger.exporter._internal.budgets import BudgetExceededError, BudgetGuard
from llmledger.exporter._internal.config import ConfigError, StoreConfig
from llmledger.exporter._internal.span_exporter import ClickHouseSpanExporter
from llmledger.exporter._internal.store import StoreError, StoreLockedError
from llmledger.exporter.version import __version__

__all__ = [
    "BudgetExceededError",
    "BudgetGuard",
    "ClickHouseSpanExporter",
    "ConfigError",
    "StoreConfig",
    "StoreError",
    "StoreLockedError",
    "__version__",
]
