"""Dashboard-style query on the embedded store: cost per tenant per day over 30 days.

Usage::

    .venv/bin/python bench/bench_rollup_query.py                   # 10 million calls
    .venv/bin/python bench/bench_rollup_query.py --calls 1000000 --repeat 5

Fills ``llm_calls`` with synthetic calls (``INSERT … SELECT FROM numbers()``; the
``llm_usage_hourly`` view rolls them up as in production), optimizes both tables (as
background merges would), then times the same question asked of the rollup and of the
raw table: the daily rollup, the hourly rollup, and ``llm_calls``. Synthetic data: 30 days, 50 tenants, 20 users per tenant, 3 features,
4 models, 2 operations, costs with 12 decimals. Median of the repetitions, wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import open_store, run_command, run_query

FILL = """
INSERT INTO {db}.llm_call_changes (Timestamp, TraceId, SpanId, ServiceName, tenant_id, user_id, feature, provider,
    operation, request_model, response_model, input_tokens, output_tokens, cost_usd, cost_source, success,
    is_fallback, duration_ns, call_key, call_rank, new_rank, sign, first_seen)
SELECT
    toDateTime64(now() - toIntervalSecond(rand(1) % (30 * 86400)), 9) AS Timestamp,
    hex(rand64(2)) AS TraceId,
    hex(rand64(3)) AS SpanId,
    'bench' AS ServiceName,
    concat('tenant-', toString(number % 50)) AS tenant_id,
    concat('user-', toString(number % 50), '-', toString(rand(4) % 20)) AS user_id,
    ['lead_scoring', 'contact_extraction', 'summary'][rand(5) % 3 + 1] AS feature,
    'openai' AS provider,
    ['chat', 'embeddings'][rand(6) % 2 + 1] AS operation,
    ['gpt-4o-mini', 'gpt-4.1', 'o3', 'text-embedding-3-small'][rand(7) % 4 + 1] AS request_model,
    request_model AS response_model,
    rand(8) % 4000 AS input_tokens,
    rand(9) % 800 AS output_tokens,
    toDecimal128(rand(10) % 100000000, 12) / 100000000000 AS cost_usd,
    'price_table' AS cost_source,
    rand(11) % 50 != 0 AS success,
    rand(12) % 20 = 0 AS is_fallback,
    rand(13) % 5000000000 AS duration_ns,
    -- one winning span per call, as llm_call_changes_mv emits it (fills llm_call_rows and the rollups)
    concat('span:', TraceId, ':', SpanId) AS call_key,
    1 AS call_rank,
    1 AS new_rank,
    1 AS sign,
    true AS first_seen
FROM numbers({calls})
"""

HOURLY = """
SELECT tenant_id, toDate(hour) AS day, sum(cost_usd) AS cost
FROM {db}.llm_usage_hourly
WHERE hour >= toStartOfHour(now() - INTERVAL 30 DAY)
GROUP BY tenant_id, day
ORDER BY tenant_id, day
"""

DAILY = """
SELECT tenant_id, day, sum(cost_usd) AS cost
FROM {db}.llm_usage_daily
WHERE day >= toDate(now() - INTERVAL 30 DAY)
GROUP BY tenant_id, day
ORDER BY tenant_id, day
"""

RAW = """
SELECT tenant_id, toDate(Timestamp) AS day, sum(ifNull(cost_usd, 0)) AS cost
FROM {db}.llm_calls
WHERE Timestamp >= toStartOfHour(now() - INTERVAL 30 DAY)
GROUP BY tenant_id, day
ORDER BY tenant_id, day
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--store", help="embedded store directory (default: a temporary one)")
    args = parser.parse_args()

    store = args.store or tempfile.mkdtemp(prefix="llmledger-bench-")
    config = StoreConfig(url=f"chdb://{store}", database=f"bench_{uuid.uuid4().hex[:8]}")
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    db = f"`{config.database}`"

    started = time.perf_counter()
    run_command(client, FILL.format(db=db, calls=int(args.calls)))
    run_command(client, f"OPTIMIZE TABLE {db}.llm_call_rows FINAL")
    run_command(client, f"OPTIMIZE TABLE {db}.llm_usage_hourly FINAL")
    run_command(client, f"OPTIMIZE TABLE {db}.llm_usage_daily FINAL")
    fill_s = time.perf_counter() - started
    (sizes,) = run_query(
        client,
        f"SELECT (SELECT count() FROM {db}.llm_calls), (SELECT count() FROM {db}.llm_usage_hourly), "
        f"(SELECT count() FROM {db}.llm_usage_daily)",
    ).result_rows

    queries = {
        "daily rollup (llm_usage_daily)": DAILY,
        "hourly rollup (llm_usage_hourly)": HOURLY,
        "raw (llm_calls)": RAW,
    }
    results: dict[str, list[float]] = {label: [] for label in queries}
    answers: dict[str, list[tuple[Any, Any, Any]]] = {}
    for _ in range(args.repeat):
        for label, sql in queries.items():
            t0 = time.perf_counter()
            rows = run_query(client, sql.format(db=db)).result_rows
            results[label].append(time.perf_counter() - t0)
            answers[label] = [(tenant, day, cost) for tenant, day, cost in rows]
    client.close()

    # The daily rollup starts at midnight, the others at the hour 30 days ago: compare full days.
    first_day = min(day for _, day, _ in answers["raw (llm_calls)"])
    full_days = {k: [r for r in v if r[1] != first_day] for k, v in answers.items()}
    same = len({repr(v) for v in full_days.values()}) == 1
    print(
        f"{sizes[0]:,} calls -> {sizes[1]:,} hourly and {sizes[2]:,} daily rollup rows "
        f"(filled and merged in {fill_s:.1f} s); "
        f"{args.repeat} repetitions, median wall time; answers identical: {same}"
    )
    print("| query: cost per tenant per day, 30 days | ms |")
    print("|---|--:|")
    for label, times in results.items():
        print(f"| {label} | {statistics.median(times) * 1000:.1f} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
