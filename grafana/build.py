"""Write llmledger's Grafana dashboards and alert rules from one definition.

    python grafana/build.py           # rewrite grafana/dashboards/*.json and the alert rules
    python grafana/build.py --check   # exit 1 when a generated file is out of date

The panels' SQL lives here as SQL text, next to the layout it belongs to; everything a
Grafana dashboard repeats (the datasource reference, the variables, the grid) is built
once. The generated files are the product: Grafana provisions them, the tests expand and
run every query in them, and the committed files must equal what this script writes.

Conventions every query keeps:

- Tables are unqualified: the datasource's default database (``llmledger``) holds them,
  for dashboards and alert rules alike.
- The rollups answer every question they can; ``llm_calls`` only per-call detail
  (conversations, single calls, error types, fallback pairs). Totals over the range read
  whole UTC days from ``llm_usage_daily`` and the partial days at the edges from
  ``llm_usage_hourly`` (which splits by user, so is almost as large as ``llm_calls``);
  the sums are exactly the hourly rollup's. Time series read the daily rollup when
  Grafana's interval is a day or more, the hourly one otherwise. Per-user panels read
  the hourly rollup.
- A range counts the hours whose start lies in it (``$__timeFilter(hour)`` semantics).
- Macros without arguments are bound once in ``WITH`` (``$__fromTime AS range_start``).
- Filters are ``$__conditionalAll(column IN (${var:singlequote}), $var)``: All adds no
  condition, and values are quoted and escaped.
- Money stays Decimal in SQL; ratios and projections are Float64.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from llmledger.exporter._internal.attribute_names import quoted_name
from llmledger.exporter._internal.migrations import dashboard_price_sql

DATASOURCE_TYPE: Final = "grafana-clickhouse-datasource"
DATASOURCE_UID: Final = "llmledger-clickhouse"
DATASOURCE: Final = {"type": DATASOURCE_TYPE, "uid": "${datasource}"}
GRAFANA_DIR: Final = Path(__file__).resolve().parent

# Query formats of the plugin (sqlutil.FormatQueryOption).
TIME_SERIES: Final = 0
TABLE: Final = 1
TRACE: Final = 3

UIDS: Final = {
    "overview": "llmledger-spend-overview",
    "tenant": "llmledger-tenant-drilldown",
    "reliability": "llmledger-reliability",
    "budgets": "llmledger-budgets",
}

HOURLY: Final = "llm_usage_hourly"
DAILY: Final = "llm_usage_daily"
CALLS: Final = "llm_calls"

# What both rollups hold (the daily one has no user_id).
USAGE_COLUMNS: Final = (
    "tenant_id, feature, provider, model, operation, calls, errors, fallbacks, input_tokens, "
    "cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, cost_usd, unpriced_calls, estimated_calls, "
    "duration_state, ttft_state"
)

# -- filters ----------------------------------------------------------------------------------------


def _all_filter(column: str, variable: str) -> str:
    return f"$__conditionalAll({column} IN (${{{variable}:singlequote}}), ${variable})"


ROLLUP_FILTERS: Final = " AND ".join(
    [_all_filter("tenant_id", "tenant"), _all_filter("model", "model"), _all_filter("feature", "feature")]
)
CALLS_FILTERS: Final = " AND ".join(
    [
        _all_filter("tenant_id", "tenant"),
        _all_filter("response_model", "model"),
        _all_filter("feature", "feature"),
    ]
)
TENANT_ROLLUP_FILTERS: Final = " AND ".join(
    ["tenant_id = ${tenant:singlequote}", _all_filter("model", "model"), _all_filter("feature", "feature")]
)
TENANT_CALLS_FILTERS: Final = " AND ".join(
    [
        "tenant_id = ${tenant:singlequote}",
        _all_filter("response_model", "model"),
        _all_filter("feature", "feature"),
    ]
)

# -- where usage rows come from ---------------------------------------------------------------


def _range_usage(start: str, end: str, filters: str) -> str:
    """Usage of the hours whose start lies in [start, end]: exactly what the hourly rollup
    sums, read cheaply. Whole UTC days inside the range come from llm_usage_daily (one row
    per tenant x feature x model x day), the hours of the partial days at either edge from
    llm_usage_hourly (which also splits by user, so is almost as large as llm_calls).
    ``start``/``end`` are DateTime expressions; rows expose ``hour`` (a day's midnight for
    daily rows) and the rollup columns except ``user_id``."""
    first_day = f"toDate({start} + INTERVAL 86399 SECOND, 'UTC')"
    last_day = f"toDate({end} - INTERVAL 23 HOUR, 'UTC')"
    return f"""(
    SELECT toDateTime(day, 'UTC') AS hour, {USAGE_COLUMNS}
    FROM {DAILY}
    WHERE day >= {first_day} AND day <= {last_day}
      AND {filters}
    UNION ALL
    SELECT hour, {USAGE_COLUMNS}
    FROM {HOURLY}
    WHERE hour >= {start} AND hour <= {end}
      AND (hour < toDateTime({first_day}, 'UTC') OR hour > toDateTime({last_day}, 'UTC') + INTERVAL 23 HOUR)
      AND {filters}
)"""


def _series_usage(filters: str) -> str:
    """Usage rows for a time series: per day from llm_usage_daily when Grafana's interval
    is a day or more (whole days touching the range), else per hour from llm_usage_hourly
    (hours starting in the range). The branch not taken reads nothing."""
    return f"""(
    SELECT toDateTime(day, 'UTC') AS hour, {USAGE_COLUMNS}
    FROM {DAILY}
    WHERE $__interval_s >= 86400
      AND day >= toDate($__fromTime, 'UTC') AND day <= toDate($__toTime, 'UTC')
      AND {filters}
    UNION ALL
    SELECT hour, {USAGE_COLUMNS}
    FROM {HOURLY}
    WHERE $__interval_s < 86400
      AND $__timeFilter(hour)
      AND {filters}
)"""


RANGE: Final = "WITH $__fromTime AS range_start, $__toTime AS range_end"
RANGE_USAGE: Final = _range_usage("range_start", "range_end", ROLLUP_FILTERS)
SERIES_USAGE: Final = _series_usage(ROLLUP_FILTERS)
TENANT_RANGE_USAGE: Final = _range_usage("range_start", "range_end", TENANT_ROLLUP_FILTERS)
TENANT_SERIES_USAGE: Final = _series_usage(TENANT_ROLLUP_FILTERS)

# List prices from the store's price book, and the model name it is searched with: the same
# expressions the llm_calls view uses (schema/expressions), rendered for unqualified tables.
PRICES: Final = dashboard_price_sql()

# -- spend overview ------------------------------------------------------------------------------------

SPEND_VS_PREVIOUS: Final = f"""
{RANGE},
     range_start - toIntervalSecond(dateDiff('second', range_start, range_end)) AS previous_start,
     range_start - INTERVAL 1 SECOND AS previous_end
