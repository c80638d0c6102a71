-- llmledger: embedded store only
-- The embedded store merges parts on the application's (or the collector's) own core,
-- and with the view chain the merges of the three one-row-per-span tables cost more
-- CPU than the inserts themselves. A wider merge selector (base 10 instead of 5) merges
-- more parts at a time, so each row is rewritten fewer times: over 1.2 million spans
-- inserted 20,000 at a time, engine CPU per span fell from 24.7 µs to 18.1 µs
-- (docs/benchmarks.md), with the same number of parts left at the end. The rollups keep
-- the default: they are small and dashboards read them, so fewer parts matter more there.
-- A ClickHouse server keeps its operator's merge settings; nothing runs there.
ALTER TABLE ${db}.otel_traces MODIFY SETTING merge_selector_base = 10;
ALTER TABLE ${db}.otel_traces_trace_id_ts MODIFY SETTING merge_selector_base = 10;
ALTER TABLE ${db}.llm_calls MODIFY SETTING merge_selector_base = 10;
