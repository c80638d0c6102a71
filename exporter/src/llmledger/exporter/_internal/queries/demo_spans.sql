-- llmledger demo: the spans in the store by who made them (their instrumentation scope), so the
-- demo's summary can say what its span count is made of.
-- Only identifiers are substituted (${db}); values are bound.
SELECT ScopeName AS scope, count() AS spans
FROM ${db}.otel_traces
GROUP BY scope
ORDER BY spans DESC, scope
