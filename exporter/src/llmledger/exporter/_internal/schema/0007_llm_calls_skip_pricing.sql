-- llm_calls_mv (defined by 0003), same rows: spans that carry their own cost
-- (llmledger's, OpenLIT's) no longer search model_prices or strip a date suffix from the
-- model with a regex, ~5% of the engine's time per span for the whole view chain.
-- (Tried and dropped: casting SpanAttributes to Map(String, String) once, and
-- indexOf over mapKeys; both cost more inside an insert than the LowCardinality lookups.)
-- The view is dropped and created again rather than changed with MODIFY QUERY: after
-- MODIFY QUERY, a batch retried by a restarted process was no longer recognised by the
-- views' deduplication (llm_calls counted it twice; tests/collector/test_faults.py).
-- Between the two statements an insert would pass the view by: like the backfills, this
-- runs with the store idle (schema apply, before the collector receives).
DROP VIEW IF EXISTS ${db}.llm_calls_mv ${on_cluster};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.llm_calls_mv ${on_cluster}
TO ${db}.llm_calls
AS SELECT
    s.Timestamp AS Timestamp,
    s.TraceId AS TraceId,
    s.SpanId AS SpanId,
    s.ServiceName AS ServiceName,
    s.tenant_id AS tenant_id,
    s.user_id AS user_id,
    s.session_id AS session_id,
    s.conversation_id AS conversation_id,
    s.feature AS feature,
    s.provider AS provider,
    s.operation AS operation,
    s.request_model AS request_model,
    s.response_model AS response_model,
    s.input_tokens AS input_tokens,
    s.cached_input_tokens AS cached_input_tokens,
    s.output_tokens AS output_tokens,
    s.reasoning_tokens AS reasoning_tokens,
    multiIf(
        s.reported_cost IS NOT NULL, s.reported_cost,
        s.has_usage AND p.model != '',
        CAST(
            (toDecimal128(s.input_tokens - least(s.cached_input_tokens, s.input_tokens), 0) * p.price_input
             + toDecimal128(least(s.cached_input_tokens, s.input_tokens), 0) * ifNull(p.price_cached_input, p.price_input)
             + toDecimal128(s.output_tokens, 0) * p.price_output) / 1000000,
            'Nullable(Decimal(38, 12))'),
        NULL
    ) AS cost_usd,
    multiIf(
        s.reported_cost IS NOT NULL, if(s.reported_source != '', s.reported_source, 'reported'),
        s.has_usage AND p.model != '', concat('model_prices:', p.price_source),
        'unpriced'
    ) AS cost_source,
    s.tokens_estimated AS tokens_estimated,
    s.is_fallback AS is_fallback,
    s.fallback_attempt AS fallback_attempt,
    s.success AS success,
    s.error_type AS error_type,
    s.duration_ns AS duration_ns,
    s.ttft_ns AS ttft_ns,
    s.stream AS stream
