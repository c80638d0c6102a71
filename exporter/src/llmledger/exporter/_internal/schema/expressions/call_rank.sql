-- Which span of a call wins: llmledger's own first (`ours`), then the one that knows most
-- about the call, then a hash of its ids (deterministic whatever the arrival order).
-- Never 0: 0 stands for "no span yet" in llm_call_changes_mv.
bitShiftLeft(toUInt64(ours), 56)
    + bitShiftLeft(toUInt64(
        (tenant_id != '') + (user_id != '') + (session_id != '') + (conversation_id != '')
        + (feature != '') + has_usage + carries_cost + (cached_input_tokens > 0)
        + (cache_write_input_tokens > 0) + (reasoning_tokens > 0) + (ttft_ns IS NOT NULL)
        + (response_model != request_model)), 48)
    + bitShiftRight(cityHash64(TraceId, SpanId), 16)
    + 1
