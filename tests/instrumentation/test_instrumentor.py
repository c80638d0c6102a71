"""Lifecycle: entry point, instrument/uninstrument, double wrapping, suppression, sampling, content capture."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import pytest
import wrapt
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from llmledger.instrumentation import LLMLedgerInstrumentor
from llmledger.instrumentation._internal import instrumentor as instrumentor_module
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation._internal.instrumentor import TARGETS
from llmledger.instrumentation.package import _instruments

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

MESSAGES = [{"role": "user", "content": "hi"}]


def _originals() -> dict[tuple[str, str, str], Any]:
    out: dict[tuple[str, str, str], Any] = {}
    for t in TARGETS:
        cls = getattr(importlib.import_module(t.module), t.cls)
        out[(t.module, t.cls, t.method)] = cls.__dict__[t.method]
    return out


def test_entry_point_registered() -> None:
    (ep,) = [
        e
        for e in importlib.metadata.entry_points(group="opentelemetry_instrumentor")
        if e.name == "llmledger"
    ]
    assert ep.load() is LLMLedgerInstrumentor


def test_instruments_range_matches_extra() -> None:
    from packaging.requirements import Requirement

    requires = [Requirement(r) for r in importlib.metadata.requires("llmledger-instrumentation") or []]
    extra = [
        (r.name, r.specifier) for r in requires if r.marker and r.marker.evaluate({"extra": "instruments"})
    ]
    assert extra == [(Requirement(i).name, Requirement(i).specifier) for i in _instruments]
    assert LLMLedgerInstrumentor().instrumentation_dependencies() == _instruments


def test_uninstrument_restores_every_original(telemetry: Telemetry) -> None:
    before = _originals()
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    during = _originals()
    assert all(isinstance(during[k], wrapt.FunctionWrapper) for k in during)
    instrumentor.uninstrument()
    assert _originals() == before


def test_instrument_twice_one_span(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    instrumentor = LLMLedgerInstrumentor()
    kwargs: dict[str, Any] = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    instrumentor.instrument(**kwargs)
    instrumentor.instrument(**kwargs)  # no-op: BaseInstrumentor guards it
    try:
        fake.json("/chat/completions", P.chat_completion())
        Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        assert len(telemetry.finished()) == 1
    finally:
        instrumentor.uninstrument()


def test_captured_raw_wrapper_is_inert_after_uninstrument(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    client = Api("sync", fake)._client()
    raw = client.chat.completions.with_raw_response  # binds the wrapped method now
    instrumentor.uninstrument()
    fake.json("/chat/completions", P.chat_completion())
    raw.create(model="gpt-4o-mini", messages=MESSAGES).parse()
    assert telemetry.finished() == []


def test_other_instrumentation_on_same_methods(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    """Another instrumentation wrapping the same methods (before or after us) gets its span; we get ours."""
    other = trace.get_tracer("other", tracer_provider=telemetry.tracer_provider)

    def other_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with other.start_as_current_span("other chat"):
            return wrapped(*args, **kwargs)

    from openai.resources.chat.completions import Completions
    from opentelemetry.instrumentation.utils import unwrap

    cls = Completions
    wrapt.wrap_function_wrapper(cls, "create", other_wrapper)
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        fake.json("/chat/completions", P.chat_completion())
        Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        names = sorted(s.name for s in telemetry.finished())
        assert names == ["chat gpt-4o-mini", "other chat"]
    finally:
        instrumentor.uninstrument()
        unwrap(cls, "create")
    assert not isinstance(cls.__dict__["create"], wrapt.FunctionWrapper)


@pytest.mark.usefixtures("instrumented")
def test_suppressed_instrumentation_makes_no_span(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    fake.json("/chat/completions", P.chat_completion())
    with suppress_instrumentation():
        Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert telemetry.finished() == []


def test_unsampled_calls_work_and_record_nothing(fake: FakeOpenAI) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        fake.stream("/chat/completions", P.chat_chunks(["a", "b"]))
        chunks = Api("sync", fake).stream(
            lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        )
        assert len(chunks) == 4
        assert exporter.get_finished_spans() == ()
    finally:
        instrumentor.uninstrument()


def test_instrument_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("LLMLEDGER_RAISE_INTERNAL_ERRORS", "0")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("meter exploded")

    monkeypatch.setattr(instrumentor_module, "Telemetry", broken)
    instrumentor = LLMLedgerInstrumentor()
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        instrumentor.instrument()  # must not raise
    instrumentor.uninstrument()
    assert "internal error in instrument" in caplog.text


def test_internal_error_contained_app_unaffected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    """A bug of ours while reading the response: the app still gets its result; logged once."""
    monkeypatch.setenv("LLMLEDGER_RAISE_INTERNAL_ERRORS", "0")
    from llmledger.instrumentation._internal import apis, errors

    errors.reset_internal_error_counts()

    def broken(self: Any, facts: Any, response: Any, capture: bool) -> None:
        raise KeyError("shape changed")

    monkeypatch.setattr(apis.ChatCompletionsSpec, "apply_response", broken)
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        fake.json("/chat/completions", P.chat_completion())
        with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
            for _ in range(3):
                result = Api("sync", fake).call(
                    lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                )
                assert result.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
        assert caplog.text.count("internal error in chat_completions.response") == 1
        assert errors.internal_error_counts()["chat_completions.response"] == 3
        assert len(telemetry.finished()) == 3
        assert all(s.status.is_ok for s in telemetry.finished())
    finally:
        instrumentor.uninstrument()


def test_wrong_price_never_stops_a_request(
    monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    monkeypatch.setenv("LLMLEDGER_RAISE_INTERNAL_ERRORS", "0")

    class ExplodingPrices:
        def price_call(self, *args: Any, **kwargs: Any) -> None:
            raise ArithmeticError("bad price row")

    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        pricer=ExplodingPrices(),
    )
    try:
        fake.json("/chat/completions", P.chat_completion())
        Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        attrs = telemetry.only_span().attributes or {}
        assert attrs["gen_ai.usage.input_tokens"] == 19
        assert "gen_ai.usage.cost" not in attrs
    finally:
        instrumentor.uninstrument()


def test_a_bad_price_file_is_refused_as_a_whole(
    instrument: Any, fake: FakeOpenAI, telemetry: Telemetry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from llmledger.instrumentation.pricing import PriceFileError, load_price_file, refused_price_file

    bad = tmp_path / "prices.toml"
    # A good entry for the model called, then a typo: nothing of the file is used.
    bad.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o-mini"\ninput = 0.3\noutput = 1.2\n\n'
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\ninptu = 1\noutput = 4\n'
    )
    with pytest.raises(PriceFileError) as refused:
        load_price_file(bad)
    with caplog.at_level(logging.ERROR, logger="llmledger.instrumentation"):
        instrument(price_file=str(bad))
    # The message `llmledger prices sync` prints for the same file (tests/exporter/test_prices_cli.py).
    assert [r.getMessage() for r in caplog.records] == [
        refused_price_file(refused.value) + " (calls will not be priced)"
    ]
    fake.json("/chat/completions", P.chat_completion())
    Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 19
    assert "gen_ai.usage.cost" not in attrs  # neither the file's price nor genai-prices' list price


def test_content_capture_opt_in(instrument: Any, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    instrument(capture_content=True)
    fake.json("/chat/completions", P.chat_completion(content="Bonjour"))
    Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    attrs = telemetry.only_span().attributes or {}
    assert attrs["gen_ai.input.messages"] == '[{"role":"user","content":"hi"}]'
    assert '"content":"Bonjour"' in str(attrs["gen_ai.output.messages"])


def test_config_from_env_reports_every_problem(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        config = InstrumentationConfig.from_env(
            {
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "maybe",
                "LLMLEDGER_STREAM_USAGE": "false",
                "LLMLEDGER_AZURE_DEPLOYMENTS": "prod=gpt-4o, broken",
            }
        )
    assert config.capture_content is False
    assert config.stream_usage is False
    assert dict(config.azure_deployments) == {"prod": "gpt-4o"}
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT='maybe'" in caplog.text
    assert "'broken' is not deployment=model" in caplog.text


def test_azure_deployments_read_by_the_public_api_as_the_app_reads_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``llmledger prices sync`` maps deployments through this; it must agree with the app's config."""
    from llmledger.instrumentation.pricing import azure_deployments_from_env

    env = {
        "LLMLEDGER_AZURE_DEPLOYMENTS": " prod = gpt-4o ,broken,, mini=gpt-4o-mini",
        "LLMLEDGER_CONSOLE": "maybe",
    }
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        deployments = azure_deployments_from_env(env)
    assert deployments == {"prod": "gpt-4o", "mini": "gpt-4o-mini"}
    # Only its own setting is reported: the CLI has no business with the app's console flag.
    assert [r.getMessage() for r in caplog.records] == [
        "llmledger: ignoring invalid settings: LLMLEDGER_AZURE_DEPLOYMENTS: 'broken' is not deployment=model"
    ]
    assert deployments == dict(InstrumentationConfig.from_env(env).azure_deployments)


