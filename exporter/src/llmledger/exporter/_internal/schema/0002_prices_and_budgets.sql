-- Prices as data: `llmledger prices sync` loads genai-prices and the user's price file here;
-- the llm_calls view prices spans that arrive without gen_ai.usage.cost from this table.
-- Prices are USD per million tokens, exact decimals. The newest row (updated_at) for a
-- (provider, model) wins; `source` is `genai-prices` or `custom` (custom outranks).
CREATE TABLE IF NOT EXISTS ${db}.model_prices ${on_cluster} (
    provider LowCardinality(String),
    model String,
    input_per_mtok Decimal(38, 12),
    cached_input_per_mtok Nullable(Decimal(38, 12)),
    output_per_mtok Decimal(38, 12),
    source LowCardinality(String),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ${replacing_merge_tree}(updated_at)
ORDER BY (provider, model, source)
SETTINGS index_granularity = 8192${dedup_window};

-- Spend limits per tenant (user_id = '') or per user of a tenant, per period.
CREATE TABLE IF NOT EXISTS ${db}.budgets ${on_cluster} (
    tenant_id LowCardinality(String),
    user_id String,
    period Enum8('daily' = 1, 'monthly' = 2),
    limit_usd Decimal(38, 12),
    enforcement Enum8('soft' = 1, 'hard' = 2),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ${replacing_merge_tree}(updated_at)
ORDER BY (tenant_id, user_id, period)
SETTINGS index_granularity = 8192${dedup_window};
