-- Which row of the price book (expressions/current_prices.sql, joined as `p`) prices span
-- `s`, as the app's lookup chooses: the rows for the way the name was found
-- (expressions/price_model.sql) — where the book has none for it, the name's own, except
-- for a compact-dated snapshot, which is then not priced; the
-- span's service tier where those rows have it, else the standard rows; the
-- period holding the call's UTC day and time of day; and the highest input threshold below
-- the call's input tokens. 0 when none applies: the app prices nothing then either.
arrayFirstIndex(
    (lookup, tier, valid_from, valid_until, day_from, day_until, above) ->
        lookup = if(s.price_lookup != 'compact' AND NOT has(p.price_lookups, s.price_lookup), 'name', s.price_lookup)
        AND tier = if(
            has(arrayFilter((t, l) -> l = lookup, p.price_tiers, p.price_lookups), s.service_tier),
            s.service_tier,
            '')
        AND s.call_day >= valid_from AND s.call_day < valid_until
        AND s.call_second >= day_from AND s.call_second < day_until
        AND (above = 0 OR s.input_tokens > above),
    p.price_lookups, p.price_tiers, p.price_valid_froms, p.price_valid_untils,
    p.price_day_froms, p.price_day_untils, p.price_aboves
)