SELECT
    (SELECT sum(cost_usd) FROM {RANGE_USAGE}) AS spend,
    (SELECT sum(cost_usd) FROM {_range_usage("previous_start", "previous_end", ROLLUP_FILTERS)}) AS previous_spend,
    if(previous_spend = 0, NULL, toFloat64(spend) / toFloat64(previous_spend) - 1) AS change
"""

MONTH_END_PROJECTION: Final = f"""
WITH toDateTime($__toTime, 'UTC') AS as_of,
     toDateTime(toStartOfMonth(as_of), 'UTC') AS month_start,
     month_start + INTERVAL 1 MONTH AS month_end
SELECT
    sum(cost_usd) AS month_to_date,
    toFloat64(month_to_date) * dateDiff('second', month_start, month_end)
        / greatest(dateDiff('second', month_start, as_of), 1) AS projected_month_end
FROM {_range_usage("month_start", "as_of", ROLLUP_FILTERS)}
"""

CACHED_INPUT_SAVINGS: Final = f"""
{RANGE},
prices AS {PRICES["list_prices"]},
usage AS (
    SELECT
        provider,
        model,
        sum(cached_input_tokens) AS cached_tokens,
        lower(model) AS exact_model,
        tupleElement({PRICES["price_model"]}, 1) AS price_model
    FROM {RANGE_USAGE}
    GROUP BY provider, model
    HAVING cached_tokens > 0
)
SELECT
    u.provider AS provider,
    u.model AS model,
    u.cached_tokens AS cached_tokens,
    if(p.model = '', NULL, p.input_per_mtok) AS input_per_mtok,
    if(p.model = '', NULL, p.cached_input_per_mtok) AS cached_input_per_mtok,
    if(p.model = '', NULL,
       u.cached_tokens * (p.input_per_mtok - p.cached_input_per_mtok) / 1000000) AS saved_usd
FROM usage AS u
LEFT JOIN prices AS p ON p.provider = u.provider AND p.model = u.price_model
ORDER BY saved_usd DESC NULLS LAST, cached_tokens DESC
"""

SPEND_PER_TENANT: Final = f"""
SELECT
    $__timeInterval(hour) AS time,
    if(tenant_id = '', '(unattributed)', tenant_id) AS tenant,
    sum(cost_usd) AS spend
FROM {SERIES_USAGE}
GROUP BY time, tenant
ORDER BY time, tenant
"""

TOP_TENANTS: Final = f"""
{RANGE}
SELECT
    if(tenant_id = '', '(unattributed)', tenant_id) AS tenant,
    sum(cost_usd) AS spend,
    if(sum(sum(cost_usd)) OVER () = 0, NULL,
       toFloat64(spend) / toFloat64(sum(sum(cost_usd)) OVER ())) AS share,
    sum(calls) AS calls,
    sum(unpriced_calls) AS unpriced_calls
FROM {RANGE_USAGE}
GROUP BY tenant
ORDER BY spend DESC, tenant
LIMIT 10
"""

SPEND_BY_MODEL: Final = f"""
{RANGE}
SELECT
    provider,
    model,
    sum(calls) AS calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS spend,
    sum(unpriced_calls) AS unpriced_calls
FROM {RANGE_USAGE}
GROUP BY provider, model
ORDER BY spend DESC, provider, model
"""

SPEND_BY_PROVIDER: Final = f"""
{RANGE}
SELECT provider, sum(cost_usd) AS spend
FROM {RANGE_USAGE}
GROUP BY provider
ORDER BY spend DESC, provider
"""

TOKENS_BY_TYPE: Final = f"""
SELECT
    $__timeInterval(hour) AS time,
    toInt64(sum(input_tokens)) - toInt64(sum(cached_input_tokens)) - toInt64(sum(cache_write_input_tokens))
        AS uncached_input,
    sum(cached_input_tokens) AS cached_input,
    sum(cache_write_input_tokens) AS cache_write_input,
    toInt64(sum(output_tokens)) - toInt64(sum(reasoning_tokens)) AS visible_output,
    sum(reasoning_tokens) AS reasoning_output
FROM {SERIES_USAGE}
GROUP BY time
ORDER BY time
"""

UNPRICED_TOTALS: Final = f"""
{RANGE}
SELECT
    sum(calls) AS calls,
    sum(unpriced_calls) AS unpriced_calls,
    sum(estimated_calls) AS estimated_calls
FROM {RANGE_USAGE}
"""

UNPRICED_BY_MODEL: Final = f"""
{RANGE}
SELECT
    provider,
    model,
    sum(calls) AS calls,
    sum(unpriced_calls) AS unpriced_calls,
    sum(estimated_calls) AS estimated_calls,
    unpriced_calls / calls AS unpriced_share
FROM {RANGE_USAGE}
GROUP BY provider, model
HAVING unpriced_calls > 0 OR estimated_calls > 0
ORDER BY unpriced_calls DESC, estimated_calls DESC, provider, model
"""

# -- tenant drill-down -------------------------------------------------------------------------------


def _tenant_spend_by(column: str, label: str, empty: str) -> str:
    # Users are only in the hourly rollup; features and models come from both rollups.
    source = (
        f"{HOURLY}\nWHERE $__timeFilter(hour)\n  AND {TENANT_ROLLUP_FILTERS}"
        if column == "user_id"
        else TENANT_RANGE_USAGE
    )
    return f"""
{RANGE}
SELECT
    if({column} = '', '{empty}', {column}) AS {label},
    sum(calls) AS calls,
    sum(input_tokens) + sum(output_tokens) AS tokens,
    sum(cost_usd) AS spend,
    sum(unpriced_calls) AS unpriced_calls
FROM {source}
GROUP BY {label}
ORDER BY spend DESC, {label}
LIMIT 50
"""


TENANT_TOTALS: Final = f"""
{RANGE}
SELECT
    sum(cost_usd) AS spend,
    sum(calls) AS calls,
    sum(unpriced_calls) AS unpriced_calls
FROM {TENANT_RANGE_USAGE}
"""

TENANT_SPEND_BY_FEATURE_OVER_TIME: Final = f"""
SELECT
    $__timeInterval(hour) AS time,
    if(feature = '', '(none)', feature) AS feature_name,
    sum(cost_usd) AS spend
