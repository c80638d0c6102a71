-- Fallbacks and what they replaced: one row per fallback call (a span with
-- llmledger.fallback = true), with the model and error of the attempt before it as the
-- instrumentation records them (llmledger.fallback.from_model / from_error). "Which
-- model falls back to which" reads this small table instead of pairing attempts across
-- every failed call's trace in llm_calls. Fallback spans without the origin attributes
-- (older instrumentation) land with empty from_model and from_error.
CREATE TABLE IF NOT EXISTS ${db}.llm_fallbacks ${on_cluster} (
    Timestamp DateTime64(9),
    TraceId String,
    tenant_id LowCardinality(String),
    feature LowCardinality(String),
    from_model LowCardinality(String),
    from_error LowCardinality(String),
    to_model LowCardinality(String),
    attempt UInt16,
    success Bool
) ENGINE = ${merge_tree}
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (tenant_id, Timestamp)
${calls_ttl}
SETTINGS index_granularity = 8192${dedup_window};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.llm_fallbacks_mv ${on_cluster}
TO ${db}.llm_fallbacks
AS SELECT
    Timestamp,
    TraceId,
    coalesce(
        nullIf(SpanAttributes['tenant.id'], ''),
        nullIf(SpanAttributes['traceloop.association.properties.tenant_id'], ''),
        ResourceAttributes['tenant.id']
    ) AS tenant_id,
    SpanAttributes['llmledger.feature'] AS feature,
    SpanAttributes['llmledger.fallback.from_model'] AS from_model,
    SpanAttributes['llmledger.fallback.from_error'] AS from_error,
    coalesce(nullIf(SpanAttributes['gen_ai.response.model'], ''), SpanAttributes['gen_ai.request.model']) AS to_model,
    toUInt16OrZero(SpanAttributes['llmledger.fallback.attempt']) AS attempt,
    StatusCode NOT IN ('Error', 'STATUS_CODE_ERROR') AND SpanAttributes['error.type'] = '' AS success
FROM ${db}.otel_traces
WHERE SpanAttributes['llmledger.fallback'] = 'true';

-- Backfill the fallbacks that landed before this migration (the same SELECT as the view).
INSERT INTO ${db}.llm_fallbacks
SELECT
    Timestamp,
    TraceId,
    coalesce(
        nullIf(SpanAttributes['tenant.id'], ''),
        nullIf(SpanAttributes['traceloop.association.properties.tenant_id'], ''),
        ResourceAttributes['tenant.id']
    ) AS tenant_id,
    SpanAttributes['llmledger.feature'] AS feature,
    SpanAttributes['llmledger.fallback.from_model'] AS from_model,
    SpanAttributes['llmledger.fallback.from_error'] AS from_error,
    coalesce(nullIf(SpanAttributes['gen_ai.response.model'], ''), SpanAttributes['gen_ai.request.model']) AS to_model,
    toUInt16OrZero(SpanAttributes['llmledger.fallback.attempt']) AS attempt,
    StatusCode NOT IN ('Error', 'STATUS_CODE_ERROR') AND SpanAttributes['error.type'] = '' AS success
FROM ${db}.otel_traces
WHERE SpanAttributes['llmledger.fallback'] = 'true'
