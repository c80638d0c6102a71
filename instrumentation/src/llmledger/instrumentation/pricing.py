"""Prices as the instrumentation applies them, for other parts of llmledger and for users.

One price book — genai-prices' bundled data plus the user's price file — prices calls in
the app (:meth:`PriceBook.price_call`), explains a price (:meth:`PriceBook.explain`) and
lists the effective table (:meth:`PriceBook.price_rows`) that ``llmledger prices sync``
loads into the store's ``model_prices``, so the store prices spans the way the app does.
The provider maps are data shared with the store's views.

Everything outside the instrumentation that prices like it (the exporter's ``llmledger
prices`` commands, a user's own code) uses this module only: what sits under ``_internal``
may change in any release.
"""

import logging
import os
from collections.abc import Mapping

from llmledger.instrumentation._internal.config import azure_deployments
from llmledger.instrumentation._internal.price_file import PriceFileError, load_price_file, parse_price_file
from llmledger.instrumentation._internal.pricing import (
    PROVIDER_ALIASES,
    PROVIDER_IDS,
    CallCost,
    PriceBook,
    PriceExplanation,
    PriceRow,
    RateBand,
)
from llmledger.instrumentation._internal.span_attributes import cost_attributes
from llmledger.instrumentation._internal.usage import TokenUsage

__all__ = [
    "PROVIDER_ALIASES",
    "PROVIDER_IDS",
    "CallCost",
    "PriceBook",
    "PriceExplanation",
    "PriceFileError",
    "PriceRow",
    "RateBand",
    "TokenUsage",
    "azure_deployments_from_env",
    "cost_attributes",
    "load_price_file",
    "parse_price_file",
    "provider_name",
    "refused_price_file",
]


def refused_price_file(error: Exception) -> str:
    """What the app and ``llmledger prices sync`` both say when a price file is refused: a
    file with any problem is refused as a whole (nothing from it is used), every problem
    listed with its file, line and field."""
    return f"llmledger: prices could not be loaded; the price file is refused as a whole: {error}"


def provider_name(name: str) -> str:
    """The semantic-convention ``gen_ai.provider.name`` for a name another instrumentation writes."""
    lowered = name.lower()
    return PROVIDER_ALIASES.get(lowered, lowered)


def azure_deployments_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Azure deployment → model as the app reads it from ``LLMLEDGER_AZURE_DEPLOYMENTS``
    (``deploy1=gpt-4o,deploy2=gpt-4o-mini``), so a price book built elsewhere maps deployments
    the way the app's does. An entry that is not ``deployment=model`` is left out, with a warning."""
    problems: list[str] = []
    deployments = azure_deployments(os.environ if environ is None else environ, problems)
    if problems:
        logging.getLogger("llmledger.instrumentation").warning(
            "llmledger: ignoring invalid settings: %s", "; ".join(problems)
        )
    return deployments
