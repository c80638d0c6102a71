-- A spooled batch of OTLP trace requests into otel_traces, decoded by the engine itself.
--
-- The batch is a file of length-delimited ExportTraceServiceRequest messages, read with
-- FORMAT Protobuf and a trimmed copy of the OTLP schema (otlp_trace.proto). The rows must be
-- byte for byte what rows.py writes for the same request, so attribute values are rendered
-- as stringify.py renders them (as the Collector's clickhouse exporter does): strings as
-- they are, true/false, decimal ints, doubles in Go's encoding/json format (the engine prints
-- the same shortest digits; only the exponent sign differs), standard base64 for bytes, and
-- Go-style JSON for arrays of scalars. What this does not render (a map value, an array
-- nested in an array, control characters or NaN/Inf inside an array, a key repeated in one
-- list) fails the statement before anything is written (throwIf), and native_insert.py
-- sends that batch through rows.py.
--
-- Planning costs ~80 ms per statement whatever its size, so the statement is shaped for
-- it: values are rendered from parallel arrays of the oneof members (a tuple per value made
-- every branch of the short-circuit multiIf filter the whole tuple), array elements are
-- rendered outside the per-value multiIf, the checks ride on a computed column rather than a
-- WHERE (~50 ms more to plan), and the resource is rendered in the ARRAY JOIN, once per
-- resource, rather than in a subquery.
--
-- Substituted: the database identifier (the db placeholder), and the Protobuf type of an
-- attribute list, fixed text from otlp_attribute_list.sql (the attribute_list placeholder);
-- the file path is a bound parameter.
INSERT INTO ${db}.`otel_traces` (
    `Timestamp`, `TraceId`, `SpanId`, `ParentSpanId`, `TraceState`, `SpanName`, `SpanKind`,
    `ServiceName`, `ResourceAttributes`, `ScopeName`, `ScopeVersion`, `SpanAttributes`, `Duration`,
    `StatusCode`, `StatusMessage`, `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
    `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`
)
WITH
    -- A double as Go's encoding/json writes it (pdata writes its error text for NaN and Inf).
    x -> multiIf(
        isNaN(x), 'json: unsupported value: NaN',
        isInfinite(x), if(x > 0, 'json: unsupported value: +Inf', 'json: unsupported value: -Inf'),
        replaceRegexpOne(toString(x), 'e(\\d)', 'e+\\1')
    ) AS go_float,
    -- An absent (all-zero or empty) id is written as '', as the Collector does.
    id -> if(trim(BOTH '\0' FROM id) = '', '', lower(hex(id))) AS hex_id,
    -- One element of an array value, as Go's json.Marshal writes it: strings get Python's
    -- json escapes (what stringify uses), then Go's extra HTML and JS escapes.
    (e_value, e_string_value, e_bool_value, e_int_value, e_double_value, e_bytes_value) -> multiIf(
        e_value = 'string_value', concat('"',
            replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(
            replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(e_string_value,
                '\\', '\\\\'),
                '"', '\\"'),
                '\n', '\\n'),
                '\r', '\\r'),
                '\t', '\\t'),
                '\b', '\\b'),
                '\f', '\\f'),
                '<', '\\u003c'),
                '>', '\\u003e'),
                '&', '\\u0026'),
                '\xE2\x80\xA8', '\\u2028'),
                '\xE2\x80\xA9', '\\u2029'),
            '"'),
        e_value = 'int_value', toString(e_int_value),
        e_value = 'bool_value', if(e_bool_value, 'true', 'false'),
        e_value = 'double_value', go_float(e_double_value),
        e_value = 'bytes_value', concat('"', base64Encode(e_bytes_value), '"'),
        'null'
    ) AS json_element,
    -- One attribute value as pdata's AsString, from its oneof members (and its array
    -- elements already rendered).
    (v_value, v_string_value, v_bool_value, v_int_value, v_double_value, v_bytes_value, v_elements) -> multiIf(
        v_value = 'string_value', v_string_value,
        v_value = 'int_value', toString(v_int_value),
        v_value = 'bool_value', if(v_bool_value, 'true', 'false'),
        v_value = 'double_value', go_float(v_double_value),
        v_value = 'bytes_value', base64Encode(v_bytes_value),
        v_value = 'array_value', concat('[', arrayStringConcat(v_elements, ','), ']'),
        ''
    ) AS attribute_value,
    -- An attribute list (Array(Tuple(key, value))) as the Map otel_traces stores. Array
    -- elements are rendered outside attribute_value's multiIf: as a branch taking the
    -- elements' member arrays, it filtered those of every value (one short string array a
    -- span cost the drain 1.65 us a span, 1.0 this way).
    attributes -> mapFromArrays(
        attributes.key,
        arrayMap(
            attribute_value,
            attributes.value.value, attributes.value.string_value, attributes.value.bool_value,
            attributes.value.int_value, attributes.value.double_value, attributes.value.bytes_value,
            arrayMap(
                v_array -> arrayMap(
                    json_element,
                    v_array.value, v_array.string_value, v_array.bool_value,
                    v_array.int_value, v_array.double_value, v_array.bytes_value
                ),
                attributes.value.array_value.values
            )
        )
    ) AS rendered,
    -- Whether this statement renders every value of an attribute list as rows.py does.
    attributes -> NOT has(attributes.value.value, 'kvlist_value')
        AND arrayAll(
            (e_value, e_double_value, e_string_value) -> e_value NOT IN ('array_value', 'kvlist_value')
                AND NOT (e_value = 'double_value' AND NOT isFinite(e_double_value))
                AND NOT (e_value = 'string_value' AND match(e_string_value, '[\\x00-\\x07\\x0b\\x0e-\\x1f]')),
            arrayFlatten(attributes.value.array_value.values.value),
            arrayFlatten(attributes.value.array_value.values.double_value),
            arrayFlatten(attributes.value.array_value.values.string_value)
        )
        -- A repeated key: rows.py keeps the last value, a Map would keep both.
        AND arrayUniq(attributes.key) = length(attributes) AS supported,
    -- 0, or the statement fails: one block, so nothing is written, and the same batch
    -- always fails the same way.
    ok -> throwIf(NOT ok, 'llmledger: a value the native insert does not render') AS refused
SELECT
    fromUnixTimestamp64Nano(toInt64(sp.start_time_unix_nano)),
    hex_id(sp.trace_id),
    hex_id(sp.span_id),
    hex_id(sp.parent_span_id),
    sp.trace_state,
    sp.name,
    if(sp.kind BETWEEN 0 AND 5, ['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer'][sp.kind + 1], ''),
    resource['service.name'],
    resource,
    ss.scope.name,
    ss.scope.version,
    rendered(sp.attributes),
    -- The checks ride on a column every row computes: a WHERE costs the engine ~50 ms more
    -- to plan per statement than the same throwIf in the projection.
    if(sp.end_time_unix_nano > sp.start_time_unix_nano, sp.end_time_unix_nano - sp.start_time_unix_nano, 0)
        + resource_refused
        + refused(supported(sp.attributes))
        + refused(arrayAll(ev -> supported(ev.attributes), sp.events))
        + refused(arrayAll(l -> supported(l.attributes), sp.links)),
    if(sp.status.code BETWEEN 0 AND 2, ['Unset', 'Ok', 'Error'][sp.status.code + 1], ''),
    sp.status.message,
    arrayMap(ev -> fromUnixTimestamp64Nano(toInt64(ev.time_unix_nano)), sp.events),
    arrayMap(ev -> ev.name, sp.events),
    arrayMap(ev -> rendered(ev.attributes), sp.events),
    arrayMap(l -> hex_id(l.trace_id), sp.links),
    arrayMap(l -> hex_id(l.span_id), sp.links),
    arrayMap(l -> l.trace_state, sp.links),
    arrayMap(l -> rendered(l.attributes), sp.links)
FROM file({path:String}, 'Protobuf', '
    resource_spans Array(Tuple(
        resource Tuple(attributes ${attribute_list}),
        scope_spans Array(Tuple(
            scope Tuple(name String, version String),
            spans Array(Tuple(
                trace_id String, span_id String, trace_state String, parent_span_id String, name String,
                kind Int32, start_time_unix_nano UInt64, end_time_unix_nano UInt64,
                attributes ${attribute_list},
                events Array(Tuple(time_unix_nano UInt64, name String, attributes ${attribute_list})),
                links Array(Tuple(trace_id String, span_id String, trace_state String, attributes ${attribute_list})),
                status Tuple(message String, code Int32)))))))')
-- The resource's attributes rendered (and checked) once per resource, not once per span.
ARRAY JOIN
    resource_spans AS rs,
    arrayMap(r -> rendered(r.resource.attributes), resource_spans) AS resource,
    arrayMap(r -> refused(supported(r.resource.attributes)), resource_spans) AS resource_refused
ARRAY JOIN rs.scope_spans AS ss
ARRAY JOIN ss.spans AS sp
