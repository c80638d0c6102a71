-- The provider id model_prices is keyed by (genai-prices' ids) for a semconv provider name
-- in column `provider`: the app's own map (llmledger.instrumentation.pricing.PROVIDER_IDS).
transform(provider, ${price_provider_names}, ${price_provider_ids}, provider)
