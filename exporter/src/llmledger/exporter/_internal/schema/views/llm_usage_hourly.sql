-- llmledger: materialized view llm_usage_hourly_mv to llm_usage_hourly
-- llm_calls rolled up per hour x tenant x user x feature x provider x model x operation,
-- from the change stream of calls (llm_call_changes: +1 for a call's winning span, -1 for
-- the span it replaced), so every sum equals llm_calls' exactly. The single definition.
SELECT
    toStartOfHour(c.Timestamp, 'UTC') AS hour,
    c.tenant_id AS tenant_id,
    c.user_id AS user_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    ${usage_measures}
FROM ${db}.llm_call_changes AS c
GROUP BY hour, tenant_id, user_id, feature, provider, model, operation
