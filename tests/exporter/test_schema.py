"""Schema migrations: the Collector's layout, idempotent apply, upgrades that keep data, layout options."""

from __future__ import annotations

import dataclasses

import pytest
from clickhouse_connect.driver.client import Client

from llmledger.exporter import ConfigError, StoreConfig
from llmledger.exporter._internal.migrations import (
    apply_migrations,
    load_migrations,
    migration_status,
    view_definitions,
)
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter

# The Collector (contrib) clickhouse exporter's otel_traces, as ClickHouse reports it.
COLLECTOR_OTEL_TRACES = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
]
# shared/ARCHITECTURE.md's llm_calls, in order.
LLM_CALLS_COLUMNS = [
    "Timestamp",
    "TraceId",
    "SpanId",
    "ServiceName",
    "tenant_id",
    "user_id",
    "session_id",
    "conversation_id",
    "feature",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_source",
    "tokens_estimated",
    "is_fallback",
    "fallback_attempt",
    "success",
    "error_type",
    "duration_ns",
    "ttft_ns",
    "stream",
    # additions (docs/contract-changes.md): the provider's response id and the call it identifies
    "response_id",
    "call_key",
]


def columns(query, database: str, table: str) -> list[tuple[str, str]]:
    rows = query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        db=database,
        t=table,
    )
    return [(r["name"], r["type"]) for r in rows]


def create_statements(query, database: str) -> dict[str, str]:
    rows = query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String}", db=database
    )
    return {r["name"]: r["create_table_query"] for r in rows}


def test_otel_traces_has_the_collector_layout(config: StoreConfig, query) -> None:
    assert columns(query, config.database, "otel_traces") == COLLECTOR_OTEL_TRACES
    assert columns(query, config.database, "otel_traces_trace_id_ts") == [
        ("TraceId", "String"),
        ("Start", "DateTime"),
        ("End", "DateTime"),
    ]
    (table,) = query(
        "SELECT sorting_key, partition_key FROM system.tables WHERE database = {db:String} "
        "AND name = 'otel_traces'",
        db=config.database,
    )
    assert table == {
        "sorting_key": "ServiceName, SpanName, toDateTime(Timestamp)",
        "partition_key": "toDate(Timestamp)",
    }
    assert "otel_traces_trace_id_ts_mv" in create_statements(query, config.database)


