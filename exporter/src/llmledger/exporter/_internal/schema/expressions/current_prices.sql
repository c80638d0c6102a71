-- The price in force per (provider, model) in model_prices: a custom price outranks
-- genai-prices, and the newest row of a source wins. USD per million tokens.
(
    SELECT
        provider,
        model,
        argMax(input_per_mtok, (source = 'custom', updated_at)) AS price_input,
        argMax(cached_input_per_mtok, (source = 'custom', updated_at)) AS price_cached_input,
        argMax(cache_write_per_mtok, (source = 'custom', updated_at)) AS price_cache_write,
        argMax(output_per_mtok, (source = 'custom', updated_at)) AS price_output,
        argMax(source, (source = 'custom', updated_at)) AS price_source
    FROM ${db}.model_prices
    GROUP BY provider, model
)
