-- The newest price book in model_prices (the last `llmledger prices sync`), one row per
-- (provider, model) with its rows as parallel arrays, thresholds descending, for
-- expressions/price_index.sql to pick from. Open-ended periods become the Date range's ends.
(
    SELECT
        provider,
        model,
        groupArray(lookup) AS price_lookups,
        groupArray(service_tier) AS price_tiers,
        groupArray(ifNull(valid_from, toDate(0))) AS price_valid_froms,
        groupArray(ifNull(valid_until, toDate('2149-06-06'))) AS price_valid_untils,
        groupArray(day_from) AS price_day_froms,
        groupArray(day_until) AS price_day_untils,
        groupArray(input_tokens_above) AS price_aboves,
        groupArray(input_per_mtok) AS price_inputs,
        groupArray(cached_input_per_mtok) AS price_cached_inputs,
        groupArray(cache_write_per_mtok) AS price_cache_writes,
        groupArray(output_per_mtok) AS price_outputs,
        groupArray(reasoning_per_mtok) AS price_reasonings,
        groupArray(per_call_usd) AS price_per_calls,
        groupArray(source) AS price_sources
    FROM (
        SELECT *
        FROM ${db}.model_prices
        WHERE synced_at = (SELECT max(synced_at) FROM ${db}.model_prices)
        ORDER BY provider, model, input_tokens_above DESC
    )
    GROUP BY provider, model
)
