-- The cost of span `s` at row `price_index` of the price book `p` (expressions/price_index.sql),
-- computed as the app computes it: each token class billed for its own share at its rate
-- (cache reads and writes inside input, reasoning inside output), plus the per-call fee.
-- Exact decimals: the products are exact at 18 decimals, cost_usd keeps 12.
CAST(
    (toDecimal128(s.input_tokens - s.priced_cache_read - s.priced_cache_write, 0) * p.price_inputs[price_index]
     + toDecimal128(s.priced_cache_read, 0) * p.price_cached_inputs[price_index]
     + toDecimal128(s.priced_cache_write, 0) * p.price_cache_writes[price_index]
     + toDecimal128(s.output_tokens - s.priced_reasoning, 0) * p.price_outputs[price_index]
     + toDecimal128(s.priced_reasoning, 0) * p.price_reasonings[price_index]) / 1000000
    + p.price_per_calls[price_index],
    'Nullable(Decimal(38, 12))')