FROM {TENANT_SERIES_USAGE}
GROUP BY time, feature_name
ORDER BY time, feature_name
"""

TENANT_BY_USER: Final = _tenant_spend_by("user_id", "user", "(no user)")
TENANT_BY_FEATURE: Final = _tenant_spend_by("feature", "feature_name", "(none)")
TENANT_BY_MODEL: Final = _tenant_spend_by("model", "model_name", "(unknown)")

TENANT_CONVERSATIONS: Final = f"""
SELECT
    conversation_id,
    count() AS calls,
    min(Timestamp) AS first_call,
    max(Timestamp) AS last_call,
    arrayStringConcat(arraySort(groupUniqArray(toString(response_model))), ', ') AS models,
    sum(cost_usd) AS spend
FROM {CALLS}
WHERE $__timeFilter(Timestamp)
  AND {TENANT_CALLS_FILTERS}
  AND conversation_id != ''
GROUP BY conversation_id
ORDER BY spend DESC, conversation_id
LIMIT 20
"""

TENANT_EXPENSIVE_CALLS: Final = f"""
SELECT
    Timestamp AS time,
    user_id,
    feature,
    conversation_id,
    response_model AS model,
    input_tokens,
    output_tokens,
    cost_usd,
    cost_source,
    TraceId
FROM {CALLS}
WHERE $__timeFilter(Timestamp)
  AND {TENANT_CALLS_FILTERS}
  AND cost_usd IS NOT NULL
