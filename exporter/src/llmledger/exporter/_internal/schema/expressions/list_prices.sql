-- List prices now, per (provider, model) of the price book: the standard tier's
-- rates below any input threshold, in effect at this moment (what the dashboards' savings
-- panels and the SQL cookbook price at). Not how a call is priced: see price_match.sql.
(
    SELECT
        provider,
        model,
        any(input_per_mtok) AS input_per_mtok,
        any(cached_input_per_mtok) AS cached_input_per_mtok,
        any(cache_write_per_mtok) AS cache_write_per_mtok,
        any(output_per_mtok) AS output_per_mtok
    FROM ${db}.model_prices
    WHERE lookup = 'name' AND service_tier = '' AND input_tokens_above = 0
      AND ifNull(valid_from, toDate(0)) <= toDate(now(), 'UTC')
      AND toDate(now(), 'UTC') < ifNull(valid_until, toDate('2149-06-06'))
      AND day_from <= toUInt32(toUnixTimestamp(now()) % 86400)
      AND toUInt32(toUnixTimestamp(now()) % 86400) < day_until
    GROUP BY provider, model
)
