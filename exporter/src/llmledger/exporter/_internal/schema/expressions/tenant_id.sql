-- Who a span is billed to: llmledger's tenant.id, OpenLLMetry's association property, or
-- the resource's tenant.id (one tenant per service).
coalesce(
    nullIf(SpanAttributes[${attr:tenant.id}], ''),
    nullIf(SpanAttributes[${attr:traceloop.association.properties.tenant_id}], ''),
    ResourceAttributes[${attr:tenant.id}]
)
