"""Every dashboard, variable and alert query over 10 million calls and 30 days, on the embedded engine.

Usage::

    .venv/bin/python bench/bench_dashboards.py                      # 10M calls, 5 timed runs each
    .venv/bin/python bench/bench_dashboards.py --calls 1000000 --repeat 3
    .venv/bin/python bench/bench_dashboards.py --store /tmp/dash    # keep the store for re-runs
    .venv/bin/python bench/bench_dashboards.py --via-collector --repeat 15   # in-process vs the collector, alternated

Seeding goes around the span path on purpose: ``llm_calls`` is filled directly with
``INSERT … SELECT FROM numbers()`` inside ClickHouse into ``llm_call_changes``, one winning
span per call (its views fill ``llm_call_rows`` behind ``llm_calls`` and roll the rows up
exactly as in production), ``otel_traces`` gets one request span per call the
same way, and both tables are merged (``OPTIMIZE … FINAL``) as background merges would
have done over a month. Writing 10 million calls through ``SpanWriter`` would measure the
writer, not the dashboards.

Synthetic month: 50 tenants (skewed: a few large ones), 8 users each, 6 features with a
model each (10 % of calls on another one; two providers), 3 % errors, 2 % fallbacks
(gpt-4.1 -> gpt-4.1-mini) paired with the failed attempt in the same trace, half the chat
calls streamed, 2 % unpriced. Every query is expanded by
:mod:`grafana.panel_sql` exactly as the ClickHouse plugin expands it, with the range
set to the whole 30 days (the worst case; the dashboards default to 7), variables at All
(the tenant drill-down on the largest tenant), and timed wall-clock from the client: one
warm-up, then the median and the fastest of ``--repeat`` runs (the machine may be shared;
the load average is printed with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402 - after the path setup that finds grafana/
from clickhouse_connect.driver.client import Client  # noqa: E402

from grafana.panel_sql import ALL, QueryContext, expand, grafana_interval  # noqa: E402
from llmledger.exporter import StoreConfig  # noqa: E402
from llmledger.exporter._internal.migrations import apply_migrations  # noqa: E402
from llmledger.exporter._internal.prices import price_book, write_prices  # noqa: E402
from llmledger.exporter._internal.store import open_store, run_command, run_query  # noqa: E402

DATABASE = "llmledger"
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
END = START + timedelta(days=DAYS) - timedelta(seconds=1)
GOAL_MS = 300.0
PANEL_WIDTH_PX = 1000

FILL_CALLS = """
INSERT INTO llm_call_changes (Timestamp, TraceId, SpanId, ServiceName, tenant_id, user_id, session_id,
    conversation_id, feature, provider, operation, request_model, response_model, input_tokens,
    cached_input_tokens, output_tokens, reasoning_tokens, cost_usd, cost_source, tokens_estimated,
    is_fallback, fallback_attempt, success, error_type, duration_ns, ttft_ns, stream,
    call_key, call_rank, new_rank, sign, first_seen)
