"""OTLP recorded once from the real third-party instrumentations (tests/fixtures/otlp/*.json,
each naming the packages and versions that made it; tests/fixtures/otlp/record.py and
record_js.mjs) lands in llm_calls column by column: decoded by the collector's OTLP/HTTP
decoder as the instrumentation's exporter sends it, written into the embedded store, priced
from model_prices where the span carries no cost. The later recordings (OpenLIT,
traceloop-sdk, the JS instrumentations; each plain and streamed) are checked against their
own span: the expected row is read from its attributes, dialect by dialect."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from genai_prices import Usage, calc_price
from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.collector.otlp import CONTENT_TYPE_PROTOBUF, decode_http_body
from llmledger.exporter._internal.prices import write_prices
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.instrumentation.pricing import PriceRow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"


def price(provider: str, model: str, usage: Usage) -> Decimal:
    return calc_price(usage, model_ref=model, provider_id=provider).total_price


OPENAI_CALL: dict[str, Any] = {
    "tenant_id": "acme",  # the resource's tenant.id
    "provider": "openai",
    "operation": "chat",
    "request_model": "gpt-4o-mini",
    "response_model": "gpt-4o-mini-2024-07-18",
    "response_id": "chatcmpl-rec-0001",
    "input_tokens": 1200,
    "cached_input_tokens": 1024,
    "cache_write_input_tokens": 0,
    "output_tokens": 80,
    "reasoning_tokens": 0,
    "cost_usd": price(
        "openai", "gpt-4o-mini-2024-07-18", Usage(input_tokens=1200, cache_read_tokens=1024, output_tokens=80)
    ),
    "cost_source": "model_prices:genai-prices",
    "success": True,
    "error_type": "",
    "stream": False,
    "tokens_estimated": False,
    "is_fallback": False,
}
ANTHROPIC_CALL: dict[str, Any] = {
    "tenant_id": "acme",
    "provider": "anthropic",
    "operation": "chat",
    "request_model": "claude-sonnet-4-20250514",
    "response_model": "claude-sonnet-4-20250514",
    "response_id": "msg_rec_0001",
    # Both the SDK's own span and OpenLLMetry's count cache reads and writes inside input.
    "input_tokens": 1000,
    "cached_input_tokens": 200,
    "cache_write_input_tokens": 600,
    "output_tokens": 50,
    "reasoning_tokens": 0,
    # 200 uncached x $3 + 600 written x $3.75 + 200 read x $0.30 + 50 out x $15, per million
    "cost_usd": Decimal("0.00366"),
    "cost_source": "model_prices:genai-prices",
    "success": True,
    "error_type": "",
    "stream": False,
    "tokens_estimated": False,
    "is_fallback": False,
}
EXPECTED: dict[str, list[dict[str, Any]]] = {
    # OpenLLMetry 0.62.4: gen_ai.user and gen_ai.is_streaming read.
    "openllmetry-openai": [{**OPENAI_CALL, "user_id": "u-42"}],
    # The anthropic SDK traces the call itself and OpenLLMetry traces it too: one call.
    "openllmetry-anthropic": [{**ANTHROPIC_CALL, "user_id": ""}],
    # contrib openai-v2 2.4b0 reports no cached tokens: the call is priced as it says.
    "contrib-openai-v2": [
        {
            **OPENAI_CALL,
            "user_id": "",
            "cached_input_tokens": 0,
            "cost_usd": price("openai", "gpt-4o-mini-2024-07-18", Usage(input_tokens=1200, output_tokens=80)),
        }
    ],
    # OpenInference: llm.* names; it records no response id.
    "openinference-openai": [
        {**OPENAI_CALL, "user_id": "", "request_model": "gpt-4o-mini-2024-07-18", "response_id": ""}
    ],
    # The SDK's span carries the response id, OpenInference's does not: by the documented
    # rule a span without a response id is a call of its own, so this response is two
    # calls (docs/storage.md, "Billed once"; a known gap).
    "openinference-anthropic": [
        {**ANTHROPIC_CALL, "user_id": "", "response_id": ""},
        {**ANTHROPIC_CALL, "user_id": ""},
    ],
}


def load(name: str) -> tuple[dict[str, str], ExportTraceServiceRequest]:
    """The fixture's packages and its request, through the collector's OTLP/HTTP decoder.

    record_js.mjs keeps the OTLP/JSON body the JS exporter sends (hex ids, ``sent_as``);
    record.py keeps protobuf's JSON form of the request the Python exporter sends as
    protobuf.
    """
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    content_type = fixture.get("sent_as", CONTENT_TYPE_PROTOBUF)
    if content_type == CONTENT_TYPE_PROTOBUF:
        body = ParseDict(fixture["request"], ExportTraceServiceRequest()).SerializeToString()
    else:
        body = json.dumps(fixture["request"]).encode()
    decoded = decode_http_body(content_type, "", body, limit=len(body))
    assert decoded.rejected_spans == 0
    return fixture["recorded_with"], ExportTraceServiceRequest.FromString(decoded.payload)


def replay(
    request: ExportTraceServiceRequest, config: StoreConfig, store_client: Client, prices: list[PriceRow]
) -> None:
    """Write the request as the collector's drain does, twice: a replay changes nothing."""
    write_prices(store_client, config.database, prices)
    rows = SpanRows()
    rows.add_otlp(request)
    writer = SpanWriter(store_client, config.database)
    writer.write(rows)
    writer.write(rows, dedup_token="replayed")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_spans_land_column_by_column(
    name: str, config: StoreConfig, store_client: Client, query, bundled_prices: list[PriceRow]
) -> None:
    recorded_with, request = load(name)
    assert recorded_with  # every fixture names the packages and versions that made it
    replay(request, config, store_client, bundled_prices)
    columns = ", ".join(EXPECTED[name][0])
    got = query(f"SELECT {columns} FROM {config.database}.llm_calls ORDER BY response_id")
    assert got == EXPECTED[name]
    (rollup,) = query(
        f"SELECT sum(calls) AS calls, sum(cost_usd) AS cost FROM {config.database}.llm_usage_hourly"
    )
    assert rollup == {"calls": len(got), "cost": sum((c["cost_usd"] for c in got), Decimal(0))}


