-- llmledger: materialized view llm_calls_mv to llm_spans
-- One typed row per LLM or embedding span of otel_traces, with the identity of the
-- provider response it describes (call_key, expressions/call_key.sql) and its rank among
-- the spans describing that response (call_rank, expressions/call_rank.sql);
-- llm_call_changes_mv turns these into one row per call. The single
-- definition of the view: schema apply creates it from this file.
--
-- Dialects read: llmledger's span contract (GenAI semconv), OpenLLMetry (traceloop),
-- OpenTelemetry contrib openai-v2 old and new, OpenLIT, OpenInference (llm.*), proposed
-- semconv cost attributes (gen_ai.usage.cost.amount/.currency/.source), pydantic-ai and
-- logfire (operation.cost).
--
-- Cost: a reported cost in USD is taken as it is, except a reported 0 with tokens from
-- an instrumentation that is not llmledger's and does not say the provider reported it:
-- OpenLIT writes 0 for every model it has no price for, so that 0 is "unknown" and the
-- call is priced from model_prices. A cost in another currency never enters cost_usd.
-- cost_source says which of these happened. Unknown cost is NULL, never 0.
SELECT
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
    s.cache_write_input_tokens AS cache_write_input_tokens,
    s.output_tokens AS output_tokens,
    s.reasoning_tokens AS reasoning_tokens,
    multiIf(
        s.use_reported, s.reported_cost,
        s.has_usage AND p.model != '', ${price_cost},
        NULL
    ) AS cost_usd,
    multiIf(
        s.use_reported, s.reported_source,
        s.has_usage AND p.model != '',
        concat('model_prices:', p.price_source, s.ignored_note),
        concat('unpriced', s.ignored_note)
    ) AS cost_source,
    s.tokens_estimated AS tokens_estimated,
    s.is_fallback AS is_fallback,
    s.fallback_attempt AS fallback_attempt,
    s.success AS success,
    s.error_type AS error_type,
    s.duration_ns AS duration_ns,
    s.ttft_ns AS ttft_ns,
    s.stream AS stream,
    s.response_id AS response_id,
    s.call_key AS call_key,
    s.call_rank AS call_rank
