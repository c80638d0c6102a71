-- The cost of span `s` at its price `p` (expressions/price_match.sql), computed as the app
-- computes it: each token class billed for its own share at its rate (cache reads and
-- writes inside input, reasoning inside output), plus the per-call fee. Exact decimals:
-- the products are exact at 18 decimals, cost_usd keeps 12.
CAST(
    (toDecimal128(s.input_tokens - s.priced_cache_read - s.priced_cache_write, 0) * p.price_input
     + toDecimal128(s.priced_cache_read, 0) * p.price_cached_input
     + toDecimal128(s.priced_cache_write, 0) * p.price_cache_write
     + toDecimal128(s.output_tokens - s.priced_reasoning, 0) * p.price_output
     + toDecimal128(s.priced_reasoning, 0) * p.price_reasoning) / 1000000
    + p.price_per_call,
    'Nullable(Decimal(38, 12))')
