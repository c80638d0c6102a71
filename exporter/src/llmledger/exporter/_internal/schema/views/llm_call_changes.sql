-- llmledger: materialized view llm_call_changes_mv to llm_call_changes
-- Billed once: for each call (call_key) among the spans just inserted, its best span is
-- compared with the call's current winner (llm_call_index, found by key). A better span (higher
-- call_rank) becomes the winner: +1 for it, and -1 for the span it replaces, if any. A
-- span that is not better — a worse one, or the same span replayed — changes nothing.
-- So llm_calls and the rollups count one provider response once, whichever spans
-- describe it and however far apart their batches arrive, as long as the spans' start
-- times are within 15 minutes of each other (the window searched, which keeps the
-- lookup to the recent rows). Inserts of one store are applied one after another (the
-- collector's drain and the direct exporter write one batch at a time). The single
-- definition of the view.
--
-- A -1 row carries the replaced span's place: its sort key in llm_call_rows and its group
-- and measures in the rollups (what llm_call_index keeps); its other columns are the new
-- span's and nothing reads them (the row only deletes and subtracts).
SELECT
    if(sign = 1, n.Timestamp, o.Timestamp) AS Timestamp,
    n.TraceId AS TraceId,
    n.SpanId AS SpanId,
    n.ServiceName AS ServiceName,
    if(sign = 1, n.tenant_id, o.tenant_id) AS tenant_id,
    if(sign = 1, n.user_id, o.user_id) AS user_id,
    n.session_id AS session_id,
    n.conversation_id AS conversation_id,
    if(sign = 1, n.feature, o.feature) AS feature,
    if(sign = 1, n.provider, o.provider) AS provider,
    if(sign = 1, n.operation, o.operation) AS operation,
    n.request_model AS request_model,
    if(sign = 1, n.response_model, o.response_model) AS response_model,
    if(sign = 1, n.input_tokens, o.input_tokens) AS input_tokens,
    if(sign = 1, n.cached_input_tokens, o.cached_input_tokens) AS cached_input_tokens,
    if(sign = 1, n.cache_write_input_tokens, o.cache_write_input_tokens) AS cache_write_input_tokens,
    if(sign = 1, n.output_tokens, o.output_tokens) AS output_tokens,
    if(sign = 1, n.reasoning_tokens, o.reasoning_tokens) AS reasoning_tokens,
    if(sign = 1, n.cost_usd, o.cost_usd) AS cost_usd,
    n.cost_source AS cost_source,
    if(sign = 1, n.tokens_estimated, o.tokens_estimated) AS tokens_estimated,
    if(sign = 1, n.is_fallback, o.is_fallback) AS is_fallback,
    n.fallback_attempt AS fallback_attempt,
    if(sign = 1, n.success, o.success) AS success,
    n.error_type AS error_type,
    n.duration_ns AS duration_ns,
    n.ttft_ns AS ttft_ns,
    n.stream AS stream,
    n.response_id AS response_id,
    n.call_key AS call_key,
    if(sign = 1, n.call_rank, o.call_rank) AS call_rank,
    n.call_rank AS new_rank,
    sign,
    sign = 1 AND o.call_rank = 0 AS first_seen
FROM (
    SELECT * FROM ${db}.llm_spans ORDER BY call_key, call_rank DESC LIMIT 1 BY call_key
) AS n
LEFT ANY JOIN (
    SELECT *
    FROM ${db}.llm_call_index
    WHERE call_key IN (SELECT call_key FROM ${db}.llm_spans)
      AND Timestamp >= (SELECT min(Timestamp) FROM ${db}.llm_spans) - INTERVAL 15 MINUTE
      AND Timestamp <= (SELECT max(Timestamp) FROM ${db}.llm_spans) + INTERVAL 15 MINUTE
    ORDER BY call_key, call_rank DESC
    LIMIT 1 BY call_key
) AS o ON n.call_key = o.call_key
ARRAY JOIN [1, -1] AS sign
WHERE n.call_rank > o.call_rank AND (sign = 1 OR o.call_rank != 0)
