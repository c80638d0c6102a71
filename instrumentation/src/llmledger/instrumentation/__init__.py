"""llmledger instrumentation for the openai SDK."""

from llmledger.instrumentation.version import __version__

__all__ = ["__version__"]