SELECT
    fromUnixTimestamp64Nano(toInt64({start_ns} + number * {step_ns})) AS Timestamp,
    -- a fallback (number % 50 = 1) shares the trace of the failed attempt before it
    lower(hex(cityHash64(number - (number % 50 = 1)))) || lower(hex(cityHash64(number - (number % 50 = 1), 7)))
        AS TraceId,
    lower(hex(cityHash64(number, 3))) AS SpanId,
    'bench-app' AS ServiceName,
    concat('tenant-', toString(toUInt32(pow((cityHash64(number, 1) % 1000000) / 1000000, 3) * 50)))
        AS tenant_id,
    concat(tenant_id, '-user-', toString(cityHash64(number, 2) % 8)) AS user_id,
    concat(user_id, '-s', toString(intDiv(number, 5000))) AS session_id,
    if(cityHash64(number, 4) % 10 < 6, concat(tenant_id, '-c', toString(cityHash64(number, 5) % 4000)), '')
        AS conversation_id,
    if(number % 50 IN (0, 1), 'lead_scoring',
       ['lead_scoring', 'contact_extraction', 'support_chat', 'search_index', 'summaries', 'routing']
           [cityHash64(number, 6) % 6 + 1]) AS feature,
    if(request_model = 'mistral-small', 'mistral_ai', 'openai') AS provider,
    if(request_model LIKE 'text-embedding%', 'embeddings', 'chat') AS operation,
    -- each feature has its model (and lead scoring falls back from gpt-4.1 to gpt-4.1-mini)
    multiIf(number % 50 = 0, 'gpt-4.1', number % 50 = 1, 'gpt-4.1-mini',
        cityHash64(number, 8) % 10 = 0, 'gpt-4o-mini',
        transform(feature,
            ['lead_scoring', 'contact_extraction', 'support_chat', 'search_index', 'summaries', 'routing'],
            ['gpt-4.1', 'gpt-4o-mini', 'gpt-4o-2024-08-06', 'text-embedding-3-small', 'gpt-4.1-mini',
             'mistral-small'], '')) AS request_model,
    request_model AS response_model,
    if(success, 200 + cityHash64(number, 9) % 8000, 0) AS input_tokens,
    if(success AND cityHash64(number, 10) % 3 = 0, intDiv(input_tokens, 2), 0) AS cached_input_tokens,
    if(success AND operation = 'chat', 20 + cityHash64(number, 11) % 1500, 0) AS output_tokens,
    if(request_model = 'gpt-4.1-mini', intDiv(output_tokens, 3), 0) AS reasoning_tokens,
    if(success AND cityHash64(number, 12) % 50 != 0,
       CAST((toDecimal128(input_tokens, 0) * 2500000 + toDecimal128(output_tokens, 0) * 10000000)
            / 1000000000000, 'Nullable(Decimal(38, 12))'),
       NULL) AS cost_usd,
    if(cost_usd IS NULL, 'unpriced', 'price_table') AS cost_source,
    request_model = 'mistral-small' AND cityHash64(number, 13) % 4 = 0 AS tokens_estimated,
    number % 50 = 1 AS is_fallback,
    toUInt16(number % 50 = 1) AS fallback_attempt,
    number % 50 != 0 AND cityHash64(number, 14) % 100 >= 2 AS success,
    multiIf(success, '', number % 50 = 0, 'RateLimitError',
            ['APITimeoutError', 'InternalServerError'][cityHash64(number, 15) % 2 + 1]) AS error_type,
    (200 + cityHash64(number, 16) % 4000) * 1000000 AS duration_ns,
    if(operation = 'chat' AND success AND cityHash64(number, 17) % 2 = 0,
       CAST((50 + cityHash64(number, 18) % 600) * 1000000, 'Nullable(UInt64)'), NULL) AS ttft_ns,
    ttft_ns IS NOT NULL AS stream,
    -- one winning span per call, as llm_call_changes_mv emits it (fills llm_call_rows and the rollups)
    concat('span:', TraceId, ':', SpanId) AS call_key,
    1 AS call_rank,
    1 AS new_rank,
    1 AS sign,
    true AS first_seen
FROM numbers({calls})
"""

# One request (SERVER) span per call, without GenAI attributes: llm_calls_mv ignores it.
FILL_SPANS = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind,
    ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode,
    StatusMessage)
SELECT
    Timestamp - toIntervalMillisecond(5), TraceId, lower(hex(cityHash64(SpanId))), '', '',
    'POST /api', 'Server', ServiceName, map('service.name', ServiceName), 'bench', '1',
    map('http.route', '/api', 'tenant.id', tenant_id), duration_ns + 10000000, 'Unset', ''
FROM llm_calls
"""


# The rows llm_fallbacks_mv writes for the fallback spans the instrumentation emits: each
# lead-scoring fallback replaced the gpt-4.1 attempt that failed before it.
FILL_FALLBACKS = """
INSERT INTO llm_fallbacks (Timestamp, TraceId, tenant_id, feature, from_model, from_error, to_model, attempt, success)
SELECT Timestamp, TraceId, tenant_id, feature, 'gpt-4.1', 'RateLimitError', response_model, fallback_attempt, success
FROM llm_calls
WHERE is_fallback
"""


