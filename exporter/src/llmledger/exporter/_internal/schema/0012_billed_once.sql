-- Billed once: llm_calls and the rollups count one provider response once, however many
-- spans describe it (llmledger's, the provider SDK's own, OpenLLMetry's, ...).
--
-- otel_traces --llm_calls_mv--> llm_spans (Null: typed spans with call_key and call_rank)
--   --llm_call_changes_mv--> llm_call_changes (Null: +1 new winner, -1 the span it replaced)
--       --llm_call_rows_mv--> llm_call_rows (ReplacingMergeTree(call_version, call_deleted))
--       --llm_usage_hourly_mv / llm_usage_daily_mv--> the rollups (signed sums)
-- llm_calls becomes a view: llm_call_rows FINAL (the replaced spans' rows dropped), the
-- contract's columns plus response_id. Each view's one definition is in schema/views/;
-- schema apply creates the views after the last migration.
--
-- The existing llm_calls rows move to llm_call_rows, one per call: spans of the same
-- response already stored (found through otel_traces' response ids) keep their best
-- span, and the rollups lose the others (a -1 row each, the same measures the views
-- use). Like every migration this runs with the store idle.
DROP VIEW IF EXISTS ${db}.llm_calls_mv ${on_cluster};

DROP VIEW IF EXISTS ${db}.llm_usage_hourly_mv ${on_cluster};

DROP VIEW IF EXISTS ${db}.llm_usage_daily_mv ${on_cluster};

CREATE TABLE IF NOT EXISTS ${db}.llm_spans ${on_cluster} (
    ${call_columns},
    call_rank UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS ${db}.llm_call_changes ${on_cluster} (
    ${call_columns},
    call_rank UInt64,
    new_rank UInt64,
    sign Int8,
    first_seen Bool
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS ${db}.llm_call_rows ${on_cluster} (
    ${call_columns},
    call_rank UInt64,
    call_version UInt64,
    call_deleted UInt8
) ENGINE = ${replacing_merge_tree}(call_version, call_deleted)
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (tenant_id, toStartOfHour(Timestamp), user_id, feature, Timestamp, call_key)
${calls_ttl}
SETTINGS index_granularity = 8192${dedup_window}${embedded_merge_width};

-- Counts become signed: a call whose winning span changes leaves the old span's group.
ALTER TABLE ${db}.llm_usage_hourly ${on_cluster}
    MODIFY COLUMN calls SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN errors SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN fallbacks SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN input_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN cached_input_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN cache_write_input_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN output_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN reasoning_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN unpriced_calls SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN estimated_calls SimpleAggregateFunction(sum, Int64);

ALTER TABLE ${db}.llm_usage_daily ${on_cluster}
    MODIFY COLUMN calls SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN errors SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN fallbacks SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN input_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN cached_input_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN cache_write_input_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN output_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN reasoning_tokens SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN unpriced_calls SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN estimated_calls SimpleAggregateFunction(sum, Int64);

-- The calls stored so far, with their call identity and rank as the view computes them.
-- A scratch table on the node running the migration (the inserts below replicate).
DROP TABLE IF EXISTS ${db}.llm_calls_keyed_0012;

CREATE TABLE ${db}.llm_calls_keyed_0012 ENGINE = Memory AS
SELECT
    c.*,
    t.response_id AS response_id,
    t.ours AS ours,
    c.input_tokens + c.output_tokens > 0 AS has_usage,
    NOT startsWith(c.cost_source, 'model_prices') AND NOT startsWith(c.cost_source, 'unpriced') AS carries_cost,
    ${call_key} AS call_key,
    ${call_rank} AS call_rank
FROM ${db}.llm_calls AS c
LEFT ANY JOIN (
    SELECT TraceId, SpanId, SpanAttributes['gen_ai.response.id'] AS response_id,
           startsWith(ScopeName, 'llmledger') AS ours
    FROM ${db}.otel_traces
) AS t ON t.TraceId = c.TraceId AND t.SpanId = c.SpanId;

INSERT INTO ${db}.llm_call_rows
SELECT ${call_column_names}, call_rank, 2 * call_rank + 1 AS call_version, 0 AS call_deleted
FROM ${db}.llm_calls_keyed_0012
ORDER BY call_key, call_rank DESC
LIMIT 1 BY call_key;

INSERT INTO ${db}.llm_usage_hourly
SELECT
    toStartOfHour(c.Timestamp, 'UTC') AS hour,
    c.tenant_id AS tenant_id,
    c.user_id AS user_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    ${usage_measures}
FROM (
    SELECT *, toInt8(-1) AS sign, false AS first_seen
    FROM ${db}.llm_calls_keyed_0012
    ORDER BY call_key, call_rank DESC
    LIMIT 1000000000000 OFFSET 1 BY call_key
) AS c
GROUP BY hour, tenant_id, user_id, feature, provider, model, operation;

INSERT INTO ${db}.llm_usage_daily
SELECT
    toDate(c.Timestamp, 'UTC') AS day,
    c.tenant_id AS tenant_id,
    c.feature AS feature,
    c.provider AS provider,
    c.response_model AS model,
    c.operation AS operation,
    ${usage_measures}
FROM (
    SELECT *, toInt8(-1) AS sign, false AS first_seen
    FROM ${db}.llm_calls_keyed_0012
    ORDER BY call_key, call_rank DESC
    LIMIT 1000000000000 OFFSET 1 BY call_key
) AS c
GROUP BY day, tenant_id, feature, provider, model, operation;

DROP TABLE IF EXISTS ${db}.llm_calls_keyed_0012;

DROP TABLE IF EXISTS ${db}.llm_calls ${on_cluster} SYNC;

CREATE VIEW IF NOT EXISTS ${db}.llm_calls ${on_cluster} AS
SELECT ${call_column_names}
FROM ${db}.llm_call_rows FINAL
