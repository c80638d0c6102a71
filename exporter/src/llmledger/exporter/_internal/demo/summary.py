"""What the demo's numbers count, said in words: the app's operations and API calls, the spans
the collector wrote (LLM calls and the app's own), and the report's columns.

The app counts what it did as it happens (:class:`~.app.Tally`, handed over as JSON); the span
breakdown is read from the store; the legend ties the report's totals back to both.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from string import Template
from typing import Any

from llmledger.exporter._internal.identifiers import quote_identifier
from llmledger.exporter._internal.report import QueryRunner

__all__ = ["APP_SCOPE", "INSTRUMENTATION_SCOPE", "describe_app", "describe_spans", "legend", "spans_by_scope"]

# Who makes the demo's spans (their instrumentation scope): llmledger's instrumentation one per
# API call, the sample app one per lead scoring (the parent of its attempts).
INSTRUMENTATION_SCOPE = "llmledger.instrumentation"
APP_SCOPE = "llmledger.demo.app"
_FEATURES = {
    "lead_scoring": "lead scorings",
    "contact_extraction": "contact extractions",
    "support_chat": "support-chat turns (streamed)",
    "search_index": "search indexings (embeddings)",
    "summaries": "summaries (Responses API)",
}


def describe_app(tally: Mapping[str, Any], seconds: float) -> list[str]:
    """Two lines: the operations the app ran, by feature; the API calls they made, fallbacks included."""
    operations: dict[str, int] = dict(tally["operations"])
    total = sum(operations.values())
    kinds = ", ".join(f"{count} {_FEATURES.get(feature, feature)}" for feature, count in operations.items())
    calls, failed = int(tally["api_calls"]), int(tally["failed_calls"])
    primary, fallback = tally["fallback"]
    lines = [f"the app ran {total} operations in {seconds:.1f}s: {kinds}"]
    if calls == total + failed:
        lines.append(
            f"they made {calls} OpenAI API calls: one per operation, plus a fallback call on {fallback} for "
            f"each of the {failed} lead scorings whose {primary} call failed (503: the demo server makes "
            f"{primary} 'overloaded' for a share of requests)"
        )
    else:
        lines.append(
            f"they made {calls} OpenAI API calls, {failed} of which failed and were followed by a fallback"
        )
    return lines


def spans_by_scope(runner: QueryRunner, database: str) -> dict[str, int]:
    """How many spans the store holds per instrumentation scope."""
    sql = Template(
        resources.files("llmledger.exporter._internal").joinpath("queries", "demo_spans.sql").read_text()
    ).substitute(db=quote_identifier(database, "database name"))
    _, rows = runner(sql, {})
    return {str(scope): int(count) for scope, count in rows}


def describe_spans(written: int, by_scope: Mapping[str, int]) -> str:
    """The collector's span count, taken apart: LLM call spans, the app's own, any others."""
    calls = by_scope.get(INSTRUMENTATION_SCOPE, 0)
    app = by_scope.get(APP_SCOPE, 0)
    others = sum(by_scope.values()) - calls - app
    text = (
        f"the collector wrote {written} spans: {calls} LLM call spans (llmledger's, one per API call) "
        f"and {app} of the app's own (score_lead, the parent of each lead scoring's attempts)"
    )
    if others:
        text += f", and {others} from other instrumentations"
    if sum(by_scope.values()) != written:
        text += f" (the store holds {sum(by_scope.values())})"
    return text


def legend(totals: Mapping[str, int | Decimal], tally: Mapping[str, Any]) -> str:
    """What each column of the demo's table counts, with the totals accounted for."""
    operations = sum(dict(tally["operations"]).values())
    calls, errors, fallbacks = int(totals["calls"]), int(totals["errors"]), int(totals["fallbacks"])
    accounted = (
        f": {operations} operations + {fallbacks} fallback calls" if calls == operations + fallbacks else ""
    )
    return (
        f"\n  calls      LLM API calls billed to the tenant, one span each{accounted}"
        f"\n  errors     calls that failed ({errors} here, the injected 503s): no tokens, no cost"
        f"\n  fallbacks  calls made because an earlier attempt failed (llmledger.fallback=true on the span)"
        "\n  *_tokens   as the API reported them (input includes cached, output includes reasoning)"
        "\n  cost_usd   each call priced from the bundled price table, summed exactly\n"
    )