# The Collector (contrib) clickhouse exporter's metric and log tables (the version deploy/ runs).
_METRIC_HEAD = [
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ResourceSchemaUrl", "String"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeDroppedAttrCount", "UInt32"),
    ("ScopeSchemaUrl", "String"),
    ("ServiceName", "LowCardinality(String)"),
    ("MetricName", "String"),
    ("MetricDescription", "String"),
    ("MetricUnit", "String"),
    ("Attributes", "Map(LowCardinality(String), String)"),
    ("StartTimeUnix", "DateTime64(9)"),
    ("TimeUnix", "DateTime64(9)"),
]
_EXEMPLARS = [
    ("Exemplars.FilteredAttributes", "Array(Map(LowCardinality(String), String))"),
    ("Exemplars.TimeUnix", "Array(DateTime64(9))"),
    ("Exemplars.Value", "Array(Float64)"),
    ("Exemplars.SpanId", "Array(String)"),
    ("Exemplars.TraceId", "Array(String)"),
]
_MIN_MAX = [("Flags", "UInt32"), ("Min", "Float64"), ("Max", "Float64"), ("AggregationTemporality", "Int32")]
COLLECTOR_METRIC_TABLES = {
    "otel_metrics_gauge": [*_METRIC_HEAD, ("Value", "Float64"), ("Flags", "UInt32"), *_EXEMPLARS],
    "otel_metrics_sum": [
        *_METRIC_HEAD,
        ("Value", "Float64"),
        ("Flags", "UInt32"),
        *_EXEMPLARS,
        ("AggregationTemporality", "Int32"),
        ("IsMonotonic", "Bool"),
    ],
    "otel_metrics_histogram": [
        *_METRIC_HEAD,
        ("Count", "UInt64"),
        ("Sum", "Float64"),
        ("BucketCounts", "Array(UInt64)"),
        ("ExplicitBounds", "Array(Float64)"),
        *_EXEMPLARS,
        *_MIN_MAX,
    ],
    "otel_metrics_exponential_histogram": [
        *_METRIC_HEAD,
        ("Count", "UInt64"),
        ("Sum", "Float64"),
        ("Scale", "Int32"),
        ("ZeroCount", "UInt64"),
        ("PositiveOffset", "Int32"),
        ("PositiveBucketCounts", "Array(UInt64)"),
        ("NegativeOffset", "Int32"),
        ("NegativeBucketCounts", "Array(UInt64)"),
        *_EXEMPLARS,
        *_MIN_MAX,
    ],
    "otel_metrics_summary": [
        *_METRIC_HEAD,
        ("Count", "UInt64"),
        ("Sum", "Float64"),
        ("ValueAtQuantiles.Quantile", "Array(Float64)"),
        ("ValueAtQuantiles.Value", "Array(Float64)"),
        ("Flags", "UInt32"),
    ],
}
COLLECTOR_OTEL_LOGS = [
    ("Timestamp", "DateTime64(9)"),
    ("TimestampTime", "DateTime"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("TraceFlags", "UInt8"),
    ("SeverityText", "LowCardinality(String)"),
    ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"),
    ("Body", "String"),
    ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"),
    ("LogAttributes", "Map(LowCardinality(String), String)"),
]


def table_keys(query, database: str, table: str) -> dict[str, str]:
    (keys,) = query(
        "SELECT sorting_key, primary_key, partition_key FROM system.tables WHERE database = {db:String} "
        "AND name = {t:String}",
        db=database,
        t=table,
    )
    return keys


def skip_indexes(query, database: str, table: str) -> list[tuple[str, str, str]]:
    rows = query(
        "SELECT name, type_full, expr FROM system.data_skipping_indices WHERE database = {db:String} "
        "AND table = {t:String} ORDER BY name",
        db=database,
        t=table,
    )
    return [(r["name"], r["type_full"], r["expr"]) for r in rows]


_ATTRIBUTE_INDEXES = [
    ("idx_attr_key", "bloom_filter(0.01)", "mapKeys(Attributes)"),
    ("idx_attr_value", "bloom_filter(0.01)", "mapValues(Attributes)"),
    ("idx_res_attr_key", "bloom_filter(0.01)", "mapKeys(ResourceAttributes)"),
    ("idx_res_attr_value", "bloom_filter(0.01)", "mapValues(ResourceAttributes)"),
    ("idx_scope_attr_key", "bloom_filter(0.01)", "mapKeys(ScopeAttributes)"),
    ("idx_scope_attr_value", "bloom_filter(0.01)", "mapValues(ScopeAttributes)"),
]


@pytest.mark.parametrize("table", sorted(COLLECTOR_METRIC_TABLES))
def test_metric_tables_have_the_collector_layout(config: StoreConfig, query, table: str) -> None:
    assert columns(query, config.database, table) == COLLECTOR_METRIC_TABLES[table]
    sorting = "ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix)"
    assert table_keys(query, config.database, table) == {
        "sorting_key": sorting,
        "primary_key": sorting,
        "partition_key": "toDate(TimeUnix)",
    }
    assert skip_indexes(query, config.database, table) == _ATTRIBUTE_INDEXES


def test_otel_logs_has_the_collector_layout(config: StoreConfig, query) -> None:
    assert columns(query, config.database, "otel_logs") == COLLECTOR_OTEL_LOGS
    assert table_keys(query, config.database, "otel_logs") == {
        "sorting_key": "ServiceName, TimestampTime, Timestamp",
        "primary_key": "ServiceName, TimestampTime",
        "partition_key": "toDate(TimestampTime)",
    }
    assert skip_indexes(query, config.database, "otel_logs") == [
        ("idx_body", "tokenbf_v1(32768, 3, 0)", "Body"),
        ("idx_log_attr_key", "bloom_filter(0.01)", "mapKeys(LogAttributes)"),
        ("idx_log_attr_value", "bloom_filter(0.01)", "mapValues(LogAttributes)"),
        ("idx_res_attr_key", "bloom_filter(0.01)", "mapKeys(ResourceAttributes)"),
        ("idx_res_attr_value", "bloom_filter(0.01)", "mapValues(ResourceAttributes)"),
        ("idx_scope_attr_key", "bloom_filter(0.01)", "mapKeys(ScopeAttributes)"),
        ("idx_scope_attr_value", "bloom_filter(0.01)", "mapValues(ScopeAttributes)"),
        ("idx_trace_id", "bloom_filter(0.001)", "TraceId"),
    ]


def test_llm_calls_has_the_contract_columns_and_tenant_first(config: StoreConfig, query) -> None:
    assert [name for name, _ in columns(query, config.database, "llm_calls")] == LLM_CALLS_COLUMNS
    types = dict(columns(query, config.database, "llm_calls"))
    assert types["cost_usd"] == "Nullable(Decimal(38, 12))"
    # llm_calls is a view of llm_call_rows, one row per call (migration 0012).
    (table,) = query(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = 'llm_call_rows'",
        db=config.database,
    )
    assert table["sorting_key"].startswith("tenant_id,")


def test_applying_twice_changes_nothing(blank_config: StoreConfig, store_client: Client, query) -> None:
    first = apply_migrations(store_client, blank_config)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    before = create_statements(query, blank_config.database)
    assert apply_migrations(store_client, blank_config) == []
    assert create_statements(query, blank_config.database) == before
    assert all(status.applied for status in migration_status(store_client, blank_config))


def test_a_later_migration_applies_over_an_earlier_one_keeping_data(
    blank_config: StoreConfig, store_client: Client, recorder, query
) -> None:
    # A store as of 0011, the last version whose views its own migrations created (since
    # 0012 `schema apply` creates them from schema/views after the last migration).
    versions = [m.version for m in load_migrations()]
    apply_migrations(store_client, blank_config, target=11)
    statuses = migration_status(store_client, blank_config)
    assert [s.applied for s in statuses] == [v <= 11 for v in versions]

    for i in range(20):
        recorder.call(
            "chat",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": i,
                "gen_ai.usage.cost": 0.001,
                "tenant.id": "acme",
            },
        )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, blank_config.database).write(rows)

    applied = apply_migrations(store_client, blank_config)
    assert [m.version for m in applied] == [v for v in versions if v > 11]
    db = blank_config.database
    (counts,) = query(f"""SELECT (SELECT count() FROM {db}.otel_traces) AS spans,
                                 (SELECT count() FROM {db}.llm_calls) AS calls,
                                 (SELECT sum(calls) FROM {db}.llm_usage_hourly) AS rolled_up,
                                 (SELECT sum(input_tokens) FROM {db}.llm_usage_hourly) AS tokens""")
    assert counts == {"spans": 20, "calls": 20, "rolled_up": 20, "tokens": sum(range(20))}


