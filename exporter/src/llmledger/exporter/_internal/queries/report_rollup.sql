-- llmledger report from the hourly rollup. Only identifiers are substituted
-- (${db}, ${dims}, ${order}); every value is a bound parameter.
SELECT
    ${dims},
    sum(calls) AS calls,
    sum(errors) AS errors,
    sum(fallbacks) AS fallbacks,
    sum(input_tokens) AS input_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_input_tokens) AS cache_write_input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_usd) AS cost_usd,
    sum(unpriced_calls) AS unpriced_calls
FROM ${db}.llm_usage_hourly
WHERE hour >= {since:DateTime('UTC')}
  AND hour < {until:DateTime('UTC')}
  AND (empty({tenants:Array(String)}) OR has({tenants:Array(String)}, tenant_id))
  AND (empty({users:Array(String)}) OR has({users:Array(String)}, user_id))
  AND (empty({features:Array(String)}) OR has({features:Array(String)}, feature))
  AND (empty({models:Array(String)}) OR has({models:Array(String)}, model))
  AND (empty({providers:Array(String)}) OR has({providers:Array(String)}, provider))
GROUP BY ${dims}
ORDER BY ${order}
LIMIT {limit:UInt32}
