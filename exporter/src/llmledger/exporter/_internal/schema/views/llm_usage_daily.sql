-- llmledger: materialized view llm_usage_daily_mv to llm_usage_daily
-- llm_calls rolled up per day x tenant x feature x provider x model x operation (no user),
-- from the same change stream as the hourly rollup. The single definition.
SELECT
    toDate(c.Timestamp, 'UTC') AS day,
    c.tenant_id AS tenant_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    ${usage_measures}
FROM ${db}.llm_call_changes AS c
GROUP BY day, tenant_id, feature, provider, model, operation
