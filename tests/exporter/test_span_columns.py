"""SDK spans converted a batch at a time give exactly the rows of the span-by-span path.

``SpanRows`` (columnar, see ``rows.py``) must equal the span-by-span oracle kept in
``reference_rows`` on arbitrary spans, and :func:`stringify_column` must equal
:func:`stringify` value by value, whatever the column's types and however a batch's
memo was filled.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, SpanColumns, SpanRows
from llmledger.exporter._internal.stringify import Memo, stringify, stringify_column

from .reference_rows import reference_dedup_token_text, reference_rows
from .span_strategies import floats, span_batches, value_kinds


def reference_token(rows: list[tuple[Any, ...]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(reference_dedup_token_text(rows).encode())
    return f"llmledger-{len(rows)}-{digest.hexdigest()}"


@settings(max_examples=300, deadline=None)
@given(span_batches())
def test_sdk_rows_equal_the_span_by_span_conversion(spans: list[ReadableSpan]) -> None:
    rows = SpanRows()
    rows.add_sdk_spans(spans)
    expected = reference_rows(spans)
    assert rows.rows() == expected
    assert len(rows) == len(expected)
    assert rows.dedup_token() == reference_token(expected)
    assert rows.span_columns().rows() == expected
    assert SpanColumns.from_rows(expected).rows() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(span_batches(max_size=6), min_size=1, max_size=4), st.data())
def test_batches_added_in_parts_are_one_batch(parts: list[list[ReadableSpan]], data: st.DataObject) -> None:
    # The direct exporter adds each 512-span export to the open batch; the collector adds
    # OTLP requests. Parts of either kind, in any order, are the rows of all of them.
    rows = SpanRows()
    expected: list[tuple[Any, ...]] = []
    for spans in parts:
        if data.draw(st.booleans()):
            rows.add_sdk_spans(spans)
            expected.extend(reference_rows(spans))
        else:
            # The OTLP path is span by span as before (the encoding groups spans by resource).
            request = encode_spans([span for span in spans if span.context is not None])
            rows.add_otlp(request)
            alone = SpanRows()
            alone.add_otlp(request)
            expected.extend(alone.rows())
    assert rows.rows() == expected
    assert rows.span_columns().rows() == expected
    assert rows.dedup_token() == reference_token(expected)


def test_spans_without_a_context_are_skipped() -> None:
    rows = SpanRows()
    rows.add_sdk_spans([ReadableSpan("no context")])
    rows.add_sdk_spans([])
    assert len(rows) == 0
    assert rows.rows() == []
    assert rows.columns == [() for _ in OTEL_TRACES_COLUMNS]


@given(st.lists(st.one_of(*value_kinds), max_size=30))
def test_stringify_column_is_stringify_of_each_value(values: list[Any]) -> None:
    assert stringify_column(list(values)) == [stringify(value) for value in values]


@given(st.sampled_from(value_kinds).flatmap(lambda kind: st.lists(kind, max_size=30)), st.data())
def test_one_typed_columns_and_a_shared_memo_change_nothing(values: list[Any], data: st.DataObject) -> None:
    memo: Memo = {}
    for _ in range(3):  # later columns of one batch find their strings in the memo
        column = data.draw(st.lists(st.sampled_from(values), max_size=30)) if values else []
        assert stringify_column(list(column), memo) == [stringify(value) for value in column]


def test_zeros_of_both_signs_and_nan_keep_their_own_text() -> None:
    memo: Memo = {}
    nan = float("nan")
    column = [0.0, -0.0, 0.5, nan, float("nan"), -0.0]
    assert stringify_column(column, memo) == ["0", "-0", "0.5", *["json: unsupported value: NaN"] * 2, "-0"]
    assert stringify_column([1, True, 1.0], memo) == ["1", "true", "1"]
    assert stringify_column([(1,), (True,), (1.0,)] * 3) == ["[1]", "[true]", "[1]"] * 3
    assert stringify_column([True, 1] * 5, memo) == ["true", "1"] * 5


@given(st.lists(floats, max_size=40))
def test_bulk_floats_are_go_floats(values: list[float]) -> None:
    assert stringify_column(values, {}) == [stringify(value) for value in values]
