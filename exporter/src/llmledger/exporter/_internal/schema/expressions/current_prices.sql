-- The store's price book (model_prices, written whole by `llmledger prices sync`): one row
-- per price with the ranges of calls it applies to, for expressions/price_match.sql. Open
-- periods become the Date range's ends; a row's input-token range is
-- (input_tokens_above, input_tokens_up_to], from 0 for the lowest.
(
    SELECT
        provider,
        model,
        lookup,
        lookups_apart,
        service_tier,
        tiers_apart,
        ifNull(valid_from, toDate(0)) AS price_day_from,
        ifNull(valid_until, toDate('2149-06-06')) AS price_day_until,
        day_from AS price_second_from,
        day_until AS price_second_until,
        if(input_tokens_above = 0, 0, input_tokens_above + 1) AS price_tokens_from,
        input_tokens_up_to AS price_tokens_to,
        input_per_mtok AS price_input,
        cached_input_per_mtok AS price_cached_input,
        cache_write_per_mtok AS price_cache_write,
        output_per_mtok AS price_output,
        reasoning_per_mtok AS price_reasoning,
        per_call_usd AS price_per_call,
        source AS price_source
    FROM ${db}.model_prices
)
