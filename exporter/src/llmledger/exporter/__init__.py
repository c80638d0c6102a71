"""llmledger exporter: the ClickHouse schema, span writer, direct span exporter, collector and CLI."""

from llmledger.exporter.version import __version__

__all__ = ["__version__"]
