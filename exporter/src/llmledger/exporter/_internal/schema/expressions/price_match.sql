-- The price lookup: the row of the price book (expressions/current_prices.sql, `p`) that
-- prices span `s`, as the app's lookup chooses it. The model and the way it was found
-- (expressions/price_model.sql); the rows for that way (`prefix`, `dated`) or, where the
-- book has none of its own, the name's rows (never for a `compact` snapshot: unpriced
-- then); the span's service tier, or the standard rows ('') for a tier without rows of its
-- own; the period holding the call's UTC day and second of the day; the band holding its
-- input tokens. Of those rows exactly one or none matches; none: the app prices nothing.
-- The alternatives are if() rather than OR: an OR in ON makes the engine build a hash
-- table per alternative (four here) and probe each, where if() leaves one table on
-- (provider, model) and a filter (-13 ms per 20,000 spans, 0015).
s.provider = p.provider AND s.price_model = p.model
    AND if(p.lookup = s.price_lookup, true,
           p.lookup = 'name' AND s.price_lookup != 'compact' AND NOT has(p.lookups_apart, s.price_lookup))
    AND if(p.service_tier = s.service_tier, true, p.service_tier = '' AND NOT has(p.tiers_apart, s.service_tier))
    AND s.call_day >= p.price_day_from AND s.call_day < p.price_day_until
    AND s.call_second >= p.price_second_from AND s.call_second < p.price_second_until
    AND s.input_tokens >= p.price_tokens_from AND s.input_tokens <= p.price_tokens_to