ORDER BY cost_usd DESC, Timestamp DESC
LIMIT 50
"""

# The plugin's trace view columns (its query builder writes the same for OTel tables); the
# trace's own time bounds come from otel_traces_trace_id_ts, as the Collector's schema intends.
TRACE_SPANS: Final = """
WITH ${trace_id:singlequote} AS trace_id,
     (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_start,
     (SELECT max(End) FROM otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_end
SELECT
    TraceId AS traceID,
    SpanId AS spanID,
    ParentSpanId AS parentSpanID,
    ServiceName AS serviceName,
    SpanName AS operationName,
    multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime,
    multiply(Duration, 0.000001) AS duration,
    arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
    arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags,
    if(StatusCode IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) AS statusCode
FROM otel_traces
WHERE TraceId = trace_id
  AND Timestamp >= trace_start
  AND Timestamp < trace_end + INTERVAL 1 SECOND
ORDER BY startTime
"""

# -- reliability -----------------------------------------------------------------------------------------

RELIABILITY_TOTALS: Final = f"""
{RANGE}
SELECT
    sum(calls) AS calls,
    sum(errors) / calls AS error_rate,
    sum(fallbacks) / calls AS fallback_rate
FROM {RANGE_USAGE}
"""

LATENCY_BY_MODEL: Final = f"""
{RANGE}
SELECT
    model,
    sum(calls) AS calls,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_state) AS duration_q,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(ttft_state) AS ttft_q,
    duration_q[1] / 1e6 AS p50_ms,
    duration_q[2] / 1e6 AS p95_ms,
    duration_q[3] / 1e6 AS p99_ms,
    if(isNaN(ttft_q[1]), NULL, ttft_q[1] / 1e6) AS ttft_p50_ms,
    if(isNaN(ttft_q[2]), NULL, ttft_q[2] / 1e6) AS ttft_p95_ms,
    if(isNaN(ttft_q[3]), NULL, ttft_q[3] / 1e6) AS ttft_p99_ms
FROM {RANGE_USAGE}
GROUP BY model
ORDER BY calls DESC, model
"""


# The same question from the SDK's own histogram (gen_ai.client.operation.duration in the
# Collector exporter's otel_metrics_histogram): what each series added in the range — for a
# cumulative series its last bucket counts in the range minus its last ones before it, an
# hour's look-back being enough for exports every minute; a delta series' rows add up —
# merged per model, and the quantile interpolated within its bucket (as Prometheus's
# histogram_quantile). Metric attributes carry no feature, and a tenant only where the app
# enables it, so the model is the one filter.
_MODEL_ATTRIBUTE: Final = f"Attributes[{quoted_name('gen_ai.request.model')}]"
SDK_LATENCY_BY_MODEL: Final = f"""
{RANGE}
SELECT
    model,
    arraySum(buckets) AS calls,
    arrayCumSum(buckets) AS running,
    arrayMap(q -> if(calls = 0, nan,
                     if((arrayFirstIndex(c -> c >= q * calls, running) AS i) = 1, 0, bounds[i - 1])
                     + (if(i > length(bounds), bounds[length(bounds)], bounds[i]) - if(i = 1, 0, bounds[i - 1]))
                       * (q * calls - if(i = 1, 0, running[i - 1])) / buckets[i]),
             [0.5, 0.95, 0.99]) AS quantiles_s,
    quantiles_s[1] * 1000 AS p50_ms,
    quantiles_s[2] * 1000 AS p95_ms,
    quantiles_s[3] * 1000 AS p99_ms
FROM (
    SELECT model, any(series_bounds) AS bounds, sumForEach(added) AS buckets
    FROM (
        SELECT
            {_MODEL_ATTRIBUTE} AS model,
            any(ExplicitBounds) AS series_bounds,
            if(any(AggregationTemporality) = 1,
               sumForEachIf(BucketCounts, TimeUnix >= range_start),
               arrayMap((last, before) -> toUInt64(last - before),
                        argMax(BucketCounts, TimeUnix),
                        arrayResize(argMaxIf(BucketCounts, TimeUnix, TimeUnix < range_start),
                                    length(any(BucketCounts)), 0))) AS added
        FROM otel_metrics_histogram
        WHERE MetricName = {quoted_name("gen_ai.client.operation.duration")}
          AND TimeUnix >= range_start - INTERVAL 1 HOUR AND TimeUnix <= range_end
          AND {_all_filter(_MODEL_ATTRIBUTE, "model")}
        GROUP BY ServiceName, ResourceAttributes, Attributes, StartTimeUnix
    )
    GROUP BY model
)
WHERE calls > 0
ORDER BY calls DESC, model
"""


def _quantile_over_time(state: str, label: str) -> str:
    return f"""
SELECT
    $__timeInterval(hour) AS time,
    model,
    quantileTDigestMerge(0.95)({state}) / 1e6 AS {label}
FROM {SERIES_USAGE}
GROUP BY time, model
HAVING NOT isNaN({label})
ORDER BY time, model
"""


P95_LATENCY_OVER_TIME: Final = _quantile_over_time("duration_state", "p95_ms")
P95_TTFT_OVER_TIME: Final = _quantile_over_time("ttft_state", "ttft_p95_ms")

ERROR_AND_FALLBACK_RATE: Final = f"""
SELECT
    $__timeInterval(hour) AS time,
    sum(errors) / sum(calls) AS error_rate,
    sum(fallbacks) / sum(calls) AS fallback_rate
FROM {SERIES_USAGE}
GROUP BY time
ORDER BY time
"""

# error_type is in neither rollup: the failed calls (a small share) come from llm_calls,
# divided by the rollup's call count for the same buckets.
ERROR_RATE_BY_TYPE: Final = f"""
WITH totals AS (
    SELECT $__timeInterval(hour) AS time, sum(calls) AS calls
    FROM {SERIES_USAGE}
    GROUP BY time
)
SELECT e.time AS time, e.error_type AS error_type, e.errors / t.calls AS error_rate
FROM (
    SELECT $__timeInterval(Timestamp) AS time, error_type, count() AS errors
    FROM {CALLS}
    WHERE $__timeFilter(Timestamp)
      AND NOT success
      AND {CALLS_FILTERS}
    GROUP BY time, error_type
) AS e
INNER JOIN totals AS t ON e.time = t.time
ORDER BY time, error_type
"""

ERRORS_BY_TYPE: Final = f"""
{RANGE},
totals AS (
    SELECT model, sum(calls) AS calls
    FROM {RANGE_USAGE}
    GROUP BY model
)
SELECT e.error_type AS error_type, e.model AS model, e.errors AS errors, t.calls AS calls,
       e.errors / t.calls AS error_rate
FROM (
    SELECT error_type, response_model AS model, count() AS errors
    FROM {CALLS}
    WHERE Timestamp >= range_start AND Timestamp <= range_end
      AND NOT success
      AND {CALLS_FILTERS}
    GROUP BY error_type, model
) AS e
LEFT JOIN totals AS t ON e.model = t.model
ORDER BY errors DESC, error_type, model
"""

# A fallback names what it replaced (llmledger.fallback.from_model / from_error, recorded by
# the instrumentation), and llm_fallbacks keeps one row per fallback call: the pairs are a
# filtered read of that small table, not a pairing of attempts across every failed trace.
FALLBACK_PAIRS: Final = f"""
{RANGE}
SELECT
    from_model,
    from_error,
    to_model,
    count() AS fallbacks,
    countIf(success) AS fallback_succeeded,
    fallback_succeeded / fallbacks AS success_rate
FROM llm_fallbacks
WHERE Timestamp >= range_start AND Timestamp <= range_end
  AND {_all_filter("tenant_id", "tenant")}
  AND {_all_filter("feature", "feature")}
  AND $__conditionalAll((from_model IN (${{model:singlequote}}) OR to_model IN (${{model:singlequote}})), $model)
GROUP BY from_model, from_error, to_model
ORDER BY fallbacks DESC, from_model, to_model
"""

# -- budgets ----------------------------------------------------------------------------------------------

LATEST_BUDGETS: Final = """
    SELECT
        tenant_id,
        user_id,
        period,
        argMax(limit_usd, updated_at) AS limit_usd,
        argMax(enforcement, updated_at) AS enforcement
    FROM budgets
    GROUP BY tenant_id, user_id, period"""

_BUDGETED_TENANTS: Final = "tenant_id IN (SELECT tenant_id FROM budgets)"
_BUDGETED_USERS: Final = (
    "user_id != '' AND (tenant_id, user_id) IN (SELECT tenant_id, user_id FROM budgets WHERE user_id != '')"
)


def _scoped_spend(select: str, group: str, start: str, end: str, *, whole_days: bool) -> str:
    """Spend keyed as budgets are: (tenant, '') for the whole tenant, (tenant, user) per user.

    Only budgeted tenants and users are read. With ``whole_days`` the tenant part reads
    whole days from the daily rollup (for sums over a period); otherwise every hour comes
    from the hourly rollup (for running sums hour by hour).
    """
    tenant_source = (
        _range_usage(start, end, _BUDGETED_TENANTS)
        if whole_days
        else f"{HOURLY}\n    WHERE hour >= {start} AND hour <= {end} AND {_BUDGETED_TENANTS}"
    )
    return f"""
    SELECT tenant_id, '' AS user_id, {select}
    FROM {tenant_source}
    GROUP BY tenant_id{group}
    UNION ALL
    SELECT tenant_id, user_id, {select}
    FROM {HOURLY}
    WHERE hour >= {start} AND hour <= {end} AND {_BUDGETED_USERS}
    GROUP BY tenant_id, user_id{group}"""


_BUDGET_PERIODS: Final = """toDateTime($__toTime, 'UTC') AS as_of,
     toDateTime(toStartOfMonth(as_of), 'UTC') AS month_start,
     toStartOfDay(as_of) AS day_start"""


def _budget_status(*, tenant_filter: bool = True) -> str:
    spend = _scoped_spend(
        "sumIf(cost_usd, hour >= day_start) AS day_spend, sum(cost_usd) AS month_spend",
        "",
        "month_start",
        "as_of",
        whole_days=True,
    )
    return f"""
WITH {_BUDGET_PERIODS}
SELECT
    b.tenant_id AS tenant,
    if(b.user_id = '', 'all users', b.user_id) AS user,
    toString(b.period) AS period,
    toString(b.enforcement) AS enforcement,
    b.limit_usd AS budget_usd,
    if(b.period = 'daily', s.day_spend, s.month_spend) AS spent_usd,
    -- As `llmledger budget check` has it: at the limit is breached (exact, in Decimal).
    spent_usd >= b.limit_usd AS is_breached,
    if(b.limit_usd > 0, toFloat64(spent_usd) / toFloat64(b.limit_usd), NULL) AS used_share,
    if(b.period = 'daily', day_start, month_start) AS period_start,
    if(b.period = 'daily', day_start + INTERVAL 1 DAY, month_start + INTERVAL 1 MONTH) AS period_end,
    toFloat64(spent_usd) * dateDiff('second', period_start, period_end)
        / greatest(dateDiff('second', period_start, as_of), 1) AS projected_usd,
    if(b.limit_usd > 0, projected_usd / toFloat64(b.limit_usd), NULL) AS projected_share
FROM ({LATEST_BUDGETS}
) AS b
LEFT JOIN ({spend}
) AS s ON b.tenant_id = s.tenant_id AND b.user_id = s.user_id
WHERE {_all_filter("b.tenant_id", "tenant") if tenant_filter else "b.limit_usd > 0"}
"""


BUDGET_STATUS: Final = f"""
SELECT
    tenant, user, period, enforcement, budget_usd, spent_usd, used_share, projected_usd, projected_share,
    multiIf(is_breached, 'breached', used_share >= $warn_share, 'warning',
            projected_share >= 1, 'on track to breach', 'ok') AS status
FROM ({_budget_status()})
ORDER BY used_share DESC, tenant, user, period
"""

BUDGET_COUNTS: Final = f"""
SELECT
    count() AS budgets,
    countIf(is_breached) AS breached,
    countIf(NOT is_breached AND used_share >= $warn_share) AS near_limit,
    countIf(NOT is_breached AND projected_share >= 1) AS on_track_to_breach
FROM ({_budget_status()})
"""

MONTHLY_BURN: Final = f"""
WITH {_BUDGET_PERIODS}
SELECT time, tenant, cumulative_usd / limit_usd AS budget_used
FROM (
    SELECT
        s.hour AS time,
        s.tenant_id AS tenant,
        toFloat64(b.limit_usd) AS limit_usd,
        sum(toFloat64(s.spend)) OVER (PARTITION BY s.tenant_id ORDER BY s.hour) AS cumulative_usd
    FROM (
        SELECT hour, tenant_id, sum(cost_usd) AS spend
        FROM {HOURLY}
        WHERE hour >= month_start AND hour <= as_of
          AND tenant_id IN (SELECT tenant_id FROM budgets WHERE user_id = '' AND period = 'monthly')
          AND {_all_filter("tenant_id", "tenant")}
        GROUP BY hour, tenant_id
    ) AS s
    INNER JOIN ({LATEST_BUDGETS}
    ) AS b ON b.tenant_id = s.tenant_id
    WHERE b.user_id = '' AND b.period = 'monthly' AND b.limit_usd > 0
)
ORDER BY time, tenant
"""

BREACHES: Final = f"""
{RANGE}
SELECT
    tenant,
    if(user = '', 'all users', user) AS user,
    toString(period) AS period,
    window_start,
    min(time) AS breached_in_hour,
    limit_usd AS budget_usd,
    max(cumulative_usd) AS spent_usd
FROM (
    SELECT
        b.tenant_id AS tenant,
        b.user_id AS user,
        b.period AS period,
        b.limit_usd AS limit_usd,
        s.hour AS time,
        if(b.period = 'daily', toStartOfDay(s.hour), toDateTime(toStartOfMonth(s.hour), 'UTC')) AS window_start,
        sum(s.spend) OVER (PARTITION BY b.tenant_id, b.user_id, b.period, window_start ORDER BY s.hour)
            AS cumulative_usd
    FROM ({
    _scoped_spend(
        "hour, sum(cost_usd) AS spend",
        ", hour",
        "toDateTime(toStartOfMonth(toDateTime(range_start, 'UTC')), 'UTC')",
        "range_end",
        whole_days=False,
    )
}
    ) AS s
    INNER JOIN ({LATEST_BUDGETS}
    ) AS b ON b.tenant_id = s.tenant_id AND b.user_id = s.user_id
    WHERE {_all_filter("b.tenant_id", "tenant")}
)
WHERE cumulative_usd >= limit_usd
GROUP BY tenant, user, period, window_start, limit_usd
HAVING max(time) >= range_start
ORDER BY breached_in_hour DESC, tenant, user
"""

# -- alert queries ---------------------------------------------------------------------------------------

# One row per budget: string columns become alert labels, used_share is the value.
ALERT_BUDGET_SHARE: Final = f"""
SELECT tenant, user, period, used_share
FROM ({_budget_status(tenant_filter=False)})
"""

MIN_CALLS_FOR_SPIKE: Final = 20


def _spike(flag: str, rollup_column: str, label: str) -> str:
    """Rate in the alert window (llm_calls) against 3x its rate in the 24 hours before (rollup).

    The value is current rate / max(5 %, 3 x baseline): above 1 is a spike. Models with
    fewer than MIN_CALLS_FOR_SPIKE calls in the window are left out.
    """
    return f"""
{RANGE}
SELECT now_.model AS model, now_.rate / greatest(0.05, 3 * ifNull(base.rate, 0)) AS {label}
FROM (
    SELECT response_model AS model, count() AS calls, countIf({flag}) / calls AS rate
    FROM {CALLS}
    WHERE Timestamp >= range_start AND Timestamp <= range_end
    GROUP BY model
    HAVING calls >= {MIN_CALLS_FOR_SPIKE}
) AS now_
LEFT JOIN (
    SELECT model, if(sum(calls) = 0, NULL, sum({rollup_column}) / sum(calls)) AS rate
    FROM {HOURLY}
    WHERE hour >= toStartOfHour(range_start) - INTERVAL 1 DAY AND hour < toStartOfHour(range_start)
    GROUP BY model
) AS base ON base.model = now_.model
ORDER BY model
"""


ALERT_ERROR_SPIKE: Final = _spike("NOT success", "errors", "error_spike")
ALERT_FALLBACK_SPIKE: Final = _spike("is_fallback", "fallbacks", "fallback_spike")

# -- dashboard assembly ---------------------------------------------------------------------------------


def _target(sql: str, fmt: int, ref_id: str = "A") -> dict[str, Any]:
    query_type = {TIME_SERIES: "timeseries", TABLE: "table", TRACE: "traces"}[fmt]
    return {
        "refId": ref_id,
        "datasource": DATASOURCE,
        "editorType": "sql",
        "format": fmt,
        "queryType": query_type,
        "rawSql": sql.strip(),
    }


class _Grid:
    """Places panels left to right, wrapping at Grafana's 24 columns."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _panel(
    grid: _Grid,
    kind: str,
    title: str,
    description: str,
    sql: str,
    fmt: int,
    *,
    w: int,
    h: int,
    unit: str | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    links: list[dict[str, Any]] | None = None,
    interval: str | None = None,
    max_data_points: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if links:
        defaults["links"] = links
    panel: dict[str, Any] = {
        "id": grid.new_id(),
        "type": kind,
        "title": title,
        "description": description,
        "gridPos": grid.place(w, h),
        "datasource": DATASOURCE,
        "targets": [_target(sql, fmt)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if interval:
        panel["interval"] = interval
    if max_data_points:
        panel["maxDataPoints"] = max_data_points
    return panel


def _unit(field: str, unit: str) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": field}, "properties": [{"id": "unit", "value": unit}]}


def _display_name(field: str, name: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "displayName", "value": name}],
    }


def _stat(
    grid: _Grid,
    title: str,
    description: str,
    sql: str,
    *,
    w: int,
    h: int,
    unit: str,
    names: dict[str, str] | None = None,
    overrides: Sequence[dict[str, Any]] = (),
    fields: str = "",
    calc: str = "lastNotNull",
) -> dict[str, Any]:
    """A stat panel over a table: its values (``calc`` of each of ``fields``, or of every
    field), each field in ``names`` shown under its name there, after ``overrides``."""
    return _panel(
        grid,
        "stat",
        title,
        description,
        sql,
        TABLE,
        w=w,
        h=h,
        unit=unit,
        overrides=[*overrides, *(_display_name(field, name) for field, name in (names or {}).items())],
        options={
            "reduceOptions": {"calcs": [calc], "fields": fields, "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    )


def _variables(kind: str) -> list[dict[str, Any]]:
    """The datasource, database, tenant, model and feature variables (tenant single on a drill-down)."""
    single_tenant = kind == "tenant"

    def query_var(name: str, label: str, sql: str, *, multi: bool) -> dict[str, Any]:
        sql = sql.strip()
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": DATASOURCE,
            "definition": sql,
            "query": {"refId": f"var-{name}", "editorType": "sql", "format": TABLE, "rawSql": sql},
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": multi,
            "current": {"text": ["All"], "value": ["$__all"]} if multi else {},
            "options": [],
            "hide": 0,
        }

    tenant_sql = f"""
SELECT DISTINCT tenant_id FROM {HOURLY}
WHERE $__timeFilter(hour) AND tenant_id != ''
ORDER BY tenant_id
"""
    scope = "tenant_id = ${tenant:singlequote}" if single_tenant else _all_filter("tenant_id", "tenant")
    model_sql = f"""
SELECT DISTINCT model FROM {HOURLY}
WHERE $__timeFilter(hour) AND {scope} AND model != ''
ORDER BY model
"""
    feature_sql = f"""
SELECT DISTINCT feature FROM {HOURLY}
WHERE $__timeFilter(hour) AND {scope} AND feature != ''
ORDER BY feature
"""
    variables: list[dict[str, Any]] = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": DATASOURCE_TYPE,
            "current": {"text": "llmledger ClickHouse", "value": DATASOURCE_UID},
            "options": [],
            "refresh": 1,
            "regex": "",
            "hide": 0,
        },
        query_var("tenant", "Tenant", tenant_sql, multi=not single_tenant),
        query_var("model", "Model", model_sql, multi=True),
        query_var("feature", "Feature", feature_sql, multi=True),
    ]
    if kind == "tenant":
        variables.append(
            {
                "type": "textbox",
                "name": "trace_id",
                "label": "Trace ID",
                "query": "",
                "current": {"text": "", "value": ""},
                "hide": 0,
                "description": "Set by the links in 'Most expensive calls'; shows that trace below.",
            }
        )
    if kind == "budgets":
        variables = [v for v in variables if v["name"] not in ("model", "feature")]
        variables.append(
            {
                "type": "custom",
                "name": "warn_share",
                "label": "Warn at share of budget",
                "query": "0.5,0.8,0.9",
                "current": {"text": "0.8", "value": "0.8"},
                "options": [{"text": v, "value": v, "selected": v == "0.8"} for v in ("0.5", "0.8", "0.9")],
                "multi": False,
                "includeAll": False,
                "hide": 0,
            }
        )
    return variables


def _dashboard(kind: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    uid = UIDS[kind]
    links = [
        {
            "type": "link",
            "title": other_title,
            "url": f"/d/{UIDS[other]}?${{__url_time_range}}&${{datasource:queryparam}}",
            "icon": "dashboard",
            "targetBlank": False,
        }
        for other, other_title in (
            ("overview", "Spend overview"),
            ("tenant", "Tenant drill-down"),
            ("reliability", "Reliability"),
            ("budgets", "Budgets"),
        )
        if other != kind
    ]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["llmledger", "llm", "cost"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5m",
        "time": {"from": "now-7d", "to": "now"},
        "fiscalYearStartMonth": 0,
        "links": links,
        "annotations": {"list": []},
        "templating": {"list": _variables(kind)},
        "panels": panels,
    }


USD: Final = "currencyUSD"


def spend_overview() -> dict[str, Any]:
    g = _Grid()
    rollup_hour = "1h"
    panels = [
        _stat(
            g, "Spend vs previous period",
            "Spend in the selected range, in the range of the same length just before it, and the change.",
            SPEND_VS_PREVIOUS, w=10, h=5, unit=USD, overrides=[_unit("change", "percentunit")],
            names={"spend": "Spend", "previous_spend": "Previous period", "change": "Change"},
        ),
        _stat(
            g, "Month-end projection",
            "Spend so far in the month that contains the end of the range, and where it lands at "
            "the same rate to the end of the month (UTC).",
            MONTH_END_PROJECTION, w=7, h=5, unit=USD,
            names={"month_to_date": "Month to date", "projected_month_end": "Projected month end"},
        ),
        _stat(
            g, "Saved by cached input",
            "Cached input tokens x (input price - cached input price), at the current prices in "
            "model_prices. Models without a price row there are listed below without a saving.",
            CACHED_INPUT_SAVINGS, w=7, h=5, unit=USD, fields="/^saved_usd$/", calc="sum",
        ),
        _panel(
            g, "timeseries", "Spend per tenant",
            "Spend per tenant per interval (rollup, at least hourly).",
            SPEND_PER_TENANT, TIME_SERIES, w=16, h=9, unit=USD, interval=rollup_hour,
            options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}},
        ),
        _panel(
            g, "table", "Top tenants",
            "The ten tenants that spent the most in the range, with their share of all spend.",
            TOP_TENANTS, TABLE, w=8, h=9, unit=USD,
            overrides=[_unit("share", "percentunit"), _unit("calls", "short"),
                       _unit("unpriced_calls", "short")],
        ),
        _panel(
            g, "table", "Spend by model",
            "Calls, tokens and spend per provider and model. unpriced_calls have no cost in the sums.",
            SPEND_BY_MODEL, TABLE, w=12, h=8, unit="short",
            overrides=[_unit("spend", USD)],
        ),
        _panel(
            g, "piechart", "Spend by provider", "Share of spend per provider.",
            SPEND_BY_PROVIDER, TABLE, w=5, h=8, unit=USD,
            options={"reduceOptions": {"calcs": ["sum"], "fields": "", "values": True},
                     "pieType": "donut", "displayLabels": ["name", "percent"],
                     "legend": {"displayMode": "list", "placement": "bottom"}},
        ),
        _stat(
            g, "Unpriced and estimated calls",
            "Calls with no known price (not counted in spend) and calls whose tokens were "
            "estimated locally because the API reported none.",
            UNPRICED_TOTALS, w=7, h=8, unit="short",
            names={"unpriced_calls": "Unpriced calls", "estimated_calls": "Estimated-token calls",
                   "calls": "All calls"},
        ),
        _panel(
            g, "timeseries", "Tokens by type",
            "Input split into uncached and cached, output into visible and reasoning tokens.",
            TOKENS_BY_TYPE, TIME_SERIES, w=12, h=8, unit="short", interval=rollup_hour,
            options={"legend": {"displayMode": "list", "placement": "bottom"},
                     "tooltip": {"mode": "multi", "sort": "none"}},
        ),
        _panel(
            g, "table", "Cached input savings by model",
            "What cached input saved per model at current list prices (model_prices). A model "
            "with no price row shows its cached tokens and no saving: unknown, not zero.",
            CACHED_INPUT_SAVINGS, TABLE, w=12, h=8, unit="short",
            overrides=[_unit("saved_usd", USD), _unit("input_per_mtok", USD),
                       _unit("cached_input_per_mtok", USD)],
        ),
        _panel(
            g, "table", "Models with unpriced or estimated calls",
            "Where spend is incomplete (no price) or approximate (estimated tokens).",
            UNPRICED_BY_MODEL, TABLE, w=24, h=7, unit="short",
            overrides=[_unit("unpriced_share", "percentunit")],
        ),
    ]  # fmt: skip
    return _dashboard(
        "overview",
        "llmledger — Spend overview",
        "What LLM calls cost, who spent it and on which models.",
        panels,
    )


