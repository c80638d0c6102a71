-- Billed once, found by key: the current winning span of every call, kept by call_key, so
-- llm_call_changes_mv finds the calls an insert's spans describe with the primary key.
-- Before, it searched llm_call_rows FINAL over the 30 minutes around the insert: a read of
-- every call in that window for every insert, which grew with the store's rate (64 ms per
-- insert with 180,000 calls in the window, on this machine, whatever the insert's size).
-- Here an insert reads the granules holding its keys: small granules (256 rows) keep that
-- to a few hundred keys per span looked up.
--
-- A row holds what the -1 side of a change needs: the replaced span's place in
-- llm_call_rows (its sort key) and in the rollups (their groups and measures). Rows are kept
-- as long as the calls; merges keep the best span per call_key and month.
CREATE TABLE IF NOT EXISTS ${db}.llm_call_index ${on_cluster} (
    call_key String CODEC(ZSTD(1)),
    call_rank UInt64,
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    tenant_id LowCardinality(String),
    user_id String CODEC(ZSTD(1)),
    feature LowCardinality(String),
    provider LowCardinality(String),
    operation LowCardinality(String),
    response_model LowCardinality(String),
    input_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_input_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64,
    cost_usd Nullable(Decimal(38, 12)),
    tokens_estimated Bool,
    is_fallback Bool,
    success Bool
) ENGINE = ${replacing_merge_tree}(call_rank)
PARTITION BY toYYYYMM(Timestamp)
ORDER BY call_key
${calls_ttl}
SETTINGS index_granularity = 256${dedup_window};

-- The calls stored so far: each call's winner, as llm_calls shows it.
INSERT INTO ${db}.llm_call_index
SELECT
    call_key, call_rank, Timestamp, tenant_id, user_id, feature, provider, operation, response_model,
    input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens,
    cost_usd, tokens_estimated, is_fallback, success
FROM ${db}.llm_call_rows FINAL
