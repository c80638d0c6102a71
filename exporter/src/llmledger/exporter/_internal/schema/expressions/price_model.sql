-- How model_prices is searched for `provider` and `exact_model` (the lower-cased response
-- model), as the app's lookup finds a price: (model, lookup). The name itself when the
-- price book lists it; else the longest listed name a prefix rule starts with, with its
-- `prefix` rows (claude-sonnet-4-20250514 by claude-sonnet-4-2025, ft:gpt-4o-mini:acme::x by
-- a price file's ft:gpt-4o-mini:acme::*); else, for an unlisted snapshot, its name without
-- the compact (gpt-5.2-20251211) or dashed (gpt-4o-2099-01-01) date, with its `compact` or
-- `dated` rows (expressions/price_match.sql).
multiIf(
    (provider, exact_model) IN (SELECT provider, model FROM ${db}.model_prices),
    (exact_model, 'name'),
    (arrayFirst(
        listed -> listed.1 = provider AND startsWith(exact_model, listed.2),
        (
            SELECT groupArray((provider, model))
            FROM (
                SELECT DISTINCT provider, model FROM ${db}.model_prices
                WHERE prefix
                ORDER BY length(model) DESC
            )
        )
    ) AS price_prefix).2 != '',
    (price_prefix.2, 'prefix'),
    match(exact_model, '-20\\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\\d|3[01])$$'),
    (substring(exact_model, 1, length(exact_model) - 9), 'compact'),
    (replaceRegexpOne(exact_model, '-\\d{4}-\\d{2}-\\d{2}$$', ''), 'dated')
)