def tenant_drilldown() -> dict[str, Any]:
    g = _Grid()
    trace_link = {
        "title": "Show this trace below",
        "url": f"/d/{UIDS['tenant']}?${{__url_time_range}}&${{datasource:queryparam}}"
        "&${tenant:queryparam}&var-trace_id=${__value.raw}",
        "targetBlank": False,
    }
    panels = [
        _stat(
            g, "Tenant spend", "The tenant's spend, calls and unpriced calls in the range.",
            TENANT_TOTALS, w=8, h=7, unit="short", overrides=[_unit("spend", USD)],
            names={"spend": "Spend", "calls": "Calls", "unpriced_calls": "Unpriced calls"},
        ),
        _panel(
            g, "timeseries", "Spend by feature over time", "The tenant's spend per feature per interval.",
            TENANT_SPEND_BY_FEATURE_OVER_TIME, TIME_SERIES, w=16, h=7, unit=USD, interval="1h",
            options={"legend": {"displayMode": "list", "placement": "bottom"},
                     "tooltip": {"mode": "multi", "sort": "desc"}},
        ),
        _panel(g, "table", "Spend by user", "The tenant's spend per user.", TENANT_BY_USER, TABLE,
               w=8, h=8, unit="short", overrides=[_unit("spend", USD)]),
        _panel(g, "table", "Spend by feature", "The tenant's spend per feature.", TENANT_BY_FEATURE,
               TABLE, w=8, h=8, unit="short", overrides=[_unit("spend", USD)]),
        _panel(g, "table", "Spend by model", "The tenant's spend per model.", TENANT_BY_MODEL, TABLE,
               w=8, h=8, unit="short", overrides=[_unit("spend", USD)]),
        _panel(
            g, "table", "Conversations by spend",
            "The tenant's 20 most expensive conversations (gen_ai.conversation.id), from llm_calls.",
            TENANT_CONVERSATIONS, TABLE, w=24, h=8, unit="short", overrides=[_unit("spend", USD)],
        ),
        _panel(
            g, "table", "Most expensive calls",
            "The tenant's 50 most expensive calls. The TraceId links to the trace below.",
            TENANT_EXPENSIVE_CALLS, TABLE, w=24, h=9, unit="short",
            overrides=[
                _unit("cost_usd", USD),
                {"matcher": {"id": "byName", "options": "TraceId"},
                 "properties": [{"id": "links", "value": [trace_link]}]},
            ],
        ),
        _panel(
            g, "traces", "Trace", "The spans of the trace picked in 'Most expensive calls' (otel_traces).",
            TRACE_SPANS, TRACE, w=24, h=12,
        ),
    ]  # fmt: skip
    return _dashboard(
        "tenant",
        "llmledger — Tenant drill-down",
        "One tenant's spend by user, feature, conversation and model, down to single calls and traces.",
        panels,
    )


