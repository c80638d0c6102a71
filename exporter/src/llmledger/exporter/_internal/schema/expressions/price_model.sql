-- The model name model_prices is searched with, for `price_provider` and `exact_model`
-- (the lower-cased response model): as reported, or without a date suffix
-- (gpt-4o-2024-08-06 -> gpt-4o) when only the base name is priced.
if((price_provider, exact_model) IN (SELECT provider, model FROM ${db}.model_prices),
   exact_model,
   replaceRegexpOne(exact_model, '-(\\d{4}-\\d{2}-\\d{2}|\\d{8}|\\d{4})$$', ''))