def test_ttls_keep_raw_spans_shorter_than_rollups(
    blank_config: StoreConfig, store_client: Client, query
) -> None:
    config = dataclasses.replace(blank_config, spans_ttl_days=7, calls_ttl_days=90, rollup_ttl_days=730)
    apply_migrations(store_client, config)
    tables = create_statements(query, config.database)
    assert "TTL toDateTime(Timestamp) + toIntervalDay(7)" in tables["otel_traces"]
    assert "TTL toDateTime(Start) + toIntervalDay(7)" in tables["otel_traces_trace_id_ts"]
    assert "TTL toDateTime(Timestamp) + toIntervalDay(90)" in tables["llm_call_rows"]
    assert "TTL toDateTime(hour) + toIntervalDay(730)" in tables["llm_usage_hourly"]
    assert "TTL toDateTime(day) + toIntervalDay(730)" in tables["llm_usage_daily"]
    # Metrics and logs are kept as long as the raw spans.
    for table in COLLECTOR_METRIC_TABLES:
        assert "TTL toDateTime(TimeUnix) + toIntervalDay(7)" in tables[table], table
    assert "TTL toDateTime(TimestampTime) + toIntervalDay(7)" in tables["otel_logs"]


def test_cluster_mode_emits_on_cluster_and_replicated_engines() -> None:
    config = StoreConfig(url="http://ch:8123", database="ledger", cluster="prod")
    views = [s for v in view_definitions(config) for s in v.statements(config)]
    statements = [s for m in load_migrations() for s in m.statements(config)] + views
    # 0012's scratch copy of llm_calls lives on the node running the migration only.
    scratch = [s for s in statements if "llm_calls_keyed_0012" in s.split("\n")[0]]
    assert len(scratch) == 3
    creates = [s for s in statements if s.startswith("CREATE") and s not in scratch]
    assert creates
    assert all("ON CLUSTER `prod`" in s for s in creates)
    drops = [s for s in statements if s.startswith("DROP") and s not in scratch]
    assert drops
    assert all("ON CLUSTER `prod`" in s for s in drops)
    # Every table that stores rows is replicated (the Null tables of the view chain store none).
    tables = [s for s in creates if s.startswith("CREATE TABLE") and "ENGINE = Null" not in s]
    assert all("ENGINE = Replicated" in s for s in tables), "every table replicated"
    assert not any("non_replicated_deduplication_window" in s for s in statements)
    single = [s for m in load_migrations() for s in m.statements(StoreConfig(url="http://ch:8123"))]
    assert not any("ON CLUSTER" in s or "Replicated" in s for s in single)
    assert all(
        "non_replicated_deduplication_window" in s
        for s in single
        if s.startswith("CREATE TABLE") and "ENGINE = Null" not in s and "ENGINE = Memory" not in s
    )


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        StoreConfig.from_env(
            {"LLMLEDGER_CLICKHOUSE_URL": "ftp://x", "LLMLEDGER_SPANS_TTL_DAYS": "soon"},
            database="bad-name;",
            cluster="a b",
        )
    problems = caught.value.problems
    assert len(problems) == 4
    assert any("ftp://x" in p for p in problems)
    assert any("soon" in p for p in problems)
    assert any("bad-name;" in p for p in problems)
    assert any("'a b'" in p for p in problems)


