-- The provider response a span describes: its provider and response id. A span without a
-- response id is a call of its own (its trace and span id, so a replayed copy of it is
-- still the same call). Over `provider`, `response_id`, `TraceId`, `SpanId`.
if(response_id != '', concat(provider, ':', response_id), concat('span:', TraceId, ':', SpanId))
