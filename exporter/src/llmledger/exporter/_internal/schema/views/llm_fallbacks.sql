-- llmledger: materialized view llm_fallbacks_mv to llm_fallbacks
-- llm_fallbacks_mv: one row per fallback call, with the model and error of the attempt
-- before it. The single definition (the migration creating it backfills from this file).
SELECT
    Timestamp,
    TraceId,
    ${tenant_id} AS tenant_id,
    SpanAttributes[${attr:llmledger.feature}] AS feature,
    SpanAttributes[${attr:llmledger.fallback.from_model}] AS from_model,
    SpanAttributes[${attr:llmledger.fallback.from_error}] AS from_error,
    coalesce(nullIf(SpanAttributes[${attr:gen_ai.response.model}], ''), SpanAttributes[${attr:gen_ai.request.model}]) AS to_model,
    toUInt16OrZero(SpanAttributes[${attr:llmledger.fallback.attempt}]) AS attempt,
    StatusCode NOT IN ('Error', 'STATUS_CODE_ERROR') AND SpanAttributes[${attr:error.type}] = '' AS success
FROM ${db}.otel_traces
WHERE SpanAttributes[${attr:llmledger.fallback}] = 'true'
