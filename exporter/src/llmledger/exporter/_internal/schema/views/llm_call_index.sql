-- llmledger: materialized view llm_call_index_mv to llm_call_index
-- Each new winning span of a call, by call_key (0015_call_index.sql): what
-- llm_call_changes_mv looks up. The single definition.
SELECT
    call_key, call_rank, Timestamp, tenant_id, user_id, feature, provider, operation, response_model,
    input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens,
    cost_usd, tokens_estimated, is_fallback, success
FROM ${db}.llm_call_changes
WHERE sign = 1
