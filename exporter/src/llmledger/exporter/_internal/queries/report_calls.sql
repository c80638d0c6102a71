-- llmledger report from llm_calls, for groupings the rollup does not keep (conversation).
-- Only identifiers are substituted (${db}, ${dims}, ${order}); values are bound.
SELECT
    ${dims},
    count() AS calls,
    countIf(NOT c.success) AS errors,
    countIf(c.is_fallback) AS fallbacks,
    sum(c.input_tokens) AS input_tokens,
    sum(c.cached_input_tokens) AS cached_input_tokens,
    sum(c.cache_write_input_tokens) AS cache_write_input_tokens,
    sum(c.output_tokens) AS output_tokens,
    sum(c.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL AND c.success) AS unpriced_calls
FROM ${db}.llm_calls AS c
WHERE c.Timestamp >= {since:DateTime('UTC')}
  AND c.Timestamp < {until:DateTime('UTC')}
  AND (empty({tenants:Array(String)}) OR has({tenants:Array(String)}, c.tenant_id))
  AND (empty({users:Array(String)}) OR has({users:Array(String)}, c.user_id))
  AND (empty({features:Array(String)}) OR has({features:Array(String)}, c.feature))
  AND (empty({models:Array(String)}) OR has({models:Array(String)}, c.response_model))
  AND (empty({providers:Array(String)}) OR has({providers:Array(String)}, c.provider))
GROUP BY ${dims}
ORDER BY ${order}
LIMIT {limit:UInt32}