class RecordedCall:
    """The one LLM span of a fixture, as its instrumentation wrote it.

    ``call["name"]`` is a span attribute (a KeyError when the span does not carry it: an
    expectation can only name what the recording says); ``resource`` the resource's.
    """

    def __init__(self, request: ExportTraceServiceRequest) -> None:
        found = [
            (resource_spans.resource.attributes, span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
            if any(kv.key == "gen_ai.operation.name" for kv in span.attributes)
        ]
        ((resource, span),) = found
        self.resource = attribute_values(resource)
        self.attributes = attribute_values(span.attributes)
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.duration_ns = span.end_time_unix_nano - span.start_time_unix_nano
        self.ok = span.status.code != span.status.STATUS_CODE_ERROR

    def __getitem__(self, name: str) -> Any:
        return self.attributes[name]

    def says_nothing_about(self, *words: str) -> bool:
        """No span or resource attribute name holds any of ``words``."""
        return not any(word in key for key in [*self.attributes, *self.resource] for word in words)


def attribute_values(attributes: Any) -> dict[str, Any]:
    return {kv.key: plain(kv) for kv in attributes}


SCALARS = ("string_value", "bool_value", "int_value", "double_value")


def plain(kv: KeyValue) -> Any:
    """A scalar attribute's value; None for arrays and maps (no column reads them)."""
    value: AnyValue = kv.value
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in SCALARS else None


# Columns a span may leave unsaid: the words its attribute names would hold if it said
# them, and what llm_calls reads when it does not.
UNSAID: dict[str, tuple[tuple[str, ...], Any]] = {
    "tenant_id": (("tenant",), ""),
    "user_id": (("user",), ""),
    "session_id": (("session",), ""),
    "conversation_id": (("conversation",), ""),
    "feature": (("feature", "workflow"), ""),
    "cached_input_tokens": (("cache_read", "cached"), 0),
    "cache_write_input_tokens": (("cache_creation", "cache_write"), 0),
    "reasoning_tokens": (("reasoning",), 0),
    "stream": (("stream",), False),
    "ttft_ns": (("time_to_first",), None),
}


def semconv_call(call: RecordedCall, provider: str = "gen_ai.provider.name", **said: Any) -> dict[str, Any]:
    """The llm_calls row of a span in GenAI semconv names; ``said`` holds what the dialect
    says of the ``UNSAID`` columns and the cost source. A column neither said nor mentioned
    by any attribute name reads as its empty value; one the span mentions but the test does
    not read fails here, so an attribute llm_calls should read cannot go unnoticed."""
    if "gen_ai.usage.input_tokens" not in call.attributes:
        # A span without usage: no tokens, and no price, never a price of 0.
        assert call.says_nothing_about("usage", "token")
        usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "cost_source": "unpriced"}
    else:
        usage = {
            "input_tokens": call["gen_ai.usage.input_tokens"],
            "output_tokens": call["gen_ai.usage.output_tokens"],
            "cost_source": "model_prices:genai-prices",
        }
    row: dict[str, Any] = {
        "TraceId": call.trace_id,
        "SpanId": call.span_id,
        "ServiceName": call.resource["service.name"],
        "provider": call[provider],
        "operation": call["gen_ai.operation.name"],
        "request_model": call["gen_ai.request.model"],
        "response_model": call["gen_ai.response.model"],
        "response_id": call["gen_ai.response.id"],
        **usage,
        "success": call.ok,
        "error_type": "",
        "tokens_estimated": False,
        "is_fallback": False,
        "duration_ns": call.duration_ns,
    }
    if "cost_source" not in said:
        assert call.says_nothing_about("cost"), "the span reports a cost: say what becomes of it"
    for column, (words, empty) in UNSAID.items():
        if column not in said:
            assert call.says_nothing_about(*words), f"the span says something of {column}: read it"
            row[column] = empty
    row.update(said)
    # None of these recordings carries a usable cost: llm_calls prices the tokens it read.
    row["cost_usd"] = (
        None
        if row["cost_source"].startswith("unpriced")
        else price(
            row["provider"],
            row["response_model"],
            Usage(
                input_tokens=row["input_tokens"],
                cache_read_tokens=row["cached_input_tokens"],
                cache_write_tokens=row["cache_write_input_tokens"],
                output_tokens=row["output_tokens"],
            ),
        )
    )
    return row