def _budgets_sql() -> str:
    rows = [f"('tenant-{t}', '', 'monthly', {200 + 50 * t}, 'soft', now64(3))" for t in range(50)]
    rows += [f"('tenant-{t}', '', 'daily', {20 + 5 * t}, 'soft', now64(3))" for t in range(0, 50, 5)]
    rows += [f"('tenant-0', 'tenant-0-user-{u}', 'monthly', 100, 'hard', now64(3))" for u in range(8)]
    return "INSERT INTO budgets VALUES " + ", ".join(rows)


def _write_price_book(client: Client) -> None:
    """The book an app compiles by default (genai-prices' bundled data), as `llmledger prices sync` writes it."""
    write_prices(client, DATABASE, price_book(None).price_rows())


def seed(client: Client, calls: int) -> None:
    step_ns = DAYS * 86_400 * 1_000_000_000 // calls
    start_ns = int(START.timestamp()) * 1_000_000_000
    settings = {"max_insert_threads": 2, "max_threads": 2}
    steps = [
        ("model_prices, budgets", lambda: (_write_price_book(client), run_command(client, _budgets_sql()))),
        (
            f"llm_calls ({calls:,} rows; the view fills llm_usage_hourly)",
            lambda: run_command(
                client,
                FILL_CALLS.format(calls=calls, start_ns=start_ns, step_ns=step_ns),
                settings={**settings, "max_block_size": 1_000_000, "min_insert_block_size_rows": 1_000_000},
            ),
        ),
        (
            "otel_traces (one request span per call)",
            lambda: run_command(client, FILL_SPANS, settings=settings),
        ),
        (
            "llm_fallbacks (what each fallback replaced)",
            lambda: run_command(client, FILL_FALLBACKS, settings=settings),
        ),
        ("OPTIMIZE … FINAL (the merges a month of inserts gets)", lambda: _optimize(client)),
    ]
    for label, step in steps:
        started = time.perf_counter()
        step()
        print(f"  seeded {label} in {time.perf_counter() - started:.1f}s", flush=True)


def _optimize(client: Client) -> None:
    for table in (
        "llm_call_rows",
        "llm_usage_hourly",
        "llm_fallbacks",
        "otel_traces",
        "otel_traces_trace_id_ts",
    ):
        run_command(client, f"OPTIMIZE TABLE {table} FINAL")


@dataclass(frozen=True)
class Query:
    where: str
    sql: str
    context: QueryContext


def queries(client: Client) -> list[Query]:
    """Every panel, variable and alert query, in the context Grafana would run it over the month."""
    top_tenant = run_query(
        client, "SELECT tenant_id FROM llm_usage_hourly GROUP BY tenant_id ORDER BY sum(calls) DESC LIMIT 1"
    ).result_rows[0][0]
    top_trace = run_query(
        client,
        "SELECT TraceId FROM llm_calls WHERE tenant_id = {t:String} ORDER BY cost_usd DESC NULLS LAST LIMIT 1",
        parameters={"t": top_tenant},
    ).result_rows[0][0]
    variables = {"tenant": ALL, "model": ALL, "feature": ALL, "warn_share": "0.8", "trace_id": ""}
    out: list[Query] = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        values = dict(variables)
        if dashboard["uid"] == "llmledger-tenant-drilldown":
            values.update(tenant=top_tenant, trace_id=top_trace)
        short = dashboard["title"].split("—")[-1].strip()
        for panel in dashboard["panels"]:
            # Grafana's $__interval for the panel: a panel ~1,000 px wide unless it caps its
            # points, never below its min interval.
            min_interval = timedelta(hours=1) if panel.get("interval") == "1h" else None
            interval = grafana_interval(START, END, panel.get("maxDataPoints", PANEL_WIDTH_PX), min_interval)
            context = QueryContext(START, END, interval, values)
            for target in panel["targets"]:
                out.append(Query(f"{short}: {panel['title']}", target["rawSql"], context))
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                context = QueryContext(START, END, timedelta(hours=1), values)
                out.append(Query(f"{short}: ${variable['name']}", variable["query"]["rawSql"], context))
    alerts = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "alerting" / "llmledger-alerts.yaml").read_text()
    )
    for group in alerts["groups"]:
        for rule in group["rules"]:
            for data in rule["data"]:
                if data["datasourceUid"] == "__expr__":
                    continue
                window = timedelta(seconds=data["relativeTimeRange"]["from"])
                context = QueryContext(END - window, END, timedelta(minutes=1), {})
                out.append(Query(f"alert: {rule['title']}", data["model"]["rawSql"], context))
    return out


