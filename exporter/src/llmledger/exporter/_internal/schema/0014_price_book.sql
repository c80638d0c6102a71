-- Pricing is one thing: model_prices holds the app's compiled price book (genai-prices'
-- data and the user's price file, resolved by the instrumentation's own lookup), with every
-- dimension the app prices by: the provider name the spans carry, the model name (and
-- whether a rule prices the names starting with it), service tier, the UTC days and the UTC time of day a price applies, input-size thresholds (long
-- context: the highest threshold below a call's input prices all its tokens), cache reads,
-- cache writes, reasoning, a per-call fee. Rates are USD per million tokens, exact to 1e-18
-- (a few of genai-prices' rates have 17 decimals).
--
-- `llmledger prices sync` writes the whole book, stamped `synced_at`, to model_prices_next
-- and exchanges the two tables (one atomic rename), so a sync replaces the prices at once
-- and never half; the lookup (expressions/current_prices.sql) reads model_prices. The rows of the previous shape (one flat
-- price per genai-prices provider id and model) are carried over as a book of their own,
-- under the provider names the spans carry, so the store keeps pricing as before until the
-- next sync. Like every migration this runs with the store idle.
RENAME TABLE ${db}.model_prices TO ${db}.model_prices_0002 ${on_cluster};

CREATE TABLE IF NOT EXISTS ${db}.model_prices ${on_cluster} (
    synced_at DateTime64(3, 'UTC'),
    provider LowCardinality(String),
    model String,
    lookup LowCardinality(String),
    lookups_apart Array(LowCardinality(String)),
    prefix Bool,
    service_tier LowCardinality(String),
    tiers_apart Array(LowCardinality(String)),
    valid_from Nullable(Date),
    valid_until Nullable(Date),
    day_from UInt32,
    day_until UInt32,
    input_tokens_above UInt64,
    input_tokens_up_to UInt64,
    input_per_mtok Decimal(38, 18),
    cached_input_per_mtok Decimal(38, 18),
    cache_write_per_mtok Decimal(38, 18),
    output_per_mtok Decimal(38, 18),
    reasoning_per_mtok Decimal(38, 18),
    per_call_usd Decimal(38, 18),
    source LowCardinality(String)
) ENGINE = ${merge_tree}
ORDER BY (model, provider, lookup, service_tier)
SETTINGS index_granularity = 1024${dedup_window};

-- Where a sync writes the next book (the same columns and engine).
CREATE TABLE IF NOT EXISTS ${db}.model_prices_next ${on_cluster} AS ${db}.model_prices
ENGINE = ${merge_tree}
ORDER BY (model, provider, lookup, service_tier)
SETTINGS index_granularity = 1024${dedup_window};

INSERT INTO ${db}.model_prices
SELECT
    synced_at,
    arrayJoin(if(
        has(${price_provider_ids}, old.provider),
        arrayFilter((name, id) -> id = old.provider, ${price_provider_names}, ${price_provider_ids}),
        [old.provider]
    )) AS provider,
    old.model AS model,
    'name' AS lookup,
    [] AS lookups_apart,
    false AS prefix,
    '' AS service_tier,
    [] AS tiers_apart,
    NULL AS valid_from,
    NULL AS valid_until,
    0 AS day_from,
    86400 AS day_until,
    0 AS input_tokens_above,
    18446744073709551615 AS input_tokens_up_to,
    old.old_input AS input_per_mtok,
    ifNull(old.old_cached_input, old.old_input) AS cached_input_per_mtok,
    ifNull(old.old_cache_write, old.old_input) AS cache_write_per_mtok,
    old.old_output AS output_per_mtok,
    old.old_output AS reasoning_per_mtok,
    0 AS per_call_usd,
    old.old_source AS source
FROM (
    -- The price in force per (provider, model), as the view read it: custom over genai-prices,
    -- the newest row of a source (whole rows: argMax of a Nullable column skips NULLs).
    SELECT
        provider,
        model,
        argMax(
            (input_per_mtok, cached_input_per_mtok, cache_write_per_mtok, output_per_mtok, source),
            (source = 'custom', updated_at)
        ) AS price,
        price.1 AS old_input,
        price.2 AS old_cached_input,
        price.3 AS old_cache_write,
        price.4 AS old_output,
        price.5 AS old_source,
        max(max(updated_at)) OVER () AS synced_at
    FROM ${db}.model_prices_0002
    GROUP BY provider, model
) AS old;

DROP TABLE IF EXISTS ${db}.model_prices_0002 ${on_cluster} SYNC