FROM (
    SELECT
        Timestamp,
        TraceId,
        SpanId,
        ServiceName,
        SpanAttributes AS a,
        coalesce(
            nullIf(a['tenant.id'], ''),
            nullIf(a['traceloop.association.properties.tenant_id'], ''),
            ResourceAttributes['tenant.id']
        ) AS tenant_id,
        coalesce(
            nullIf(a['user.id'], ''),
            nullIf(a['traceloop.association.properties.user_id'], ''),
            nullIf(a['langfuse.user.id'], ''),
            nullIf(a['gen_ai.request.user'], ''),
            a['llm.user']
        ) AS user_id,
        coalesce(
            nullIf(a['session.id'], ''),
            nullIf(a['traceloop.association.properties.session_id'], ''),
            a['langfuse.session.id']
        ) AS session_id,
        a['gen_ai.conversation.id'] AS conversation_id,
        coalesce(nullIf(a['llmledger.feature'], ''), a['traceloop.workflow.name']) AS feature,
        transform(
            lower(coalesce(nullIf(a['gen_ai.provider.name'], ''), a['gen_ai.system'])),
            ['az.ai.openai', 'az.ai.inference', 'azure_openai', 'vertex_ai', 'gemini', 'bedrock', 'xai'],
            ['azure.ai.openai', 'azure.ai.inference', 'azure.ai.openai', 'gcp.vertex_ai', 'gcp.gemini', 'aws.bedrock', 'x_ai'],
            lower(coalesce(nullIf(a['gen_ai.provider.name'], ''), a['gen_ai.system']))
        ) AS provider,
        transform(
            coalesce(nullIf(a['gen_ai.operation.name'], ''), a['llm.request.type']),
            ['completion', 'embedding'],
            ['text_completion', 'embeddings'],
            coalesce(nullIf(a['gen_ai.operation.name'], ''), a['llm.request.type'])
        ) AS operation,
        a['gen_ai.request.model'] AS request_model,
        coalesce(nullIf(a['gen_ai.response.model'], ''), a['gen_ai.request.model']) AS response_model,
        coalesce(
            toUInt64OrNull(a['gen_ai.usage.input_tokens']),
            toUInt64OrNull(a['gen_ai.usage.prompt_tokens']),
            toUInt64OrNull(a['llm.usage.prompt_tokens'])
        ) AS input_tokens_or_null,
        coalesce(
            toUInt64OrNull(a['gen_ai.usage.output_tokens']),
            toUInt64OrNull(a['gen_ai.usage.completion_tokens']),
            toUInt64OrNull(a['llm.usage.completion_tokens'])
        ) AS output_tokens_or_null,
        input_tokens_or_null IS NOT NULL OR output_tokens_or_null IS NOT NULL AS has_usage,
        ifNull(input_tokens_or_null, 0) AS input_tokens,
        ifNull(output_tokens_or_null, 0) AS output_tokens,
        ifNull(coalesce(
            toUInt64OrNull(a['gen_ai.usage.cache_read.input_tokens']),
            toUInt64OrNull(a['gen_ai.usage.cache_read_input_tokens']),
            toUInt64OrNull(a['gen_ai.usage.cached_tokens'])
        ), 0) AS cached_input_tokens,
        ifNull(coalesce(
            toUInt64OrNull(a['gen_ai.usage.reasoning.output_tokens']),
            toUInt64OrNull(a['gen_ai.usage.reasoning_tokens'])
        ), 0) AS reasoning_tokens,
        toDecimal128OrNull(a['gen_ai.usage.cost'], 12) AS reported_cost,
        a['llmledger.cost.source'] AS reported_source,
        a['llmledger.usage.estimated'] = 'true' AS tokens_estimated,
        a['llmledger.fallback'] = 'true' AS is_fallback,
        toUInt16OrZero(a['llmledger.fallback.attempt']) AS fallback_attempt,
        StatusCode NOT IN ('Error', 'STATUS_CODE_ERROR') AND a['error.type'] = '' AS success,
        if(NOT success AND a['error.type'] = '', '_OTHER', a['error.type']) AS error_type,
        Duration AS duration_ns,
        CAST(round(toFloat64OrNull(a['gen_ai.response.time_to_first_chunk']) * 1000000000), 'Nullable(UInt64)') AS ttft_ns,
        a['gen_ai.request.stream'] = 'true' OR a['llm.is_streaming'] = 'true' AS stream,
        -- The key model_prices is searched with: the model as reported, or without a
        -- date suffix (gpt-4o-2024-08-06 -> gpt-4o) when only the base name is priced.
        transform(provider, ['azure.ai.openai', 'gcp.gemini', 'gcp.vertex_ai', 'aws.bedrock', 'x_ai'],
                  ['azure', 'google', 'google', 'aws', 'x-ai'], provider) AS price_provider,
        lower(response_model) AS exact_model,
        -- Only spans without a reported cost are priced here, so only they pay for the
        -- model_prices lookup and the regex (if() evaluates the branch a row takes).
        if(reported_cost IS NOT NULL, '',
           if((price_provider, exact_model) IN (SELECT provider, model FROM ${db}.model_prices),
              exact_model,
              replaceRegexpOne(exact_model, '-(\\d{4}-\\d{2}-\\d{2}|\\d{8}|\\d{4})$$', ''))) AS price_model
    FROM ${db}.otel_traces
    WHERE operation IN ('chat', 'text_completion', 'embeddings', 'generate_content')
      AND (request_model != '' OR response_model != '' OR has_usage)
) AS s
LEFT ANY JOIN (
    SELECT
        provider,
        model,
        -- A custom price outranks genai-prices; the newest row of a source wins.
        argMax(input_per_mtok, (source = 'custom', updated_at)) AS price_input,
        argMax(cached_input_per_mtok, (source = 'custom', updated_at)) AS price_cached_input,
        argMax(output_per_mtok, (source = 'custom', updated_at)) AS price_output,
        argMax(source, (source = 'custom', updated_at)) AS price_source
    FROM ${db}.model_prices
    GROUP BY provider, model
) AS p ON s.price_provider = p.provider AND s.price_model = p.model;