def time_query(client: Client, query: Query, repeat: int) -> tuple[float, float, int]:
    """(median ms, fastest ms, rows) over ``repeat`` runs after one warm-up."""
    sql = expand(query.sql, query.context)
    rows = len(run_query(client, sql).result_rows)
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        run_query(client, sql)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--store",
        type=Path,
        help="embedded store directory, kept for re-runs (default: a temporary one, removed)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the results as a Markdown table")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--via-collector",
        action="store_true",
        help="time every query side by side: in-process (a child process) and through a "
        "collector that owns the same store (its ClickHouse HTTP interface, the read-only user)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --via-collector: alternate the two sides this many times"
    )
    args = parser.parse_args()
    if args.via_collector:
        return compare_via_collector(args)

    temporary = args.store is None
    store = args.store or Path(tempfile.mkdtemp(prefix="llmledger-bench-dashboards-"))
    config = StoreConfig(url=f"chdb://{store}", database=DATABASE)
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    client.database = DATABASE
    have = run_query(client, "SELECT count() FROM llm_calls").result_rows[0][0]
    if have != args.calls:
        if have:
            sys.exit(f"{store} holds {have:,} calls, not {args.calls:,}: use another --store")
        print(f"seeding {store}", flush=True)
        seed(client, args.calls)
    elif not run_query(client, "SELECT count() FROM llm_fallbacks").result_rows[0][0]:
        # A store seeded before llm_fallbacks existed (migration 0006).
        run_command(client, FILL_FALLBACKS)
        run_command(client, "OPTIMIZE TABLE llm_fallbacks FINAL")
    rollup_rows = run_query(client, "SELECT count() FROM llm_usage_hourly").result_rows[0][0]
    print(f"{args.calls:,} calls over {DAYS} days; llm_usage_hourly holds {rollup_rows:,} rows", flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} on {os.cpu_count()} cores at the start of timing", flush=True)
    results: list[tuple[str, float, float, int]] = []
    for query in queries(client):
        median, fastest, rows = time_query(client, query, args.repeat)
        results.append((query.where, median, fastest, rows))
        print(f"  {median:8.1f} ms  (best {fastest:7.1f})  {rows:6d} rows  {query.where}", flush=True)
    client.close()
    if temporary:
        shutil.rmtree(store, ignore_errors=True)

    if args.json:
        args.json.write_text(json.dumps([list(r) for r in results]))
    results.sort(key=lambda r: -r[1])
    over = [r for r in results if r[1] >= GOAL_MS]
    print(f"\n{len(results)} queries; goal < {GOAL_MS:.0f} ms each (median): {len(over)} over")
    print("slowest three (median):")
    for where, median, fastest, _ in results[:3]:
        print(f"  {median:.0f} ms (best {fastest:.0f})  {where}")
    if args.markdown:
        print("\n| query | median ms | best ms | rows |\n|---|--:|--:|--:|")
        for where, median, fastest, rows in results:
            print(f"| {where} | {median:.0f} | {fastest:.0f} | {rows} |")
    return 1 if over else 0


