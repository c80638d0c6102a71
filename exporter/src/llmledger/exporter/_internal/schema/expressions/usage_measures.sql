-- The measures of both rollups, over llm_calls rows `c`.
count() AS calls,
    countIf(NOT c.success) AS errors,
    countIf(c.is_fallback) AS fallbacks,
    sum(c.input_tokens) AS input_tokens,
    sum(c.cached_input_tokens) AS cached_input_tokens,
    sum(c.cache_write_input_tokens) AS cache_write_input_tokens,
    sum(c.output_tokens) AS output_tokens,
    sum(c.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL AND c.success) AS unpriced_calls,
    countIf(c.tokens_estimated) AS estimated_calls,
    quantileTDigestState(c.duration_ns) AS duration_state,
    quantileTDigestStateIf(assumeNotNull(c.ttft_ns), c.ttft_ns IS NOT NULL) AS ttft_state