def test_settings_given_in_code_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeOpenAI,
    telemetry: Telemetry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LLMLEDGER_CONSOLE", "false")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, console=True
    )
    try:
        fake.json("/chat/completions", P.chat_completion())
        Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    finally:
        instrumentor.uninstrument()
    assert capsys.readouterr().err.startswith("[llmledger] chat gpt-4o-mini")  # the argument's
    assert "gen_ai.input.messages" in (telemetry.only_span().attributes or {})  # the environment's


def test_a_config_object_takes_named_settings_on_top() -> None:
    env = {"LLMLEDGER_STREAM_USAGE": "false", "LLMLEDGER_CONSOLE": "true"}
    config = InstrumentationConfig.from_env(env, console=False, estimate_wait_s=2.0)
    assert (config.stream_usage, config.console, config.estimate_wait_s) == (False, False, 2.0)
    assert InstrumentationConfig.from_env({}) == InstrumentationConfig()  # the defaults, in one place
    with pytest.raises(TypeError):
        InstrumentationConfig.from_env({}, no_such_setting=True)


def test_the_public_config_is_the_one_instrument_reads() -> None:
    import llmledger.instrumentation as public

    assert public.InstrumentationConfig is InstrumentationConfig


@pytest.mark.usefixtures("instrumented")
def test_span_is_current_during_the_http_call(fake: FakeOpenAI, telemetry: Telemetry) -> None:
    seen: list[str] = []

    def reply(request: Any) -> Any:
        import httpx2

        span = trace.get_current_span()
        seen.append(getattr(span, "name", "?"))
        return httpx2.Response(200, json=P.chat_completion())

    fake.reply("/chat/completions", reply)
    Api("sync", fake).call(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert seen == ["chat gpt-4o-mini"]
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert context.get_current() is not None