def compare_via_collector(args: argparse.Namespace) -> int:
    """Every query in-process (a child process) and through a collector on the store, alternately.

    ``--rounds`` rounds, each side once per round (in-process, collector, in-process, …), and
    per query the lower of each side's per-round medians: a side measured only first or only
    last would carry the drift of the machine and of the engine's caches in between.
    """
    import subprocess

    temporary = args.store is None
    store = args.store or Path(tempfile.mkdtemp(prefix="llmledger-bench-dashboards-"))
    work = Path(tempfile.mkdtemp(prefix="llmledger-bench-collector-"))
    local: dict[str, tuple[float, int]] = {}
    remote: dict[str, tuple[float, int]] = {}
    try:
        for round_number in range(1, args.rounds + 1):
            local_json = work / f"in-process-{round_number}.json"
            child = [sys.executable, __file__, "--calls", str(args.calls), "--repeat", str(args.repeat)]
            print(f"round {round_number}: in-process", flush=True)
            subprocess.run([*child, "--store", str(store), "--json", str(local_json)], check=False)
            for where, median, _, rows in json.loads(local_json.read_text()):
                best = local.get(where, (float("inf"), rows))[0]
                local[where] = (min(best, median), rows)
            print(f"round {round_number}: through the collector", flush=True)
            for where, (median, rows) in _time_via_collector(store, work, args.repeat).items():
                best = remote.get(where, (float("inf"), rows))[0]
                remote[where] = (min(best, median), rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if temporary:
            shutil.rmtree(store, ignore_errors=True)
    print(
        "\n| query | in-process median ms | through the collector ms | ratio | rows |\n|---|--:|--:|--:|--:|"
    )
    ratios: list[float] = []
    for where, (median, rows) in sorted(remote.items(), key=lambda item: -item[1][0]):
        base = local[where][0]
        ratios.append(median / base)
        assert rows == local[where][1], (
            f"{where}: {rows} rows through the collector, {local[where][1]} in-process"
        )
        print(f"| {where} | {base:.1f} | {median:.1f} | {median / base:.2f} | {rows} |")
    over = sum(1 for ratio in ratios if ratio > 1.2)
    print(f"\n{len(ratios)} queries, best of {args.rounds} rounds per side; through the collector / in-process: "
          f"median {statistics.median(ratios):.2f}, max {max(ratios):.2f}, {over} above 1.20; sum "
          f"{sum(v[0] for v in remote.values()):.0f} ms vs {sum(v[0] for v in local.values()):.0f} ms")  # fmt: skip
    return 0


def _time_via_collector(store: Path, work: Path, repeat: int) -> dict[str, tuple[float, int]]:
    """(median ms, rows) per query through a collector started on ``store`` for the purpose."""
    with collector_serving(store, work) as client:
        print(f"through the collector (load average {os.getloadavg()[0]:.1f}):", flush=True)
        timed: dict[str, tuple[float, int]] = {}
        for query in queries(client):
            median, fastest, rows = time_query(client, query, repeat)
            timed[query.where] = (median, rows)
            print(f"  {median:8.1f} ms  (best {fastest:7.1f})  {rows:6d} rows  {query.where}", flush=True)
        return timed


@contextmanager
def collector_serving(store: Path, work: Path) -> Iterator[Client]:
    """A collector started on a seeded ``store`` (its data dir in ``work``) and a client through
    its ClickHouse HTTP interface once it serves the store; both closed on exit."""
    import subprocess

    from llmledger.exporter._internal.store_owner import current_owner

    llmledger = Path(sys.executable).parent / "llmledger"
    collector = subprocess.Popen(
        [str(llmledger), "collector", "--url", f"chdb://{store}", "--data-dir", str(work / "data"),
         "--grpc-endpoint", "", "--http-endpoint", "127.0.0.1:0", "--clickhouse-http-endpoint", "127.0.0.1:0",
         "--log-level", "warning"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while current_owner(store) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        config = StoreConfig(url=f"chdb://{store}", database=DATABASE)
        client = None
        while client is None and time.monotonic() < deadline:
            try:
                client = open_store(config)
                run_query(client, "SELECT count() FROM llm_calls")
            except Exception:
                client = None
                time.sleep(0.2)
        if client is None:
            sys.exit("the collector did not serve the store within 60 s")
        try:
            yield client
        finally:
            client.close()
    finally:
        collector.terminate()
        collector.wait(60)


if __name__ == "__main__":
    sys.exit(main())
