"""llmledger instrumentation for the openai SDK: GenAI spans and metrics with tokens, cost and attribution.

Zero-code: ``opentelemetry-instrument python app.py`` loads :class:`LLMLedgerInstrumentor`.
In code, bill calls to someone with :func:`attribution`, number retries with
:func:`fallbacks`, and total a request's usage with :func:`usage_totals`.
"""

from llmledger.instrumentation._internal.attribution import (
    UsageTotals,
    attribution,
    fallbacks,
    propagate_context,
    usage_totals,
)
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation._internal.guard import add_call_guard
from llmledger.instrumentation._internal.instrumentor import LLMLedgerInstrumentor, wait_for_pending_calls
from llmledger.instrumentation.version import __version__

__all__ = [
    "InstrumentationConfig",
    "LLMLedgerInstrumentor",
    "UsageTotals",
    "__version__",
    "add_call_guard",
    "attribution",
    "fallbacks",
    "propagate_context",
    "usage_totals",
    "wait_for_pending_calls",
]
