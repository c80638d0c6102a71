"""llm_fallbacks: every fallback span, with the model and error it replaced, kept by its view."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter

from .conftest import Query, Recorder


def test_fallback_spans_land_with_their_origin(
    config: StoreConfig, store_client: Client, query: Query
) -> None:
    recorder = Recorder({"service.name": "app", "tenant.id": "from-resource"}, "llmledger.instrumentation")
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "llmledger.feature": "lead_scoring",
    }
    recorder.call("chat gpt-4.1", {**common, "gen_ai.request.model": "gpt-4.1", "tenant.id": "acme",
                                   "error.type": "RateLimitError", "llmledger.fallback": False,
                                   "llmledger.fallback.attempt": 0}, error="429")  # fmt: skip
    recorder.call("chat gpt-4.1-mini", {**common, "gen_ai.request.model": "gpt-4.1-mini",
                                        "gen_ai.response.model": "gpt-4.1-mini-2025-04-14", "tenant.id": "acme",
                                        "llmledger.fallback": True, "llmledger.fallback.attempt": 1,
                                        "llmledger.fallback.from_model": "gpt-4.1",
                                        "llmledger.fallback.from_error": "RateLimitError"})  # fmt: skip
    recorder.call("chat old", {**common, "gen_ai.request.model": "gpt-4o-mini", "llmledger.fallback": True,
                               "llmledger.fallback.attempt": 1})  # fmt: skip
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)
    got = query(
        f"SELECT tenant_id, feature, from_model, from_error, to_model, attempt, success "
        f"FROM `{config.database}`.llm_fallbacks ORDER BY to_model"
    )
    assert got == [
        {"tenant_id": "acme", "feature": "lead_scoring", "from_model": "gpt-4.1", "from_error": "RateLimitError",
         "to_model": "gpt-4.1-mini-2025-04-14", "attempt": 1, "success": True},
        # A fallback from older instrumentation: no origin, the resource's tenant.
        {"tenant_id": "from-resource", "feature": "lead_scoring", "from_model": "", "from_error": "",
         "to_model": "gpt-4o-mini", "attempt": 1, "success": True},
    ]  # fmt: skip