def reliability() -> dict[str, Any]:
    g = _Grid()
    panels = [
        _stat(
            g, "Calls, errors and fallbacks", "Calls in the range, the share that failed and "
            "the share that were fallbacks after an earlier attempt failed.",
            RELIABILITY_TOTALS, w=24, h=4, unit="percentunit", overrides=[_unit("calls", "short")],
            names={"calls": "Calls", "error_rate": "Error rate", "fallback_rate": "Fallback rate"},
        ),
        _panel(
            g, "table", "Latency and time to first chunk by model",
            "Quantiles merged from the rollup's t-digest states (duration of every call; time to "
            "first chunk of streams).",
            LATENCY_BY_MODEL, TABLE, w=24, h=8, unit="ms",
            overrides=[_unit("calls", "short"),
                       {"matcher": {"id": "byRegexp", "options": "/_q$/"},
                        "properties": [{"id": "custom.hidden", "value": True}]}],
        ),
        _panel(
            g, "table", "Latency by model from the SDK's histograms",
            "The same quantiles from the app's gen_ai.client.operation.duration histogram "
            "(otel_metrics_histogram), interpolated within its semantic-convention buckets: a "
            "cross-check on the spans, and the view for apps that send metrics only. Filtered by "
            "model (metric attributes carry no feature, and a tenant only where enabled).",
            SDK_LATENCY_BY_MODEL, TABLE, w=24, h=6, unit="ms",
            overrides=[_unit("calls", "short"),
                       {"matcher": {"id": "byRegexp", "options": "/^(running|quantiles_s)$/"},
                        "properties": [{"id": "custom.hidden", "value": True}]}],
        ),
        # At most 24 points: a month is drawn from the daily rollup's t-digests, not from
        # merging every hourly (per-user) state.
        _panel(g, "timeseries", "p95 latency by model", "p95 call duration per model per interval.",
               P95_LATENCY_OVER_TIME, TIME_SERIES, w=12, h=8, unit="ms", interval="1h", max_data_points=24),
        _panel(g, "timeseries", "p95 time to first chunk by model",
               "p95 time to the first streamed chunk per model per interval.",
               P95_TTFT_OVER_TIME, TIME_SERIES, w=12, h=8, unit="ms", interval="1h", max_data_points=24),
        _panel(g, "timeseries", "Error and fallback rate", "Share of calls that failed / were fallbacks.",
               ERROR_AND_FALLBACK_RATE, TIME_SERIES, w=12, h=8, unit="percentunit", interval="1h"),
        _panel(g, "timeseries", "Error rate by error type",
               "Failed calls per error.type as a share of all calls in the interval.",
               ERROR_RATE_BY_TYPE, TIME_SERIES, w=12, h=8, unit="percentunit", interval="1h"),
        _panel(g, "table", "Errors by type and model", "Failed calls per error.type and model.",
               ERRORS_BY_TYPE, TABLE, w=12, h=8, unit="short",
               overrides=[_unit("error_rate", "percentunit")]),
        _panel(
            g, "table", "Which models fall back to which",
            "Attempt N of a trace against attempt N-1: the model that failed (and how), the model "
            "that stepped in, and how often the fallback succeeded.",
            FALLBACK_PAIRS, TABLE, w=12, h=8, unit="short", overrides=[_unit("success_rate", "percentunit")],
        ),
    ]  # fmt: skip
    return _dashboard(
        "reliability",
        "llmledger — Reliability",
        "Latency, time to first chunk, errors and fallbacks per model.",
        panels,
    )


