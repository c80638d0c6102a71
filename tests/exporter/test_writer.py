"""Spans from the real SDK and their OTLP encoding land as identical rows, and as typed llm_calls rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client
from opentelemetry.trace import Link

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, SpanRows
from llmledger.exporter._internal.writer import ATTRIBUTE_INDEXES, SpanWriter
from tests.store_checks import OTEL_TRACES_INDEXES, built_skip_indexes

START = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

# A chat call as llmledger's instrumentation describes it (the span contract).
OUR_CHAT: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-abc",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.request.stream": True,
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 345,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.reasoning.output_tokens": 64,
    "gen_ai.response.time_to_first_chunk": 0.4375,
    "gen_ai.conversation.id": "conv-7",
    "gen_ai.usage.cost": 0.000435,
    "llmledger.cost.input": 0.000228,
    "llmledger.cost.output": 0.000207,
    "llmledger.cost.source": "price_table",
    "llmledger.usage.estimated": False,
    "tenant.id": "acme",
    "user.id": "u-42",
    "session.id": "s-9",
    "llmledger.feature": "lead_scoring",
    "llmledger.fallback": True,
    "llmledger.fallback.attempt": 1,
    "openai.api.type": "chat_completions",
    "server.address": "api.openai.com",
    "server.port": 443,
}


def test_sdk_spans_and_their_otlp_encoding_give_identical_rows(make_recorder, to_otlp) -> None:
    recorder = make_recorder({"service.name": "crm", "tenant.id": "acme", "deployment.environment": "prod"})
    recorder.call("chat gpt-4o-mini", OUR_CHAT, start_ns=START)
    recorder.call(
        "embeddings text-embedding-3-small", {"gen_ai.operation.name": "embeddings"}, error="timeout"
    )
    with recorder.tracer.start_as_current_span("parent") as parent:
        parent.add_event("retry", {"attempt": 2, "delay": 0.5, "ok": False})
        link = Link(parent.get_span_context(), {"link.kind": "follows", "weight": 0.25})
        with recorder.tracer.start_as_current_span("child", links=[link]):
            pass
    spans = recorder.finished()

    from_sdk = SpanRows()
    from_sdk.add_sdk_spans(spans)
    from_otlp = SpanRows()
    from_otlp.add_otlp(to_otlp(spans))

    assert len(from_sdk) == len(spans) == 4
    assert from_sdk.rows() == from_otlp.rows()
    child = next(row for row in from_sdk.rows() if row[5] == "child")
    assert child[18:] == (
        [format(spans[2].context.trace_id, "032x")],
        [format(spans[3].context.span_id, "016x")],
        [""],
        [{"link.kind": "follows", "weight": "0.25"}],
    )
    parent_row = next(row for row in from_sdk.rows() if row[5] == "parent")
    assert parent_row[16:18] == (["retry"], [{"attempt": "2", "delay": "0.5", "ok": "false"}])
    (event_time,) = parent_row[15]
    assert event_time >= parent_row[0]
    assert from_sdk.dedup_token() == from_otlp.dedup_token()


def test_rows_are_written_as_the_collector_writes_them(recorder) -> None:
    recorder.call("chat gpt-4o-mini", OUR_CHAT, start_ns=START, duration_ns=1_500_000_000, error="boom")
    (span,) = recorder.finished()
    rows = SpanRows()
    rows.add_sdk_spans([span])
    row = dict(zip([name for name, _ in OTEL_TRACES_COLUMNS], rows.rows()[0], strict=True))

    assert row["Timestamp"] == START
    assert row["TraceId"] == format(span.context.trace_id, "032x")
    assert row["SpanId"] == format(span.context.span_id, "016x")
    assert row["ParentSpanId"] == ""
    assert row["SpanKind"] == "Client"
    assert row["StatusCode"] == "Error"
    assert row["StatusMessage"] == "boom"
    assert row["ServiceName"] == "test-app"
    assert row["ScopeName"] == "llmledger.instrumentation.openai"
    assert row["ScopeVersion"] == "1.2.3"
    assert row["Duration"] == 1_500_000_000
    assert row["SpanAttributes"]["gen_ai.usage.cost"] == "0.000435"
    assert row["SpanAttributes"]["gen_ai.request.stream"] == "true"
    assert row["SpanAttributes"]["gen_ai.response.finish_reasons"] == '["stop"]'
    assert row["SpanAttributes"]["server.port"] == "443"
    assert row["ResourceAttributes"]["service.name"] == "test-app"


def test_our_span_lands_in_llm_calls_column_by_column(
    recorder, config: StoreConfig, store_client: Client, query
) -> None:
    recorder.call("chat gpt-4o-mini", OUR_CHAT, start_ns=START, duration_ns=1_500_000_000)
    (span,) = recorder.finished()
    rows = SpanRows()
    rows.add_sdk_spans([span])
    assert SpanWriter(store_client, config.database).write(rows) == 1

    (call,) = query(f"SELECT * FROM {config.database}.llm_calls")
    assert call["TraceId"] == format(span.context.trace_id, "032x")
    assert call["SpanId"] == format(span.context.span_id, "016x")
    assert call["ServiceName"] == "test-app"
    assert call["tenant_id"] == "acme"
    assert call["user_id"] == "u-42"
    assert call["session_id"] == "s-9"
    assert call["conversation_id"] == "conv-7"
    assert call["feature"] == "lead_scoring"
    assert call["provider"] == "openai"
    assert call["operation"] == "chat"
    assert call["request_model"] == "gpt-4o-mini"
    assert call["response_model"] == "gpt-4o-mini-2024-07-18"
    assert call["input_tokens"] == 1200
    assert call["cached_input_tokens"] == 1024
    assert call["output_tokens"] == 345
    assert call["reasoning_tokens"] == 64
    assert call["cost_usd"] == Decimal("0.000435")
    assert call["cost_source"] == "price_table"
    assert call["tokens_estimated"] is False
    assert call["is_fallback"] is True
    assert call["fallback_attempt"] == 1
    assert call["success"] is True
    assert call["error_type"] == ""
    assert call["duration_ns"] == 1_500_000_000
    assert call["ttft_ns"] == 437_500_000
    assert call["stream"] is True
    (stamp,) = query(f"SELECT toUnixTimestamp64Nano(Timestamp) AS ns FROM {config.database}.llm_calls")
    assert stamp["ns"] == START


def test_failed_call_is_an_error_with_its_type(
    recorder, config: StoreConfig, store_client: Client, query
) -> None:
    failed = {**OUR_CHAT, "error.type": "RateLimitError", "gen_ai.response.id": "chatcmpl-1"}
    del failed["gen_ai.usage.cost"]
    recorder.call("chat gpt-4o-mini", failed, error="429")
    recorder.call(
        "chat gpt-4o-mini",
        {**{k: v for k, v in OUR_CHAT.items() if k != "error.type"}, "gen_ai.response.id": "chatcmpl-2"},
        error="no type",
    )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)

    calls = query(f"SELECT success, error_type FROM {config.database}.llm_calls ORDER BY error_type")
    assert calls == [
        {"success": False, "error_type": "RateLimitError"},
        {"success": False, "error_type": "_OTHER"},
    ]


def test_non_llm_spans_stay_out_of_llm_calls(
    recorder, config: StoreConfig, store_client: Client, query
) -> None:
    recorder.call("GET /health", {"http.request.method": "GET"})
    recorder.call(
        "invoke_agent planner", {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai"}
    )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)

    assert query(f"SELECT count() AS n FROM {config.database}.otel_traces") == [{"n": 2}]
    assert query(f"SELECT count() AS n FROM {config.database}.llm_calls") == [{"n": 0}]


def test_a_retried_batch_changes_nothing_downstream(
    recorder, config: StoreConfig, store_client: Client, query
) -> None:
    for i in range(50):
        recorder.call(
            "chat gpt-4o-mini",
            {**OUR_CHAT, "tenant.id": f"t{i % 3}", "gen_ai.response.id": f"chatcmpl-{i}"},
            start_ns=START + i * 60_000_000_000,
        )
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    writer = SpanWriter(store_client, config.database)
    db = config.database
    totals = f"""SELECT
        (SELECT count() FROM {db}.otel_traces) AS spans,
        (SELECT count() FROM {db}.otel_traces_trace_id_ts) AS trace_ids,
        (SELECT count() FROM {db}.llm_calls) AS calls,
        (SELECT sum(calls) FROM {db}.llm_usage_hourly) AS rollup_calls,
        (SELECT sum(cost_usd) FROM {db}.llm_usage_hourly) AS rollup_cost,
        (SELECT sum(calls) FROM {db}.llm_usage_daily) AS daily_calls"""

    writer.write(rows)
    first = query(totals)
    writer.write(rows)  # the retry: same spans, same token
    assert query(totals) == first
    assert first[0]["calls"] == first[0]["rollup_calls"] == first[0]["daily_calls"] == 50
    assert first[0]["rollup_cost"] == Decimal("0.000435") * 50

    # The same spans under another token pass the insert deduplication, and still describe
    # the same calls: billed once (migration 0012).
    writer.write(rows, dedup_token="a-different-batch")
    again = query(totals)[0]
    assert (again["spans"], again["calls"], again["rollup_calls"], again["daily_calls"]) == (100, 50, 50, 50)


def test_attribute_indexes_can_be_left_to_the_first_merge(
    recorder, config: StoreConfig, store_client: Client, query
) -> None:
    for index in range(3):
        recorder.call("chat gpt-4o-mini", {**OUR_CHAT, "tenant.id": f"t{index}"}, start_ns=START)
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database, defer_attribute_indexes=True).write(rows)
    assert built_skip_indexes(store_client, config.database) == {
        **dict.fromkeys(OTEL_TRACES_INDEXES, True),
        **dict.fromkeys(ATTRIBUTE_INDEXES, False),
    }

    by_attribute = f"SELECT SpanAttributes['tenant.id'] AS t FROM {config.database}.otel_traces WHERE t IN ('t0', 't2') ORDER BY t"
    before = [row["t"] for row in query(by_attribute)]
    store_client.command(f"OPTIMIZE TABLE {config.database}.otel_traces FINAL")
    assert built_skip_indexes(store_client, config.database) == dict.fromkeys(OTEL_TRACES_INDEXES, True)
    assert before == [row["t"] for row in query(by_attribute)] == ["t0", "t2"]


def test_by_default_every_index_is_built_on_insert(
    recorder, config: StoreConfig, store_client: Client
) -> None:
    recorder.call("chat gpt-4o-mini", OUR_CHAT, start_ns=START)
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)
    assert built_skip_indexes(store_client, config.database) == dict.fromkeys(OTEL_TRACES_INDEXES, True)
