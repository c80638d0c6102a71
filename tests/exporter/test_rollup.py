"""llm_usage_hourly sums exactly what llm_calls holds, which is exactly what the spans said."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.stringify import go_float
from llmledger.exporter._internal.writer import SpanWriter

HOUR_NS = 3_600_000_000_000
START = 1_767_225_600_000_000_000


def test_rollup_totals_equal_raw_totals_exactly(
    make_recorder, store_client: Client, config: StoreConfig, query
) -> None:
    rng = random.Random(20260101)
    recorder = make_recorder({"service.name": "rollup"})
    expected_cost: dict[str, Decimal] = defaultdict(Decimal)
    expected_calls: dict[str, int] = defaultdict(int)
    for _ in range(600):
        tenant = rng.choice(["acme", "globex", "initech"])
        attributes = {
            "gen_ai.operation.name": rng.choice(["chat", "embeddings"]),
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": rng.choice(["gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"]),
            "gen_ai.usage.input_tokens": rng.randint(0, 200_000),
            "gen_ai.usage.output_tokens": rng.randint(0, 8_000),
            "tenant.id": tenant,
            "user.id": f"u{rng.randint(1, 5)}",
            "llmledger.feature": rng.choice(["lead_scoring", "contact_extraction"]),
            "llmledger.fallback": rng.random() < 0.1,
        }
        if rng.random() < 0.9:
            cost = rng.uniform(1e-9, 2.0)
            attributes["gen_ai.usage.cost"] = cost
            # The exact value the store reads: the collector's string of the double.
            expected_cost[tenant] += Decimal(go_float(cost))
        expected_calls[tenant] += 1
        recorder.call(
            "chat",
            attributes,
            start_ns=START + rng.randint(0, 72) * HOUR_NS + rng.randint(0, HOUR_NS - 1),
            error="x" if rng.random() < 0.05 else None,
        )
    spans = recorder.finished()
    writer = SpanWriter(store_client, config.database)
    for batch in range(0, len(spans), 100):
        rows = SpanRows()
        rows.add_sdk_spans(spans[batch : batch + 100])
        writer.write(rows)

    db = config.database
    raw = query(f"""
        SELECT tenant_id, count() AS calls, countIf(NOT success) AS errors, countIf(is_fallback) AS fallbacks,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(ifNull(cost_usd, 0)) AS cost, countIf(cost_usd IS NULL AND success) AS unpriced
        FROM {db}.llm_calls GROUP BY tenant_id ORDER BY tenant_id""")
    rollup = query(f"""
        SELECT tenant_id, sum(calls) AS calls, sum(errors) AS errors, sum(fallbacks) AS fallbacks,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced
        FROM {db}.llm_usage_hourly GROUP BY tenant_id ORDER BY tenant_id""")
    assert rollup == raw
    daily = query(f"""
        SELECT tenant_id, sum(calls) AS calls, sum(errors) AS errors, sum(fallbacks) AS fallbacks,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced
        FROM {db}.llm_usage_daily GROUP BY tenant_id ORDER BY tenant_id""")
    assert daily == raw
    assert {r["tenant_id"]: r["calls"] for r in raw} == expected_calls
    # cost_usd keeps 12 decimals; each value is truncated there, so compare at that scale.
    quantum = Decimal("1e-12")
    for row in raw:
        spans_cost = sum(
            (
                Decimal(go_float(s.attributes["gen_ai.usage.cost"])).quantize(quantum, rounding="ROUND_DOWN")
                for s in spans
                if s.attributes.get("tenant.id") == row["tenant_id"] and "gen_ai.usage.cost" in s.attributes
            ),
            Decimal(0),
        )
        assert row["cost"] == spans_cost
        assert abs(row["cost"] - expected_cost[row["tenant_id"]]) < Decimal("1e-9")

    # Dashboards read quantiles from the latency state.
    (p50,) = query(f"SELECT quantileTDigestMerge(0.5)(duration_state) AS p50 FROM {db}.llm_usage_hourly")
    assert p50["p50"] > 0