FROM (
    -- Three levels, each reading the one before as columns: an alias used by another
    -- alias of the same SELECT is analysed again wherever it is used, and this view is
    -- analysed on every insert (its planning, not its per-span work, dominated small
    -- inserts). Level 1 reads the attributes, level 2 the usage and the reported cost,
    -- level 3 what pricing and the call's identity need.
    SELECT
        *,
        if(use_reported, '', lower(coalesce(
            nullIf(a[${attr:openai.response.service_tier}], ''),
            a[${attr:gen_ai.openai.response.service_tier}]
        ))) AS service_tier,
        toDate(Timestamp, 'UTC') AS call_day,
        toUInt32(toUnixTimestamp(Timestamp, 'UTC') % 86400) AS call_second,
        lower(response_model) AS exact_model,
        -- Only spans priced here pay for the model_prices lookup and the regex (if()
        -- evaluates the branch a row takes).
        if(use_reported, ('', ''), ${price_model}) AS price_found,
        price_found.1 AS price_model,
        price_found.2 AS price_lookup,
        reported_cost IS NOT NULL AS carries_cost,
        ${call_key} AS call_key,
        ${call_rank} AS call_rank
    FROM (
        SELECT
            *,
            -- input_tokens includes cache reads and writes (semconv); each share is priced
            -- at most once, whatever a dialect's counts add up to.
            least(cached_input_tokens, input_tokens) AS priced_cache_read,
            least(cache_write_input_tokens, input_tokens - priced_cache_read) AS priced_cache_write,
            least(reasoning_tokens, output_tokens) AS priced_reasoning,
            reported_cost IS NOT NULL
                AND (reported_cost != 0 OR reported_is_priced OR input_tokens + output_tokens = 0) AS reported_known,
            reported_known AND reported_currency = 'USD' AS use_reported,
            multiIf(
                reported_cost IS NULL, '',
                NOT reported_known, ' (reported 0 ignored)',
                reported_currency != 'USD', concat(' (reported ', reported_currency, ' ignored)'),
                ''
            ) AS ignored_note,
            if(NOT success AND error_type_attribute = '', '_OTHER', error_type_attribute) AS error_type,
            -- OpenLIT writes a stream's time to first chunk as
            -- gen_ai.server.time_to_first_token; on a call that is not streamed that name
            -- holds the whole response time: no chunk.
            CAST(round(coalesce(first_chunk_seconds, if(stream, first_token_seconds, NULL)) * 1000000000),
                 'Nullable(UInt64)') AS ttft_ns
        FROM (
            SELECT
                Timestamp,
                TraceId,
                SpanId,
                ServiceName,
                startsWith(ScopeName, 'llmledger') AS ours,
                SpanAttributes AS a,
                ${tenant_id} AS tenant_id,
                coalesce(
                    nullIf(a[${attr:user.id}], ''),
                    nullIf(a[${attr:traceloop.association.properties.user_id}], ''),
                    nullIf(a[${attr:langfuse.user.id}], ''),
                    nullIf(a[${attr:gen_ai.user}], ''),
                    nullIf(a[${attr:gen_ai.request.user}], ''),
                    a[${attr:llm.user}]
                ) AS user_id,
                coalesce(
                    nullIf(a[${attr:session.id}], ''),
                    nullIf(a[${attr:traceloop.association.properties.session_id}], ''),
                    a[${attr:langfuse.session.id}]
                ) AS session_id,
                a[${attr:gen_ai.conversation.id}] AS conversation_id,
                coalesce(nullIf(a[${attr:llmledger.feature}], ''), a[${attr:traceloop.workflow.name}]) AS feature,
                ${provider} AS provider,
                coalesce(
                    nullIf(a[${attr:gen_ai.operation.name}], ''),
                    nullIf(a[${attr:llm.request.type}], ''),
                    transform(a[${attr:openinference.span.kind}], ['LLM', 'EMBEDDING'], ['chat', 'embeddings'], '')
                ) AS operation_name,
                transform(operation_name, ['completion', 'embedding'], ['text_completion', 'embeddings'], operation_name)
                    AS operation,
                coalesce(nullIf(a[${attr:gen_ai.request.model}], ''), a[${attr:llm.model_name}]) AS request_model,
                coalesce(nullIf(a[${attr:gen_ai.response.model}], ''), request_model) AS response_model,
                a[${attr:gen_ai.response.id}] AS response_id,
                coalesce(
                    toUInt64OrNull(a[${attr:gen_ai.usage.input_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.prompt_tokens}]),
                    toUInt64OrNull(a[${attr:llm.usage.prompt_tokens}]),
                    toUInt64OrNull(a[${attr:llm.token_count.prompt}])
                ) AS input_tokens_or_null,
                coalesce(
                    toUInt64OrNull(a[${attr:gen_ai.usage.output_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.completion_tokens}]),
                    toUInt64OrNull(a[${attr:llm.usage.completion_tokens}]),
                    toUInt64OrNull(a[${attr:llm.token_count.completion}])
                ) AS output_tokens_or_null,
                input_tokens_or_null IS NOT NULL OR output_tokens_or_null IS NOT NULL AS has_usage,
                ifNull(input_tokens_or_null, 0) AS input_tokens,
                ifNull(output_tokens_or_null, 0) AS output_tokens,
                ifNull(coalesce(
                    toUInt64OrNull(a[${attr:gen_ai.usage.cache_read.input_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.cache_read_input_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.cached_tokens}]),
                    toUInt64OrNull(a[${attr:llm.token_count.prompt_details.cache_read}])
                ), 0) AS cached_input_tokens,
                ifNull(coalesce(
                    toUInt64OrNull(a[${attr:gen_ai.usage.cache_creation.input_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.cache_creation_input_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.cache_write.input_tokens}]),
                    toUInt64OrNull(a[${attr:llm.token_count.prompt_details.cache_write}])
                ), 0) AS cache_write_input_tokens,
                ifNull(coalesce(
                    toUInt64OrNull(a[${attr:gen_ai.usage.reasoning.output_tokens}]),
                    toUInt64OrNull(a[${attr:gen_ai.usage.reasoning_tokens}]),
                    toUInt64OrNull(a[${attr:llm.token_count.completion_details.reasoning}])
                ), 0) AS reasoning_tokens,
                toDecimal128OrNull(coalesce(
                    nullIf(a[${attr:gen_ai.usage.cost}], ''),
                    nullIf(a[${attr:gen_ai.usage.cost.amount}], ''),
                    nullIf(a[${attr:operation.cost}], ''),
                    nullIf(a[${attr:llm.cost.total}], '')
                ), 12) AS reported_cost,
                upper(coalesce(nullIf(a[${attr:gen_ai.usage.cost.currency}], ''), 'USD')) AS reported_currency,
                -- llmledger's spans say which price book priced them (its 0 is a price: a
                -- custom free model); a provider's own report is a price too. Anything else
                -- that reports 0 for a call with tokens does not know the price.
                a[${attr:llmledger.cost.source}] != '' OR a[${attr:gen_ai.usage.cost.source}] = 'provider' AS reported_is_priced,
                coalesce(nullIf(a[${attr:llmledger.cost.source}], ''), nullIf(a[${attr:gen_ai.usage.cost.source}], ''), 'reported')
                    AS reported_source,
                a[${attr:llmledger.usage.estimated}] = 'true' AS tokens_estimated,
                a[${attr:llmledger.fallback}] = 'true' AS is_fallback,
                toUInt16OrZero(a[${attr:llmledger.fallback.attempt}]) AS fallback_attempt,
                a[${attr:error.type}] AS error_type_attribute,
                StatusCode NOT IN ('Error', 'STATUS_CODE_ERROR') AND error_type_attribute = '' AS success,
                Duration AS duration_ns,
                toFloat64OrNull(a[${attr:gen_ai.response.time_to_first_chunk}]) AS first_chunk_seconds,
                toFloat64OrNull(a[${attr:gen_ai.server.time_to_first_token}]) AS first_token_seconds,
                a[${attr:gen_ai.request.stream}] = 'true' OR a[${attr:gen_ai.is_streaming}] = 'true' OR a[${attr:llm.is_streaming}] = 'true'
                    AS stream
            FROM ${db}.otel_traces
        )
        WHERE operation IN ('chat', 'text_completion', 'embeddings', 'generate_content')
          AND (request_model != '' OR response_model != '' OR has_usage)
    )
) AS s
LEFT ANY JOIN ${current_prices} AS p ON ${price_match}
