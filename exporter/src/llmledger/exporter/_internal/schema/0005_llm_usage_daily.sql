-- A coarser rollup for tenant-level dashboards and budgets: one row per day x tenant x
-- feature x provider x model x operation (no user), filled from llm_calls by
-- llm_usage_daily_mv. The hourly rollup keeps the user dimension, so with many users it
-- is nearly as large as llm_calls; "cost per tenant per day" reads this table instead.
-- Same measures and semantics as llm_usage_hourly.
CREATE TABLE IF NOT EXISTS ${db}.llm_usage_daily ${on_cluster} (
    day Date,
    tenant_id LowCardinality(String),
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
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, feature, provider, model, operation)
${rollup_day_ttl}
SETTINGS index_granularity = 8192${dedup_window};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.llm_usage_daily_mv ${on_cluster}
TO ${db}.llm_usage_daily
AS SELECT
    toDate(c.Timestamp, 'UTC') AS day,
    c.tenant_id AS tenant_id,
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
GROUP BY day, tenant_id, feature, provider, model, operation;

-- Backfill the calls that landed before this migration (the same SELECT as the view).
INSERT INTO ${db}.llm_usage_daily
SELECT
    toDate(c.Timestamp, 'UTC') AS day,
    c.tenant_id AS tenant_id,
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
GROUP BY day, tenant_id, feature, provider, model, operation;
