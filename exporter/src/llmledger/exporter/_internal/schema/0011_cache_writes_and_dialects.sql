-- Cache writes join the contract, and llm_calls reads more dialects.
--
-- * cache_write_input_tokens (gen_ai.usage.cache_creation.input_tokens and its older
--   spellings) in llm_calls and both rollups, priced at the model's cache-write rate
--   (model_prices.cache_write_per_mtok; plain input where a model has none).
-- * gen_ai.user, gen_ai.is_streaming, OpenInference (llm.token_count.*, llm.model_name,
--   llm.provider, llm.system, openinference.span.kind), the proposed semconv cost
--   attributes and pydantic-ai/logfire's operation.cost.
-- * A reported 0 with tokens is not a price (OpenLIT writes 0 for every model it cannot
--   price): such calls are priced from model_prices, and cost_source says so. A cost in
--   another currency never enters cost_usd.
--
-- The views that read the new columns are created by schema apply from their one
-- definition in schema/views/ once every migration is applied (migrations.py). Like every
-- migration this runs with the store idle. Calls stored before this migration keep their
-- columns as they were billed (0 cache writes).
ALTER TABLE ${db}.model_prices ${on_cluster}
    ADD COLUMN IF NOT EXISTS cache_write_per_mtok Nullable(Decimal(38, 12)) AFTER cached_input_per_mtok;

ALTER TABLE ${db}.llm_calls ${on_cluster}
    ADD COLUMN IF NOT EXISTS cache_write_input_tokens UInt64 AFTER cached_input_tokens;

ALTER TABLE ${db}.llm_usage_hourly ${on_cluster}
    ADD COLUMN IF NOT EXISTS cache_write_input_tokens SimpleAggregateFunction(sum, UInt64) AFTER cached_input_tokens;

ALTER TABLE ${db}.llm_usage_daily ${on_cluster}
    ADD COLUMN IF NOT EXISTS cache_write_input_tokens SimpleAggregateFunction(sum, UInt64) AFTER cached_input_tokens