def test_ttl_order_is_validated() -> None:
    with pytest.raises(ConfigError, match="spans_ttl_days must not exceed calls_ttl_days"):
        StoreConfig.from_env({}, url="chdb:///tmp/x", spans_ttl_days=30, calls_ttl_days=7)


def test_store_settings_resolve_defaults_then_file_then_environment_then_flags() -> None:
    file = {"url": "http://file:8123/filedb", "cluster": "c1", "spans_ttl_days": 7, "calls_ttl_days": 30}
    from_file = StoreConfig.resolve({}, file)
    assert (from_file.url, from_file.database, from_file.cluster) == (
        "http://file:8123/filedb",
        "filedb",
        "c1",
    )
    assert (from_file.spans_ttl_days, from_file.calls_ttl_days, from_file.rollup_ttl_days) == (7, 30, 0)
    env = {"LLMLEDGER_CLICKHOUSE_URL": "http://env:8123/envdb", "LLMLEDGER_CLICKHOUSE_CLUSTER": "c2"}
    from_env = StoreConfig.resolve(env, file)
    assert (from_env.url, from_env.database, from_env.cluster) == ("http://env:8123/envdb", "envdb", "c2")
    assert from_env.spans_ttl_days == 7  # what the environment does not set, the file still does
    # Flags as the CLI passes them: None for a flag not given.
    flagged = StoreConfig.resolve(env, file, {"url": "http://flag:8123/flagdb", "cluster": None})
    assert (flagged.url, flagged.database, flagged.cluster) == ("http://flag:8123/flagdb", "flagdb", "c2")
    with pytest.raises(ConfigError, match="database name 'a b'"):
        StoreConfig.resolve({}, {"url": "chdb:///tmp/x", "database": "a b"})


def test_default_store_is_in_the_users_data_dir(tmp_path) -> None:
    config = StoreConfig.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert config.embedded_path == tmp_path / "llmledger" / "store"
    assert config.database == "llmledger"
    server = StoreConfig.from_env({"LLMLEDGER_CLICKHOUSE_URL": "https://u:secret@ch.example:8443/ledger"})
    assert (server.embedded, server.database) == (False, "ledger")
    assert "secret" not in server.display_url


def test_embedded_only_migrations_run_on_the_embedded_store_and_are_recorded_on_a_server(
    config: StoreConfig, query
) -> None:
    tuning = [m for m in load_migrations() if m.embedded_only]
    assert tuning, "the merge-width migration is embedded-only"
    server = StoreConfig(url="http://ch:8123", database="ledger")
    assert all(m.statements(server) == [] for m in tuning)
    embedded = StoreConfig(url="chdb:///tmp/store", database="ledger")
    assert all(m.statements(embedded) for m in tuning)
    # Applied to the test store: on the embedded one the one-row-per-span tables merge
    # wider and the rollups keep the default; on a server nothing changed.
    tables = create_statements(query, config.database)
    for table in ("otel_traces", "otel_traces_trace_id_ts", "llm_call_rows"):
        assert ("merge_selector_base = 10" in tables[table]) == config.embedded, table
    for table in ("llm_usage_hourly", "llm_usage_daily", "llm_fallbacks"):
        assert "merge_selector_base" not in tables[table], table
