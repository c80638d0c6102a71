"""The names llmledger's spans and metrics carry (the span contract), for code that reads them.

The exporter's SQL and the Grafana dashboards read these names; they take them from here,
so the contract is written once, in ``_internal/attributes.py``.
"""

from __future__ import annotations

from typing import Final

from llmledger.instrumentation._internal import attributes as _names

__all__ = ["METRIC_NAMES", "SPAN_ATTRIBUTES"]


def _names_where(metric: bool) -> frozenset[str]:
    return frozenset(
        value
        for constant, value in vars(_names).items()
        if constant.isupper()
        and isinstance(value, str)
        and "." in value
        and constant.startswith("METRIC_") is metric
    )


SPAN_ATTRIBUTES: Final[frozenset[str]] = _names_where(metric=False)
"""Every attribute name llmledger writes on spans and metric points."""
METRIC_NAMES: Final[frozenset[str]] = _names_where(metric=True)
"""Every metric llmledger records."""
