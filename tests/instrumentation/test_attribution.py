"""Who pays: attribution scopes, baggage, the resource; fallbacks; per-request totals."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx2
import openai
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource

from llmledger.instrumentation import (
    LLMLedgerInstrumentor,
    attribution,
    fallbacks,
    propagate_context,
    usage_totals,
)

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry, make_telemetry

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(client: Any, model: str = "gpt-4o-mini") -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES)


def who(span: Any) -> dict[str, Any]:
    attrs = span.attributes or {}
    keys = ("tenant.id", "user.id", "session.id", "gen_ai.conversation.id", "llmledger.feature")
    return {k: attrs[k] for k in keys if k in attrs}


@pytest.fixture
def client(fake: FakeOpenAI, instrumented: LLMLedgerInstrumentor) -> Any:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(100, 20, cached=40, reasoning=5)))
    return Api("sync", fake)._client()


def test_nested_scopes_override_only_what_they_set(client: Any, telemetry: Telemetry) -> None:
    with attribution(tenant_id="acme", user_id="u-1", session_id="s-1"):
        with attribution(feature="lead_scoring", conversation_id="conv-9"):
            chat(client)
        with attribution(user_id="u-2"):
            chat(client)
    chat(client)
    first, second, third = telemetry.finished()
    assert who(first) == {
        "tenant.id": "acme",
        "user.id": "u-1",
        "session.id": "s-1",
        "gen_ai.conversation.id": "conv-9",
        "llmledger.feature": "lead_scoring",
    }
    assert who(second) == {"tenant.id": "acme", "user.id": "u-2", "session.id": "s-1"}
    assert who(third) == {}


def test_decorator_sync_and_async(fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any) -> None:
    fake.json("/chat/completions", P.chat_completion())

    @attribution(tenant_id="globex", feature="contact_extraction")
    def extract() -> None:
        Api("sync", fake).call(chat)

    @attribution(tenant_id="initech", feature="summaries")
    async def summarize() -> None:
        await chat(Api("async", fake)._client())

    extract()
    asyncio.run(summarize())
    extract()
    assert [who(s) for s in telemetry.finished()] == [
        {"tenant.id": "globex", "llmledger.feature": "contact_extraction"},
        {"tenant.id": "initech", "llmledger.feature": "summaries"},
        {"tenant.id": "globex", "llmledger.feature": "contact_extraction"},
    ]


def test_asyncio_tasks_inherit(fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any) -> None:
    fake.json("/chat/completions", P.chat_completion())

    async def main() -> None:
        client = Api("async", fake)._client()
        async with attribution(tenant_id="t-async"):
            await asyncio.gather(*(asyncio.create_task(chat(client)) for _ in range(5)))

    asyncio.run(main())
    assert [who(s) for s in telemetry.finished()] == [{"tenant.id": "t-async"}] * 5


def test_threads_inherit_with_propagate_context(client: Any, telemetry: Telemetry) -> None:
    with attribution(tenant_id="t-thread", user_id="u-7"), ThreadPoolExecutor(4) as pool:
        list(pool.map(propagate_context(lambda _: chat(client)), range(8)))
    assert [who(s) for s in telemetry.finished()] == [{"tenant.id": "t-thread", "user.id": "u-7"}] * 8


def test_plain_thread_without_context_is_not_attributed(client: Any, telemetry: Telemetry) -> None:
    with attribution(tenant_id="t-x"):
        worker = threading.Thread(target=chat, args=(client,))
        worker.start()
        worker.join()
    # Python does not carry context into plain threads: documented; propagate_context fixes it.
    assert who(telemetry.only_span()) == {}


def test_baggage_then_scope_precedence(client: Any, telemetry: Telemetry) -> None:
    ctx = baggage.set_baggage("tenant.id", "from-baggage")
    ctx = baggage.set_baggage("llmledger.feature", "bag-feature", ctx)
    token = context.attach(ctx)
    try:
        chat(client)
        with attribution(tenant_id="from-scope"):
            chat(client)
    finally:
        context.detach(token)
    first, second = telemetry.finished()
    assert who(first) == {"tenant.id": "from-baggage", "llmledger.feature": "bag-feature"}
    assert who(second) == {"tenant.id": "from-scope", "llmledger.feature": "bag-feature"}


def test_resource_tenant_is_the_default(fake: FakeOpenAI) -> None:
    telemetry = make_telemetry(Resource.create({"tenant.id": "solo-tenant", "service.name": "svc"}))
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        fake.json("/chat/completions", P.chat_completion())
        client = Api("sync", fake)._client()
        chat(client)
        with attribution(tenant_id="override"):
            chat(client)
    finally:
        instrumentor.uninstrument()
    assert [who(s).get("tenant.id") for s in telemetry.finished()] == ["solo-tenant", "override"]


def test_baggage_from_an_incoming_http_request(
    fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any
) -> None:
    """A gateway sets baggage upstream; an instrumented server below attributes its LLM calls."""
    fake.json("/chat/completions", P.chat_completion())
    llm = Api("sync", fake)._client()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        chat(llm)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    wrapped = OpenTelemetryMiddleware(app, tracer_provider=telemetry.tracer_provider)
    server = make_server("127.0.0.1", 0, wrapped, handler_class=Quiet)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_port}/score",
            headers={
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "baggage": "tenant.id=acme,user.id=alice%40acme.io,llmledger.feature=lead_scoring",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == b"ok"
    finally:
        thread.join(10)
        server.server_close()
    llm_span = next(s for s in telemetry.finished() if s.name == "chat gpt-4o-mini")
    assert who(llm_span) == {
        "tenant.id": "acme",
        "user.id": "alice@acme.io",
        "llmledger.feature": "lead_scoring",
    }
    assert llm_span.context is not None
    assert format(llm_span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


def test_attribution_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match=r"attribution\(tenant_id=...\) must be a str, got int"):
        attribution(tenant_id=42)  # type: ignore[arg-type]


# --- fallbacks ------------------------------------------------------------------------------


def _flaky(fake: FakeOpenAI, failures: int) -> None:
    replies: list[Any] = [httpx2.Response(503, json=P.error_body("overloaded")) for _ in range(failures)]
    replies.append(httpx2.Response(200, json=P.chat_completion()))
    fake.replies["/chat/completions"] = replies


def _attempts(telemetry: Telemetry) -> list[tuple[str, bool, int]]:
    return [
        (
            str((s.attributes or {})["gen_ai.request.model"]),
            bool((s.attributes or {})["llmledger.fallback"]),
            cast(int, (s.attributes or {})["llmledger.fallback.attempt"]),
        )
        for s in telemetry.finished()
        if s.name.startswith("chat")
    ]


def _try_models(client: Any, models: list[str]) -> Any:
    for model in models:
        try:
            return chat(client, model)
        except openai.APIStatusError:
            continue
    raise RuntimeError("all models failed")


def test_explicit_fallback_scope(fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any) -> None:
    _flaky(fake, failures=2)
    client = Api("sync", fake)._client()
    with fallbacks():
        _try_models(client, ["gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"])
    assert _attempts(telemetry) == [
        ("gpt-4.1", False, 0),
        ("gpt-4.1-mini", True, 1),
        ("gpt-4o-mini", True, 2),
    ]
    # Each fallback names what it replaced: the model and the error of the attempt before it.
    assert _origins(telemetry) == [
        (None, None),
        ("gpt-4.1", "InternalServerError"),
        ("gpt-4.1-mini", "InternalServerError"),
    ]


def _origins(telemetry: Telemetry) -> list[tuple[Any, Any]]:
    return [
        (
            (s.attributes or {}).get("llmledger.fallback.from_model"),
            (s.attributes or {}).get("llmledger.fallback.from_error"),
        )
        for s in telemetry.finished()
        if s.name.startswith("chat")
    ]


def test_explicit_scope_async(fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any) -> None:
    _flaky(fake, failures=1)

    @fallbacks()
    async def answer() -> None:
        client = Api("async", fake)._client()
        for model in ("gpt-4.1", "gpt-4o-mini"):
            try:
                await chat(client, model)
                return
            except openai.APIStatusError:
                continue

    asyncio.run(answer())
    assert _attempts(telemetry) == [("gpt-4.1", False, 0), ("gpt-4o-mini", True, 1)]


def test_automatic_rule_within_a_parent_span(
    fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any
) -> None:
    _flaky(fake, failures=1)
    client = Api("sync", fake)._client()
    tracer = trace.get_tracer("app", tracer_provider=telemetry.tracer_provider)
    with tracer.start_as_current_span("handle_request"), attribution(feature="lead_scoring"):
        _try_models(client, ["gpt-4.1", "gpt-4o-mini"])
        chat(client, "gpt-4.1")  # a later, independent call after a success: not a fallback
    assert _attempts(telemetry) == [("gpt-4.1", False, 0), ("gpt-4o-mini", True, 1), ("gpt-4.1", False, 0)]
    assert _origins(telemetry) == [(None, None), ("gpt-4.1", "InternalServerError"), (None, None)]


def test_automatic_rule_other_feature_or_no_parent_is_not_fallback(
    fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any
) -> None:
    _flaky(fake, failures=1)
    client = Api("sync", fake)._client()
    tracer = trace.get_tracer("app", tracer_provider=telemetry.tracer_provider)
    with tracer.start_as_current_span("req"):
        with attribution(feature="a"), pytest.raises(openai.APIStatusError):
            chat(client, "gpt-4.1")
        with attribution(feature="b"):
            chat(client, "gpt-4o-mini")
    _flaky(fake, failures=1)
    with pytest.raises(openai.APIStatusError):
        chat(client, "gpt-4.1")  # no parent span: the rule does not apply
    chat(client, "gpt-4o-mini")
    assert [a[1] for a in _attempts(telemetry)] == [False, False, False, False]


def test_auto_rule_can_be_disabled(instrument: Any, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    instrument(auto_fallback=False)
    _flaky(fake, failures=1)
    client = Api("sync", fake)._client()
    with trace.get_tracer("app", tracer_provider=telemetry.tracer_provider).start_as_current_span("req"):
        _try_models(client, ["gpt-4.1", "gpt-4o-mini"])
    assert [a[1] for a in _attempts(telemetry)] == [False, False]


# --- per-request totals ---------------------------------------------------------------------


def test_totals_across_threads_and_tasks(fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any) -> None:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(100, 20, cached=40, reasoning=5)))
    sync_client = Api("sync", fake)._client()

    async def run_tasks() -> None:
        client = Api("async", fake)._client()
        await asyncio.gather(*(chat(client) for _ in range(10)))

    with usage_totals() as outer:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(propagate_context(lambda _: chat(sync_client)), range(20)))
        with usage_totals() as inner:
            asyncio.run(run_tasks())
    chat(sync_client)  # outside: counted by neither
    assert (outer.calls, outer.input_tokens, outer.output_tokens) == (30, 3000, 600)
    assert (outer.cached_input_tokens, outer.reasoning_tokens) == (1200, 150)
    assert inner.calls == 10
    spans = [s for s in telemetry.finished()][:30]
    costs = [Decimal(repr((s.attributes or {})["gen_ai.usage.cost"])) for s in spans]
    assert outer.cost_usd == sum(costs[:1]) * 30  # every call costs the same, summed exactly
    assert outer.unpriced_calls == 0
    shown = outer.as_dict()["cost_usd"]
    assert isinstance(shown, str)
    assert Decimal(shown) == outer.cost_usd
    assert "E" not in shown
    assert not shown.endswith("0")


def test_totals_count_errors_and_unpriced(fake: FakeOpenAI, telemetry: Telemetry, instrumented: Any) -> None:
    fake.replies["/chat/completions"] = [
        httpx2.Response(500, json=P.error_body("boom")),
        httpx2.Response(200, json=P.chat_completion(model="my-self-hosted-llm")),
    ]
    client = Api("sync", fake)._client()
    with usage_totals() as totals:
        with pytest.raises(openai.InternalServerError):
            chat(client)
        chat(client, "my-self-hosted-llm")
    assert (totals.calls, totals.errors, totals.unpriced_calls, totals.cost_usd) == (2, 1, 1, Decimal(0))
    assert totals.as_dict()["cost_usd"] is None  # unknown, not "0"


# --- console line -------------------------------------------------------------------------


def test_console_line_opt_in(instrument: Any, fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    fake.json("/chat/completions", P.chat_completion(usage=P.usage_chat(1200, 80, cached=1024, reasoning=16)))
    client = Api("sync", fake)._client()
    instrument()
    chat(client)
    assert "[llmledger]" not in capsys.readouterr().err  # off by default
    instrument(console=True)
    with attribution(tenant_id="acme"):
        chat(client)
    line = capsys.readouterr().err.strip()
    assert line.startswith(
        "[llmledger] chat gpt-4o-mini-2024-07-18 in=1200 (cached 1024) out=80 (reasoning 16) $"
    )
    assert line.endswith("tenant=acme")
    cost = Decimal(line.split("$", 1)[1].split()[0])
    from llmledger.instrumentation._internal.pricing import PriceBook
    from llmledger.instrumentation._internal.usage import TokenUsage

    expected = PriceBook.from_config().price_call(
        "openai",
        "gpt-4o-mini-2024-07-18",
        TokenUsage(input_tokens=1200, output_tokens=80, cached_input_tokens=1024, reasoning_tokens=16),
    )
    assert expected is not None
    assert cost == expected.total