def budgets() -> dict[str, Any]:
    g = _Grid()
    panels = [
        _stat(
            g, "Budgets now",
            "Budgets breached (spend at or over the limit), near it (>= warn share) and on track "
            "to breach at the current rate, as of the end of the range.",
            BUDGET_COUNTS, w=24, h=4, unit="short",
            names={"budgets": "Budgets", "breached": "Breached", "near_limit": "Near limit",
                   "on_track_to_breach": "On track to breach"},
        ),
        _panel(
            g, "table", "Spend against budget",
            "Each tenant's (and user's) budget for its current period (UTC day or month, as of the "
            "end of the range), spend so far, share used and the projection at the current rate.",
            BUDGET_STATUS, TABLE, w=24, h=9, unit=USD,
            overrides=[_unit("used_share", "percentunit"), _unit("projected_share", "percentunit"),
                       {"matcher": {"id": "byName", "options": "used_share"},
                        "properties": [{"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
                                       {"id": "max", "value": 1.2}, {"id": "min", "value": 0}]}],
        ),
        _panel(
            g, "timeseries", "Monthly budget burn",
            "Cumulative spend this month as a share of each tenant's monthly budget.",
            MONTHLY_BURN, TIME_SERIES, w=12, h=9, unit="percentunit",
            options={"legend": {"displayMode": "list", "placement": "bottom"},
                     "tooltip": {"mode": "multi", "sort": "desc"}},
        ),
        _panel(
            g, "table", "Breaches", "Budget periods in the range whose spend reached the limit, "
            "and the hour it happened.",
            BREACHES, TABLE, w=12, h=9, unit=USD,
        ),
    ]  # fmt: skip
    return _dashboard(
        "budgets",
        "llmledger — Budgets",
        "Spend against each tenant's budget, burn rate and breaches.",
        panels,
    )


DASHBOARDS: Final = {
    "spend-overview.json": spend_overview,
    "tenant-drilldown.json": tenant_drilldown,
    "reliability.json": reliability,
    "budgets.json": budgets,
}

# -- alert rules -----------------------------------------------------------------------------------------

ALERTS_FILE: Final = "provisioning/alerting/llmledger-alerts.yaml"


def _alert_rule(
    uid: str,
    title: str,
    sql: str,
    *,
    window_s: int,
    at_least: float,
    pending: str,
    severity: str,
    summary: str,
    description: str,
) -> dict[str, Any]:
    """A rule whose SQL returns one row per alert instance: string columns are its labels,
    the one number fires at ``at_least`` or more (threshold expression C on query A)."""
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": window_s, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {
                    **_target(sql, TABLE),
                    "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
                    "intervalMs": 60_000,
                    "maxDataPoints": 43_200,
                },
            },
            {
                "refId": "C",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "A",
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "conditions": [{"evaluator": {"type": "gte", "params": [at_least]}}],
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": pending,
        "annotations": {"summary": summary, "description": description},
        "labels": {"severity": severity, "source": "llmledger"},
        "isPaused": False,
    }


