"""The one "call finished" step: what a call came to, and everything that follows from it.

When a call is over, :func:`call_finished` settles its token counts (as reported, or
counted locally when the API reported none), prices them, and hands the outcome to each
consumer in turn: the span's attributes, the metrics, the running totals of the app's
``usage_totals`` blocks and the console line. Every consumer reads the same
:class:`CallOutcome`, so a feature that needs to know what a call came to adds one line here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NamedTuple

from llmledger.instrumentation._internal import attributes as A
from llmledger.instrumentation._internal.errors import internal_error
from llmledger.instrumentation._internal.estimate import TOKEN_COUNTER
from llmledger.instrumentation._internal.provider import Endpoint
from llmledger.instrumentation._internal.span_attributes import result_attributes
from llmledger.instrumentation._internal.usage import TokenUsage

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.call import LLMCall
    from llmledger.instrumentation._internal.pricing import CallCost
    from llmledger.instrumentation._internal.telemetry import Pricer


class CallOutcome(NamedTuple):
    """What one finished call came to."""

    operation: str
    endpoint: Endpoint
    request_model: str | None
    response_model: str | None
    tenant: str | None
    error_type: str | None
    usage: TokenUsage | None
    """The settled counts: reported, estimated, or ``None`` (unknown, never 0)."""
    cost: CallCost | None
    priced: bool
    """A price was looked up (counts, a model and a price book were there): with no ``cost``, unpriced."""
    duration_ns: int
    time_to_first_chunk_ns: int | None
    held: bool
    """The call waited for the tokenizer (its ``usage_totals`` counted it as pending)."""
    unestimated: bool
    """It waited in vain: recorded without token counts."""


def call_finished(call: LLMCall, end_ns: int, *, estimate: bool = True, held: bool = False) -> None:
    """Record a finished call everywhere it is seen (the caller ends the span)."""
    tel = call.tel
    facts = call.facts
    usage = facts.usage
    if estimate and wants_estimate(call):
        usage = call.api.estimate(
            TOKEN_COUNTER, facts.response_model or call.request_model, call.kwargs, facts
        )
    model = facts.response_model or call.request_model
    priced = usage is not None and usage.known and bool(model) and tel.pricer is not None
    cost = price(tel.pricer, call.endpoint.provider, model, usage, facts.service_tier) if priced else None
    first_chunk_ns = call.first_chunk_ns - call.start_ns if call.first_chunk_ns else None
    # Positional: a NamedTuple built by keyword costs a microsecond more, on every call.
    outcome = CallOutcome(
        call.api.operation,
        call.endpoint,
        call.request_model,
        facts.response_model,
        call.attribution.get(A.TENANT_ID),
        call.error_type,
        usage,
        cost,
        priced,
        end_ns - call.start_ns,
        first_chunk_ns,
        held,
        held and not estimate,
    )
    if call.span.is_recording():
        call.span.set_attributes(
            result_attributes(
                facts,
                usage,
                cost,
                error_type=call.error_type,
                time_to_first_chunk_s=None if first_chunk_ns is None else first_chunk_ns / 1e9,
                capture_content=tel.config.capture_content,
            )
        )
    tel.metrics.record(outcome)
    for totals in call.totals:
        totals.add(outcome)
    if tel.config.console:
        sys.stderr.write(console_line(outcome))


def price(
    pricer: Pricer | None,
    provider: str,
    model: str | None,
    usage: TokenUsage | None,
    service_tier: str | None,
) -> CallCost | None:
    """The call's cost, or ``None`` when unknown; a failing price book costs the call only its price."""
    if pricer is None or model is None or usage is None:
        return None
    try:
        return pricer.price_call(provider, model, usage, service_tier=service_tier)
    except Exception as exc:  # a wrong price must never stop a request
        internal_error("pricing", exc)
        return None


def wants_estimate(call: LLMCall) -> bool:
    """The API reported no usage for a call seen to finish: count its tokens locally.

    Not a call closed unread, not a failed one, not a queued background response
    (billed when it completes). A Responses stream cut off before its terminal event
    is still ``in_progress``: what it streamed was generated, so it is counted.
    """
    facts = call.facts
    usage = facts.usage
    return (
        (usage is None or not usage.known)
        and (facts.response_id is not None or facts.response_model is not None)
        and (
            facts.status not in ("queued", "in_progress")
            or (call.stream and call.kwargs.get("background") is not True)
        )
        and call.error_type is None
        and call.tel.config.estimate_tokens
    )


def encoding_to_wait_for(call: LLMCall) -> str | None:
    """The tokenizer encoding a call must wait for before it can be finished, if any."""
    if not wants_estimate(call):
        return None
    name = TOKEN_COUNTER.encoding_name(call.facts.response_model or call.request_model)
    return None if TOKEN_COUNTER.is_ready(name) else name


def console_line(outcome: CallOutcome) -> str:
    """One line per call for local development (``LLMLEDGER_CONSOLE``)."""
    model = outcome.response_model or outcome.request_model or "?"
    usage = outcome.usage
    tokens = "tokens=?"
    if usage is not None and usage.known:
        tokens = f"in={usage.input_tokens} (cached {usage.cached_input_tokens}) out={usage.output_tokens}"
        if usage.reasoning_tokens:
            tokens += f" (reasoning {usage.reasoning_tokens})"
        if usage.estimated:
            tokens += " ~estimated"
    money = f"${outcome.cost.total.normalize():f}" if outcome.cost is not None else "$? (unpriced)"
    who = "-" if outcome.tenant is None else outcome.tenant
    status = f" ERROR {outcome.error_type}" if outcome.error_type else ""
    return (
        f"[llmledger] {outcome.operation} {model} {tokens} {money} "
        f"{outcome.duration_ns / 1e6:.0f}ms tenant={who}{status}\n"
    )
