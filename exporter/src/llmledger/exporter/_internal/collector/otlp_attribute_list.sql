-- How otel_traces_from_otlp.sql reads an OTLP attribute list (repeated KeyValue) with FORMAT
-- Protobuf: written once here, substituted there as ${attribute_list} for the resource's,
-- the spans', the events' and the links' attributes. It stands inside that statement's
-- quoted structure string, hence the escaped quotes; these comment lines are left out.
--
-- An AnyValue is its oneof's members side by side, and `value`, which one is set
-- (input_format_protobuf_oneof_presence). An array's elements have the same scalar
-- members; their own array and kvlist members are read only so that the statement can
-- refuse them, as is a value's kvlist.
Array(Tuple(key String, value Tuple(
    string_value String, bool_value Bool, int_value Int64, double_value Float64, bytes_value String,
    array_value Tuple(values Array(Tuple(
        string_value String, bool_value Bool, int_value Int64, double_value Float64, bytes_value String,
        array_value_unused String, kvlist_value_unused String,
        value Enum8(\'none\' = 0, \'string_value\' = 1, \'bool_value\' = 2, \'int_value\' = 3, \'double_value\' = 4, \'array_value\' = 5, \'kvlist_value\' = 6, \'bytes_value\' = 7)))),
    kvlist_value String,
    value Enum8(\'none\' = 0, \'string_value\' = 1, \'bool_value\' = 2, \'int_value\' = 3, \'double_value\' = 4, \'array_value\' = 5, \'kvlist_value\' = 6, \'bytes_value\' = 7))))
