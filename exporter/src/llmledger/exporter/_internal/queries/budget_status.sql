-- Spend against every budget for the period that contains {now}. Only ${db} is substituted.
-- A tenant budget (user_id = '') counts the whole tenant; a user budget counts that user.
-- Spend comes from the hourly rollup: the period is whole hours up to {now}.
WITH
    toStartOfDay({now:DateTime('UTC')}, 'UTC') AS day_start,
    toDateTime(toStartOfMonth({now:DateTime('UTC')}), 'UTC') AS month_start
SELECT
    b.tenant_id AS tenant_id,
    b.user_id AS user_id,
    toString(b.period) AS period,
    toString(b.enforcement) AS enforcement,
    b.limit_usd AS limit_usd,
    if(b.period = 'daily', day_start, month_start) AS period_start,
    if(b.period = 'daily', s.day_spent, s.month_spent) AS spent_usd
FROM (SELECT tenant_id, user_id, period, enforcement, limit_usd FROM ${db}.budgets FINAL) AS b
LEFT JOIN (
    SELECT tenant_id, '' AS user_id,
           sumIf(cost_usd, hour >= day_start) AS day_spent, sum(cost_usd) AS month_spent
    FROM ${db}.llm_usage_hourly
    WHERE hour >= month_start AND hour <= {now:DateTime('UTC')}
    GROUP BY tenant_id
    UNION ALL
    SELECT tenant_id, user_id,
           sumIf(cost_usd, hour >= day_start) AS day_spent, sum(cost_usd) AS month_spent
    FROM ${db}.llm_usage_hourly
    WHERE hour >= month_start AND hour <= {now:DateTime('UTC')} AND user_id != ''
    GROUP BY tenant_id, user_id
) AS s ON s.tenant_id = b.tenant_id AND s.user_id = b.user_id
ORDER BY tenant_id, user_id, period
