-- llm_usage_daily_mv: llm_calls rolled up per day x tenant x feature x provider x model x
-- operation (no user). The single definition; same measures as the hourly rollup.
SELECT
    toDate(c.Timestamp, 'UTC') AS day,
    c.tenant_id AS tenant_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    ${usage_measures}
FROM ${db}.llm_calls AS c
GROUP BY day, tenant_id, feature, provider, model, operation