BUDGET_WARN_SHARE: Final = 0.8


def alert_rules() -> dict[str, Any]:
    budget_summary = (
        "{{ $labels.tenant }} ({{ $labels.user }}) has used {{ humanizePercentage $values.A.Value }} "
        "of its {{ $labels.period }} budget"
    )
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "llmledger budgets",
                "folder": "llmledger",
                "interval": "5m",
                "rules": [
                    _alert_rule(
                        "llmledger-budget-share",
                        f"Tenant spend crossed {BUDGET_WARN_SHARE:.0%} of its budget",
                        ALERT_BUDGET_SHARE,
                        window_s=3_600,
                        at_least=BUDGET_WARN_SHARE,
                        pending="0s",
                        severity="warning",
                        summary=budget_summary,
                        description="Spend in the budget's current UTC period (day or month) against the "
                        "newest limit in the budgets table (llmledger budget set).",
                    ),
                    _alert_rule(
                        "llmledger-budget-exceeded",
                        "Tenant spend reached its budget",
                        ALERT_BUDGET_SHARE,
                        window_s=3_600,
                        at_least=1.0,
                        pending="0s",
                        severity="critical",
                        summary=budget_summary,
                        description="Spend in the current period is at or over the limit in the budgets "
                        "table (what `llmledger budget check` calls breached).",
                    ),
                ],
            },
            {
                "orgId": 1,
                "name": "llmledger reliability",
                "folder": "llmledger",
                "interval": "1m",
                "rules": [
                    _alert_rule(
                        "llmledger-error-spike",
                        "LLM error rate spike",
                        ALERT_ERROR_SPIKE,
                        window_s=900,
                        at_least=1.0,
                        pending="2m",
                        severity="warning",
                        summary="{{ $labels.model }}: error rate over max(5 %, 3x its last-24h rate) "
                        '(ratio {{ printf "%.2f" $values.A.Value }})',
                        description=f"Failed calls in the last 15 minutes (models with at least "
                        f"{MIN_CALLS_FOR_SPIKE} calls) against the rate of the 24 hours before.",
                    ),
                    _alert_rule(
                        "llmledger-fallback-spike",
                        "LLM fallback rate spike",
                        ALERT_FALLBACK_SPIKE,
                        window_s=900,
                        at_least=1.0,
                        pending="2m",
                        severity="warning",
                        summary="{{ $labels.model }}: fallback rate over max(5 %, 3x its last-24h rate) "
                        '(ratio {{ printf "%.2f" $values.A.Value }})',
                        description="Calls that were fallbacks after an earlier attempt failed, last 15 "
                        "minutes against the 24 hours before.",
                    ),
                ],
            },
        ],
    }


def _yaml(document: dict[str, Any]) -> str:
    import yaml  # a dev dependency: only this build step writes YAML

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    header = "# Generated by grafana/build.py from the same SQL as the dashboards: edit there.\n"
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def render() -> dict[str, str]:
    """Path under grafana/ -> text of every generated file."""
    files = {
        f"dashboards/{name}": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }
    files[ALERTS_FILE] = _yaml(alert_rules())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail when a file differs from what would be written"
    )
    args = parser.parse_args(argv)
    stale: list[str] = []
    for name, text in render().items():
        path = GRAFANA_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python grafana/build.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
