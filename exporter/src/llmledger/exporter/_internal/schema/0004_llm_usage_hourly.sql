-- The rollup dashboards read: one row per hour x tenant x user x feature x provider x
-- model x operation, filled from llm_calls by llm_usage_hourly_mv. Sums are exact
-- (Decimal cost, integer tokens); successful calls without a known cost are counted in
-- unpriced_calls rather than summed as 0. Latency keeps t-digest states, so any
-- quantile can be read later: quantileTDigestMerge(0.95)(duration_state).
CREATE TABLE IF NOT EXISTS ${db}.llm_usage_hourly ${on_cluster} (
    hour DateTime('UTC'),
    tenant_id LowCardinality(String),
    user_id String,
    feature LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    operation LowCardinality(String),
    calls SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    fallbacks SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    cached_input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 12)),
    unpriced_calls SimpleAggregateFunction(sum, UInt64),
    estimated_calls SimpleAggregateFunction(sum, UInt64),
    duration_state AggregateFunction(quantileTDigest, UInt64),
    ttft_state AggregateFunction(quantileTDigest, UInt64)
) ENGINE = ${aggregating_merge_tree}
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, user_id, feature, provider, model, operation)
${rollup_ttl}
SETTINGS index_granularity = 8192${dedup_window};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.llm_usage_hourly_mv ${on_cluster}
TO ${db}.llm_usage_hourly
AS SELECT
    toStartOfHour(c.Timestamp, 'UTC') AS hour,
    c.tenant_id AS tenant_id,
    c.user_id AS user_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    count() AS calls,
    countIf(NOT c.success) AS errors,
    countIf(c.is_fallback) AS fallbacks,
    sum(c.input_tokens) AS input_tokens,
    sum(c.cached_input_tokens) AS cached_input_tokens,
    sum(c.output_tokens) AS output_tokens,
    sum(c.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL AND c.success) AS unpriced_calls,
    countIf(c.tokens_estimated) AS estimated_calls,
    quantileTDigestState(c.duration_ns) AS duration_state,
    quantileTDigestStateIf(assumeNotNull(c.ttft_ns), c.ttft_ns IS NOT NULL) AS ttft_state
FROM ${db}.llm_calls AS c
GROUP BY hour, tenant_id, user_id, feature, provider, model, operation;

-- Backfill the calls that landed before this migration (the same SELECT as the view).
-- Runs once, with the store idle (schema apply runs before the collector receives).
INSERT INTO ${db}.llm_usage_hourly
SELECT
    toStartOfHour(c.Timestamp, 'UTC') AS hour,
    c.tenant_id AS tenant_id,
    c.user_id AS user_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    count() AS calls,
    countIf(NOT c.success) AS errors,
    countIf(c.is_fallback) AS fallbacks,
    sum(c.input_tokens) AS input_tokens,
    sum(c.cached_input_tokens) AS cached_input_tokens,
    sum(c.output_tokens) AS output_tokens,
    sum(c.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(c.cost_usd, toDecimal128(0, 12))) AS cost_usd,
    countIf(c.cost_usd IS NULL AND c.success) AS unpriced_calls,
    countIf(c.tokens_estimated) AS estimated_calls,
    quantileTDigestState(c.duration_ns) AS duration_state,
    quantileTDigestStateIf(assumeNotNull(c.ttft_ns), c.ttft_ns IS NOT NULL) AS ttft_state
FROM ${db}.llm_calls AS c
GROUP BY hour, tenant_id, user_id, feature, provider, model, operation;
