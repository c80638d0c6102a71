-- The measures of both rollups over llm_call_changes rows `c`: each is signed, so a call
-- whose winning span changes moves from the old span's group to the new one's. Latency
-- is kept once per call, from the first span seen of it (a t-digest cannot take a
-- value back out).
sum(c.sign) AS calls,
    sum(c.sign * NOT c.success) AS errors,
    sum(c.sign * c.is_fallback) AS fallbacks,
    sum(c.sign * c.input_tokens) AS input_tokens,
    sum(c.sign * c.cached_input_tokens) AS cached_input_tokens,
    sum(c.sign * c.cache_write_input_tokens) AS cache_write_input_tokens,
    sum(c.sign * c.output_tokens) AS output_tokens,
    sum(c.sign * c.reasoning_tokens) AS reasoning_tokens,
    sum(c.sign * ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    sum(c.sign * (c.cost_usd IS NULL AND c.success)) AS unpriced_calls,
    sum(c.sign * c.tokens_estimated) AS estimated_calls,
    quantileTDigestStateIf(c.duration_ns, c.first_seen) AS duration_state,
    quantileTDigestStateIf(assumeNotNull(c.ttft_ns), c.first_seen AND c.ttft_ns IS NOT NULL) AS ttft_state
