"""A call's span attributes from its request and its result: pure functions, no span, no globals.

``request_attributes`` is what a span starts with (the request kwargs, the endpoint, who the
call is billed to, its place in a chain of fallbacks); ``result_attributes`` is what it ends
with (what the response said, the token counts, the cost, the error). The per-API reading of
kwargs and responses lives in ``apis.py``; this module puts the pieces on the contract's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmledger.instrumentation._internal import attributes as A
from llmledger.instrumentation._internal.apis import ApiSpec, AttrValue, ResponseFacts, messages_json
from llmledger.instrumentation._internal.attribution import FallbackOrigin
from llmledger.instrumentation._internal.provider import Endpoint
from llmledger.instrumentation._internal.usage import TokenUsage

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.pricing import CallCost

FIRST_ATTEMPT: FallbackOrigin = (0, None, None)


def request_model(kwargs: Mapping[str, Any]) -> str | None:
    """The model the app asked for (``None`` when it gave none: no name is invented)."""
    model = kwargs.get("model")
    return model if isinstance(model, str) else None


def span_name(api: ApiSpec, model: str | None) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``, the operation alone without a model."""
    return f"{api.operation} {model}" if model else api.operation


def request_attributes(
    api: ApiSpec,
    endpoint: Endpoint,
    kwargs: Mapping[str, Any],
    *,
    attribution: Mapping[str, str],
    origin: FallbackOrigin = FIRST_ATTEMPT,
    capture_content: bool = False,
) -> dict[str, AttrValue]:
    """The attributes a call's span starts with.

    ``attribution`` is who the call is billed to (``tenant.id``, ...); ``origin`` is
    (failed attempts before this one, the last failed model, its error type).
    """
    attrs: dict[str, AttrValue] = {
        A.OPERATION_NAME: api.operation,
        **endpoint.attributes,
        A.OPENAI_API_TYPE: api.api_type,
    }
    attrs[A.REQUEST_STREAM] = kwargs.get("stream") is True
    model = kwargs.get("model")
    if isinstance(model, str):
        attrs[A.REQUEST_MODEL] = model
    api.add_request_attributes(kwargs, attrs)
    conversation = kwargs.get("conversation")
    if conversation is not None:
        if isinstance(conversation, str):
            attrs[A.CONVERSATION_ID] = conversation
        elif isinstance(conversation, Mapping) and isinstance(conversation.get("id"), str):  # pyright: ignore[reportUnknownMemberType]
            attrs[A.CONVERSATION_ID] = conversation["id"]  # pyright: ignore[reportUnknownArgumentType]
    attrs.update(attribution)
    attempt, from_model, from_error = origin
    attrs[A.FALLBACK] = attempt > 0
    attrs[A.FALLBACK_ATTEMPT] = attempt
    if attempt:
        # What this fallback replaced, so "which model falls back to which" needs no join.
        if from_model is not None:
            attrs[A.FALLBACK_FROM_MODEL] = from_model
        if from_error is not None:
            attrs[A.FALLBACK_FROM_ERROR] = from_error
    if capture_content:
        content = messages_json(api.input_messages(kwargs))
        if content is not None:
            attrs[A.INPUT_MESSAGES] = content
    return attrs


def result_attributes(
    facts: ResponseFacts,
    usage: TokenUsage | None,
    cost: CallCost | None,
    *,
    error_type: str | None = None,
    time_to_first_chunk_s: float | None = None,
    capture_content: bool = False,
) -> dict[str, AttrValue]:
    """The attributes a call's span ends with: what the response said, its tokens and cost.

    ``usage`` is the call's settled counts (reported, or estimated when the API reported
    none), which may differ from ``facts.usage``; ``cost`` is ``None`` when unpriced.
    """
    attrs: dict[str, AttrValue] = {}
    if facts.response_model is not None:
        attrs[A.RESPONSE_MODEL] = facts.response_model
    if facts.response_id is not None:
        attrs[A.RESPONSE_ID] = facts.response_id
    if facts.finish_reasons:
        attrs[A.RESPONSE_FINISH_REASONS] = tuple(facts.finish_reasons)
    if facts.service_tier is not None:
        attrs[A.OPENAI_RESPONSE_SERVICE_TIER] = facts.service_tier
    if facts.system_fingerprint is not None:
        attrs[A.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = facts.system_fingerprint
    if time_to_first_chunk_s is not None:
        attrs[A.RESPONSE_TIME_TO_FIRST_CHUNK] = time_to_first_chunk_s
    if usage is not None:
        attrs.update(usage_attributes(usage))
    if cost is not None:
        attrs.update(cost_attributes(cost))
    if error_type is not None:
        attrs[A.ERROR_TYPE] = error_type
    if capture_content:
        messages = facts.output_messages
        if messages is None and facts.output_parts:  # a stream: its text, as one message
            messages = [{"role": "assistant", "content": "".join(facts.output_parts)}]
        content = messages_json(messages)
        if content is not None:
            attrs[A.OUTPUT_MESSAGES] = content
    return attrs


def usage_attributes(usage: TokenUsage) -> dict[str, AttrValue]:
    """Token counts on the semantic conventions' names; an unreported count is left out, never 0."""
    attrs: dict[str, AttrValue] = {}
    if usage.input_tokens is not None:
        attrs[A.USAGE_INPUT_TOKENS] = usage.input_tokens
    if usage.output_tokens is not None:
        attrs[A.USAGE_OUTPUT_TOKENS] = usage.output_tokens
    if usage.cached_input_tokens:
        attrs[A.USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
    if usage.cache_write_tokens:
        attrs[A.USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attrs[A.USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
    if usage.estimated:
        attrs[A.USAGE_ESTIMATED] = True
    return attrs


def cost_attributes(cost: CallCost) -> dict[str, AttrValue]:
    """The span attributes that carry a call's cost."""
    # Floats only because the span wire format demands them: a price's few significant
    # digits survive the float's shortest repr, which the ClickHouse tables parse back into
    # Decimal exactly.
    return {
        A.USAGE_COST: float(cost.total),
        A.COST_INPUT: float(cost.input),
        A.COST_OUTPUT: float(cost.output),
        A.COST_SOURCE: cost.source,
    }
