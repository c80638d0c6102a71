-- llm_usage_hourly_mv: llm_calls rolled up per hour x tenant x user x feature x provider x
-- model x operation. The single definition (migrations create the view and backfill
-- from this file). Unknown cost adds nothing to cost_usd and counts in unpriced_calls.
SELECT
    toStartOfHour(c.Timestamp, 'UTC') AS hour,
    c.tenant_id AS tenant_id,
    c.user_id AS user_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    ${usage_measures}
FROM ${db}.llm_calls AS c
GROUP BY hour, tenant_id, user_id, feature, provider, model, operation
