"""Hypothesis strategies for batches of OpenTelemetry SDK spans with arbitrary attributes.

Batches look like real ones where it matters to the columnar conversion (many spans
sharing keys in one order, a key keeping its type) and stray from them where it could
break (reordered, extra and missing keys, a key changing type, unicode, strings past 127
bytes, tiny and huge floats, NaN, -0.0, tuples of every kind, events, links, several
resources and scopes, spans the SDK's own BoundedAttributes cleaned and spans it did not).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

START = 1_767_225_600_000_000_000

texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "chat", "gpt-4o-mini", "é", "a<b>&c", "日本語", 'say "hi"\n']),
    st.text(min_size=100, max_size=300),  # past 127 bytes: two-byte lengths
)
floats = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 1.0, 1e-7, 4.2e-5, 2.5e-6, 0.000435, 1e16, 1e20, 1e21, 5e-324, float("nan")]),
)
integers = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([0, 1, 443, 800]))
scalar_kinds = [texts, st.booleans(), integers, floats]
sequence_kinds = [
    st.lists(texts, max_size=3).map(tuple),
    st.lists(st.sampled_from(["stop", "length"]), min_size=1, max_size=2).map(tuple),
    st.lists(integers, max_size=3).map(tuple),
    st.lists(floats, max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
]
value_kinds = scalar_kinds + sequence_kinds
any_value = st.one_of(*value_kinds)
keys = st.one_of(
    st.sampled_from(
        ["gen_ai.operation.name", "gen_ai.usage.input_tokens", "gen_ai.usage.cost", "server.port"]
    ),
    st.text(min_size=1, max_size=15),
)


@st.composite
def attribute_dicts(draw: st.DrawFn, count: int) -> list[dict[str, Any]]:
    """``count`` attribute dicts around one key template, each key mostly keeping one type."""
    template = draw(st.lists(keys, max_size=8, unique=True))
    kinds = {key: draw(st.sampled_from(value_kinds)) for key in template}
    batch: list[dict[str, Any]] = []
    for _ in range(count):
        variant = draw(st.sampled_from(["same", "same", "same", "reordered", "extra", "fewer", "random"]))
        if variant == "random":
            batch.append(draw(st.dictionaries(keys, any_value, max_size=6)))
            continue
        chosen = list(template)
        if variant == "reordered":
            chosen = draw(st.permutations(chosen))
        elif variant == "fewer" and chosen:
            chosen = chosen[: draw(st.integers(0, len(chosen) - 1))]
        attributes: dict[str, Any] = {}
        for key in chosen:
            # Now and then a key changes type from one span to the next.
            kind = any_value if draw(st.integers(0, 9)) == 0 else kinds[key]
            attributes[key] = draw(kind)
        if variant == "extra":
            attributes[draw(keys)] = draw(any_value)
        batch.append(attributes)
    return batch


span_ids = st.integers(min_value=1, max_value=2**64 - 1)
trace_ids = st.integers(min_value=1, max_value=2**128 - 1)
trace_states = st.sampled_from([TraceState(), TraceState([("vendor", "value")])])


@st.composite
def span_contexts(draw: st.DrawFn) -> SpanContext:
    return SpanContext(draw(trace_ids), draw(span_ids), False, trace_state=draw(trace_states))


@st.composite
def span_batches(draw: st.DrawFn, max_size: int = 12) -> list[ReadableSpan]:
    """SDK spans as exporters receive them (``ReadableSpan``), a batch of them."""
    count = draw(st.integers(min_value=0, max_value=max_size))
    attributes = draw(attribute_dicts(count))
    resources = [
        Resource.create({"service.name": "crm", "deployment.environment": "prod"}),
        Resource({"service.name": "billing", "tenant.id": "acme", "weight": 0.5}),
        Resource({}),
    ]
    scopes = [
        InstrumentationScope("llmledger.instrumentation.openai", "0.1.0"),
        InstrumentationScope("x"),
        None,
    ]
    spans: list[ReadableSpan] = []
    for attrs in attributes:
        start = START + draw(st.integers(0, 10**12))
        end = draw(st.one_of(st.none(), st.just(0), st.integers(start - 10**9, start + 10**10)))
        events = draw(
            st.lists(
                st.builds(
                    Event,
                    st.sampled_from(["retry", "gen_ai.choice", ""]),
                    st.dictionaries(keys, any_value, max_size=3),
                    st.integers(start, start + 10**9),
                ),
                max_size=2,
            )
        )
        links = draw(
            st.lists(
                st.builds(Link, span_contexts(), st.dictionaries(keys, any_value, max_size=3)), max_size=2
            )
        )
        cleaned = draw(st.booleans())
        spans.append(
            ReadableSpan(
                name=draw(st.sampled_from(["chat gpt-4o-mini", "embeddings", "GET /", "é" * 130])),
                context=draw(
                    st.one_of(
                        span_contexts(), st.just(None) if draw(st.integers(0, 19)) == 0 else span_contexts()
                    )
                ),
                parent=draw(st.one_of(st.none(), span_contexts())),
                resource=draw(st.sampled_from(resources)),
                attributes=BoundedAttributes(attributes=attrs, immutable=True) if cleaned else attrs,
                events=events,
                links=links,
                kind=draw(st.sampled_from(list(SpanKind))),
                status=draw(
                    st.one_of(
                        st.just(Status(StatusCode.UNSET)),
                        st.builds(Status, st.just(StatusCode.ERROR), st.one_of(st.none(), texts)),
                        st.just(Status(StatusCode.OK)),
                    )
                ),
                start_time=draw(st.one_of(st.just(start), st.just(start), st.none())),
                end_time=end,
                instrumentation_scope=draw(st.sampled_from(scopes)),
            )
        )
    return spans
