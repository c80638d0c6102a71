"""The metrics of finished calls: every instrument llmledger records into, and the one recorder.

The GenAI semantic conventions' histograms (token usage, operation duration, time to first
chunk) with their bucket boundaries, the USD cost counter, and llmledger's two counters of
calls recorded without a price or without token counts. Metric attributes stay
low-cardinality: ``tenant.id`` only when the user enables it (``LLMLEDGER_METRICS_TENANT``).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from llmledger.instrumentation._internal import attributes as A
from llmledger.instrumentation._internal.apis import AttrValue

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.finish import CallOutcome

_COST_SERIES_LIMIT = 2000
# Bounds the cache of attribute sets (model names come from requests).
_ATTRIBUTE_SETS_LIMIT = 4096
_OVERFLOW: tuple[Any, ...] = ("otel.metric.overflow",)


class _AttributeSets(NamedTuple):
    """One distinct metric attribute set, and its two token-type variants, built once."""

    key: tuple[Any, ...]
    call: dict[str, AttrValue]
    input_tokens: dict[str, AttrValue]
    output_tokens: dict[str, AttrValue]


class CallMetrics:
    """Records each finished call into the instruments it creates on ``meter``."""

    def __init__(self, meter: Meter, *, tenant: bool = False) -> None:
        self._tenant = tenant
        self._token_usage = meter.create_histogram(
            A.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(A.TOKEN_BUCKETS),
        )
        self._duration = meter.create_histogram(
            A.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        self._time_to_first_chunk = meter.create_histogram(
            A.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        # The cost counter is a sum nobody reads per call: keep exact running totals per
        # attribute set here (a Decimal add) and hand them to the SDK when it collects,
        # instead of one SDK measurement per call.
        self._cost_lock = threading.Lock()
        self._cost_totals: dict[tuple[Any, ...], tuple[dict[str, AttrValue], list[Decimal]]] = {}
        meter.create_observable_counter(
            A.METRIC_COST,
            callbacks=[self._observe_cost],
            unit="USD",
            description="Cost of GenAI calls in US dollars (priced calls only)",
        )
        self._unpriced = meter.create_counter(
            "llmledger.client.unpriced_calls",
            unit="{call}",
            description="Calls whose price is unknown (no cost recorded)",
        )
        self._unestimated = meter.create_counter(
            A.METRIC_UNESTIMATED_CALLS,
            unit="{call}",
            description=(
                "Calls the API reported no usage for that were recorded without token counts "
                "because the tokenizer could not be loaded in time"
            ),
        )
        self._sets: dict[tuple[Any, ...], _AttributeSets] = {}

    def record(self, outcome: CallOutcome) -> None:
        sets = self._attribute_sets(outcome)
        self._duration.record(outcome.duration_ns / 1e9, sets.call)
        if outcome.time_to_first_chunk_ns is not None:
            self._time_to_first_chunk.record(outcome.time_to_first_chunk_ns / 1e9, sets.call)
        usage = outcome.usage
        if usage is not None:
            if usage.input_tokens is not None:
                self._token_usage.record(usage.input_tokens, sets.input_tokens)
            # Embeddings generate no output: the conventions record no output tokens for them.
            if usage.output_tokens is not None and outcome.operation != A.OP_EMBEDDINGS:
                self._token_usage.record(usage.output_tokens, sets.output_tokens)
        if outcome.cost is not None:
            self._add_cost(sets, outcome.cost.total)
        elif outcome.priced:
            self._unpriced.add(1, sets.call)
        if outcome.unestimated:
            self._unestimated.add(1, sets.call)

    def _attribute_sets(self, outcome: CallOutcome) -> _AttributeSets:
        """The call's attribute sets (plain, input tokens, output tokens), cached per distinct set."""
        endpoint = outcome.endpoint
        tenant = outcome.tenant if self._tenant else None
        key = (
            outcome.operation,
            endpoint,
            outcome.request_model,
            outcome.response_model,
            outcome.error_type,
            tenant,
        )
        sets = self._sets.get(key)
        if sets is None:
            attrs: dict[str, AttrValue] = {A.OPERATION_NAME: outcome.operation, **endpoint.attributes}
            if outcome.request_model is not None:
                attrs[A.REQUEST_MODEL] = outcome.request_model
            if outcome.response_model is not None:
                attrs[A.RESPONSE_MODEL] = outcome.response_model
            if outcome.error_type is not None:
                attrs[A.ERROR_TYPE] = outcome.error_type
            if tenant is not None:
                attrs[A.TENANT_ID] = tenant
            sets = _AttributeSets(
                key, attrs, {**attrs, A.TOKEN_TYPE: "input"}, {**attrs, A.TOKEN_TYPE: "output"}
            )
            if len(self._sets) >= _ATTRIBUTE_SETS_LIMIT:
                self._sets.clear()
            self._sets[key] = sets
        return sets

    def _add_cost(self, sets: _AttributeSets, amount: Decimal) -> None:
        with self._cost_lock:
            entry = self._cost_totals.get(sets.key)
            if entry is None:
                if len(self._cost_totals) >= _COST_SERIES_LIMIT:
                    # Past the limit, like the SDK's cardinality limit: one overflow series.
                    entry = self._cost_totals.get(_OVERFLOW)
                    if entry is None:
                        entry = self._cost_totals[_OVERFLOW] = ({"otel.metric.overflow": True}, [Decimal(0)])
                else:
                    entry = self._cost_totals[sets.key] = (sets.call, [Decimal(0)])
            entry[1][0] += amount

    def _observe_cost(self, options: CallbackOptions) -> list[Observation]:
        with self._cost_lock:
            totals = [(attrs, total[0]) for attrs, total in self._cost_totals.values()]
        return [Observation(float(total), attrs) for attrs, total in totals]