def openlit_openai(call: RecordedCall) -> dict[str, Any]:
    # OpenLIT had no price list (it fetches one at start; offline it has none) and wrote 0:
    # not a price for a call with tokens.
    assert call["gen_ai.usage.cost"] == 0
    # Its time to first token is a stream's time to first chunk; on a call not streamed it
    # is the whole response time, and there is no first chunk.
    first_token_s = call["gen_ai.server.time_to_first_token"]
    return semconv_call(
        call,
        ttft_ns=round(first_token_s * 1_000_000_000) if call["gen_ai.request.stream"] else None,
        tenant_id=call.resource["tenant.id"],  # OTEL_RESOURCE_ATTRIBUTES on OpenLIT's resource
        user_id=call["gen_ai.request.user"],
        cached_input_tokens=call["gen_ai.usage.cache_read.input_tokens"],
        cache_write_input_tokens=call["gen_ai.usage.cache_creation.input_tokens"],
        stream=call["gen_ai.request.stream"],
        cost_source="model_prices:genai-prices (reported 0 ignored)",
    )


def traceloop_sdk_openai(call: RecordedCall) -> dict[str, Any]:
    # Traceloop.init's resource names only the service: who is billed comes from the
    # association properties and the workflow, which its span processor copies onto every span.
    assert "tenant.id" not in call.resource
    said = {
        "tenant_id": call["traceloop.association.properties.tenant_id"],
        "user_id": call["traceloop.association.properties.user_id"],
        "session_id": call["traceloop.association.properties.session_id"],
        "feature": call["traceloop.workflow.name"],
        "cached_input_tokens": call["gen_ai.usage.cache_read.input_tokens"],
        "stream": call["gen_ai.is_streaming"],
    }
    if "gen_ai.usage.reasoning_tokens" in call.attributes:  # a stream's span has no count
        said["reasoning_tokens"] = call["gen_ai.usage.reasoning_tokens"]
    return semconv_call(call, **said)


def otel_js_openai(call: RecordedCall) -> dict[str, Any]:
    # The older semconv provider attribute; no cached-token count, no user.
    return semconv_call(call, provider="gen_ai.system", tenant_id=call.resource["tenant.id"])


def traceloop_js_openai(call: RecordedCall) -> dict[str, Any]:
    # Streamed, 0.27.0 records no usage (the usage chunk is not read; token counts only with
    # enrichTokens, tiktoken estimates): the call is unpriced, not free.
    return semconv_call(call, tenant_id=call.resource["tenant.id"])


# Each recorded plain and streamed (``<name>-stream``).
READ_FROM_THE_SPAN = {
    f"{name}{streamed}": read
    for name, read in {
        "openlit-openai": openlit_openai,
        "traceloop-sdk-openai": traceloop_sdk_openai,
        "otel-js-openai": otel_js_openai,
        "traceloop-js-openai": traceloop_js_openai,
    }.items()
    for streamed in ("", "-stream")
}


@pytest.mark.parametrize("name", sorted(READ_FROM_THE_SPAN))
def test_recorded_span_lands_as_it_says(
    name: str, config: StoreConfig, store_client: Client, query, bundled_prices: list[PriceRow]
) -> None:
    recorded_with, request = load(name)
    assert recorded_with  # every fixture names the packages and versions that made it
    expected = READ_FROM_THE_SPAN[name](RecordedCall(request))
    replay(request, config, store_client, bundled_prices)
    got = query(f"SELECT {', '.join(expected)} FROM {config.database}.llm_calls")
    assert got == [expected]
    (rollup,) = query(
        f"SELECT sum(calls) AS calls, sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced, "
        f"sum(cached_input_tokens) AS cached, sum(cache_write_input_tokens) AS cache_written "
        f"FROM {config.database}.llm_usage_hourly"
    )
    assert rollup == {
        "calls": 1,
        "cost": expected["cost_usd"] or Decimal(0),
        "unpriced": int(expected["cost_usd"] is None),
        "cached": expected["cached_input_tokens"],
        "cache_written": expected["cache_write_input_tokens"],
    }
