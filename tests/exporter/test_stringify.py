"""Attribute values are stored exactly as the Collector's clickhouse exporter (pdata AsString) stores them."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal import _encode_value

from llmledger.exporter._internal.stringify import go_float, stringify, stringify_any_value

# (value, what Go's pdata Value.AsString() returns for it)
CASES = [
    ("plain", "plain"),
    ("", ""),
    (True, "true"),
    (False, "false"),
    (0, "0"),
    (-42, "-42"),
    (2**63 - 1, "9223372036854775807"),
    (0.000435, "0.000435"),
    (1.0, "1"),
    (-0.0, "-0"),
    (0.1, "0.1"),
    (1e-6, "0.000001"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (2.5e-5, "0.000025"),
    (1e16, "10000000000000000"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (1.5e300, "1.5e+300"),
    (5e-324, "5e-324"),
    (float("nan"), "json: unsupported value: NaN"),
    (float("inf"), "json: unsupported value: +Inf"),
    (float("-inf"), "json: unsupported value: -Inf"),
    (("stop",), '["stop"]'),
    (("stop", "length"), '["stop","length"]'),
    (("a<b>&c",), '["a\\u003cb\\u003e\\u0026c"]'),
    (('say "hi"\n',), '["say \\"hi\\"\\n"]'),
    ((1, 2, 3), "[1,2,3]"),
    ((0.5, 1e-7, 2.0), "[0.5,1e-7,2]"),
    ((True, False), "[true,false]"),
    ((), "[]"),
    ((1.0, float("nan")), ""),
    (b"\x00\xffhi", "AP9oaQ=="),
    ({"b": 1, "a": ["x", None]}, '{"a":["x",null],"b":1}'),
    (None, ""),
]


@pytest.mark.parametrize(("value", "expected"), CASES, ids=[repr(v) for v, _ in CASES])
def test_stringify_matches_pdata_as_string(value: object, expected: str) -> None:
    assert stringify(value) == expected


@pytest.mark.parametrize(("value", "expected"), CASES, ids=[repr(v) for v, _ in CASES])
def test_otlp_values_stringify_like_sdk_values(value: object, expected: str) -> None:
    # The SDK's own OTLP encoder turns the value into an AnyValue: both paths must agree.
    assert stringify_any_value(_encode_value(value)) == expected


attribute_scalars = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
attribute_values = st.one_of(
    attribute_scalars,
    st.lists(st.text()).map(tuple),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1)).map(tuple),
    st.lists(st.floats(allow_nan=False, allow_infinity=False)).map(tuple),
    st.lists(st.booleans()).map(tuple),
)


@given(attribute_values)
def test_sdk_and_otlp_paths_agree(value: object) -> None:
    assert stringify(value) == stringify_any_value(_encode_value(value))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_is_shortest_round_trip_in_go_notation(value: float) -> None:
    text = go_float(value)
    assert float(text) == value
    magnitude = abs(value)
    exponent_form = magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21)
    if exponent_form:
        # d[.ddd]e±N with no zero-padding of the exponent
        assert re.fullmatch(r"-?\d(\.\d+)?e[+-][1-9]\d*", text), text
    else:
        assert re.fullmatch(r"-?\d+(\.\d+)?", text), text
        assert not text.endswith(".0")
    # As few significant digits as Python's shortest repr.
    digits = re.sub(r"e.*$", "", repr(value)).replace("-", "").replace(".", "").strip("0")
    assert re.sub(r"e.*$", "", text).replace("-", "").replace(".", "").strip("0") == digits


@given(st.lists(st.text()))
def test_string_arrays_are_json_that_decodes_to_the_same_strings(items: list[str]) -> None:
    text = stringify(tuple(items))
    assert json.loads(text) == items
    assert not re.search("[<>&\u2028\u2029]", text), "Go escapes HTML characters and JS line breaks"


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1))
def test_float_arrays_use_go_number_format(items: list[float]) -> None:
    text = stringify(tuple(items))
    assert text == "[" + ",".join(go_float(f) for f in items) + "]"
    assert [float(x) for x in json.loads(text)] == items
