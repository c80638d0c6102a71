"""No call without its tokens: every stream the API left without usage gets estimated counts,
also while the tokenizer is still loading, and the console line, the metrics and
``usage_totals`` say what the span says."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import tiktoken

from llmledger.instrumentation import UsageTotals, usage_totals, wait_for_pending_calls
from llmledger.instrumentation._internal import call as call_module
from llmledger.instrumentation._internal import estimate
from llmledger.instrumentation._internal import finish as finish_module
from llmledger.instrumentation._internal import instrumentor as instrumentor_module
from llmledger.instrumentation._internal.estimate import TokenCounter

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris, and what time is it there?"},
]


def tokens(encoding: str, text: str) -> int:
    """tiktoken itself, independently of llmledger's counting."""
    return len(tiktoken.get_encoding(encoding).encode(text, disallowed_special=()))


def chat_input_tokens(messages: list[dict[str, str]], tools: Any = None) -> int:
    """The cookbook's count of a chat prompt (3 per message, 3 to prime the reply) plus the tools' JSON."""
    total = 3
    for message in messages:
        total += 3 + sum(tokens("o200k_base", value) for value in message.values())
    if tools:
        total += tokens("o200k_base", json.dumps(tools, separators=(",", ":")))
    return total


@dataclass(frozen=True)
class Case:
    """One stream shape: what the fake API streams, how the app asks, what the counts must be."""

    path: str
    events: list[dict[str, Any]]
    named: bool  # Responses names its SSE events
    request: Callable[[Any], Any]
    expected: Callable[[], tuple[int, int]]
    chunks: int


def _chat(calls: list[tuple[str, list[str]]], content_before: list[str] | None = None) -> Case:
    def expected() -> tuple[int, int]:
        output = tokens("o200k_base", "".join(content_before or []))
        for name, fragments in calls:
            output += tokens("o200k_base", name) + tokens("o200k_base", "".join(fragments))
        return chat_input_tokens(MESSAGES, TOOLS), output

    events = P.chat_tool_call_chunks(calls, content_before=content_before)
    return Case(
        "/chat/completions",
        events,
        False,
        lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, stream=True),
        expected,
        len(events),
    )


COMPLETION_PIECES = ["\n\nThis", " is", " indeed", " a test"]
RESPONSE_PIECES = ["Bonjour", " from", " Paris!"]
FUNCTION_CALLS = [("get_weather", ['{"city":', '"Paris"}']), ("get_time", ['{"tz":"Europe/', 'Paris"}'])]

CASES: dict[str, Case] = {
    "chat-tool-call": _chat([("get_weather", ['{"', "city", '":"', "Paris", '"}'])]),
    "chat-parallel-tool-calls": _chat(FUNCTION_CALLS),
    "chat-content-before-tool-call": _chat(
        [("get_weather", ['{"city":"Paris"}'])], content_before=["Let me ", "look that up."]
    ),
    "completions": Case(
        "/completions",
        P.completion_chunks(COMPLETION_PIECES, include_usage=False),
        False,
        lambda c: c.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", stream=True
        ),
        lambda: (
            tokens("cl100k_base", "Say this is a test"),
            tokens("cl100k_base", "".join(COMPLETION_PIECES)),
        ),
        len(COMPLETION_PIECES) + 1,
    ),
    "responses-cut-before-completed": Case(
        "/responses",
        P.response_events(RESPONSE_PIECES, completed=False),
        True,
        lambda c: c.responses.create(model="gpt-4.1", input="Greet me in French.", stream=True),
        lambda: (tokens("o200k_base", "Greet me in French."), tokens("o200k_base", "".join(RESPONSE_PIECES))),
        len(P.response_events(RESPONSE_PIECES, completed=False)),
    ),
    "responses-function-calls-cut": Case(
        "/responses",
        P.response_function_call_events(FUNCTION_CALLS),
        True,
        lambda c: c.responses.create(model="gpt-4.1", input="Weather and time in Paris?", stream=True),
        lambda: (
            tokens("o200k_base", "Weather and time in Paris?"),
            sum(tokens("o200k_base", n) + tokens("o200k_base", "".join(f)) for n, f in FUNCTION_CALLS),
        ),
        len(P.response_function_call_events(FUNCTION_CALLS)),
    ),
}


def assert_all_agree(
    telemetry: Telemetry, totals: UsageTotals, console: str
) -> tuple[int | None, int | None]:
    """Span, metrics, ``usage_totals`` and the console line tell the same story; the span's counts."""
    attrs = telemetry.only_span().attributes or {}
    inp, out = attrs.get("gen_ai.usage.input_tokens"), attrs.get("gen_ai.usage.output_tokens")
    assert isinstance(inp, int | None)
    assert isinstance(out, int | None)
    recorded = {
        p.attributes["gen_ai.token.type"]: p.sum for p in telemetry.metric_points("gen_ai.client.token.usage")
    }
    assert recorded == ({} if inp is None else {"input": inp, "output": out})
    assert len(telemetry.metric_points("gen_ai.client.operation.duration")) == 1
    snap = totals.snapshot()
    assert (snap.calls, snap.pending_calls) == (1, 0)
    assert (snap.input_tokens, snap.output_tokens) == (inp or 0, out or 0)
    assert snap.estimated_calls == (1 if attrs.get("llmledger.usage.estimated") else 0)
    [line] = [line for line in console.splitlines() if line.startswith("[llmledger]")]
    if inp is None:
        assert "tokens=?" in line
    else:
        assert f"in={inp} (cached 0) out={out} ~estimated" in line
    cost = attrs.get("gen_ai.usage.cost")
    if cost is None:
        assert snap.cost_usd == 0
        assert "$?" in line
    else:
        assert Decimal(repr(cost)) == snap.cost_usd
        assert f"${snap.cost_usd.normalize():f}" in line
    return inp, out


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stream_without_usage_gets_estimated_counts(
    case: Case,
    api: Api,
    fake: FakeOpenAI,
    telemetry: Telemetry,
    instrument: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    instrument(console=True)
    fake.stream(case.path, case.events, named=case.named)
    with usage_totals() as totals:
        items = api.stream(case.request)
    assert len(items) == case.chunks  # the app sees the stream as the API sent it
    assert wait_for_pending_calls(60)
    inp, out = assert_all_agree(telemetry, totals, capsys.readouterr().err)
    attrs = telemetry.only_span().attributes or {}
    assert attrs["llmledger.usage.estimated"] is True
    assert (inp, out) == case.expected()
    assert "gen_ai.usage.cost" in attrs  # estimated counts are priced like reported ones


# --- the tokenizer's warm-up ---------------------------------------------------------------


@pytest.fixture
def cold_counter(monkeypatch: pytest.MonkeyPatch) -> TokenCounter:
    """A process that has not loaded any encoding yet."""
    counter = TokenCounter()
    for module in (estimate, call_module, finish_module, instrumentor_module):
        monkeypatch.setattr(module, "TOKEN_COUNTER", counter)
    return counter


@dataclass
class Loader:
    """tiktoken's ``get_encoding``, held at a gate the test opens: slow, failing, or hung."""

    outcome: str  # "loads", "fails", "hangs"
    started: threading.Event
    gate: threading.Event

    def __call__(self, name: str) -> Any:
        self.started.set()
        self.gate.wait(60)
        if self.outcome == "loads":
            return _REAL_GET_ENCODING(name)
        raise OSError("tiktoken download failed: network unreachable")


_REAL_GET_ENCODING = tiktoken.get_encoding


@pytest.fixture
def loader(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, cold_counter: TokenCounter
) -> Iterator[Loader]:
    loader = Loader(getattr(request, "param", "loads"), threading.Event(), threading.Event())
    monkeypatch.setattr(tiktoken, "get_encoding", loader)
    yield loader
    loader.gate.set()  # never leave a loader thread parked


TOOL_CASE = CASES["chat-parallel-tool-calls"]


def test_first_call_is_held_until_the_encoder_is_ready(
    loader: Loader,
    api: Api,
    fake: FakeOpenAI,
    telemetry: Telemetry,
    instrument: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    instrument(console=True)
    assert loader.started.wait(10)  # installing the instrumentation started the load
    fake.stream(TOOL_CASE.path, TOOL_CASE.events)
    with usage_totals() as totals:
        items = api.stream(TOOL_CASE.request)
    iteration_done_ns = time.time_ns()
    # The app read every chunk while the encoder was still loading: nothing waited for it.
    assert len(items) == TOOL_CASE.chunks
    assert not loader.gate.is_set()
    assert telemetry.finished() == []  # held, not recorded without counts
    assert (totals.snapshot().pending_calls, totals.snapshot().calls) == (1, 0)
    assert totals.as_dict()["pending_calls"] == 1
    # The provider's flush waits for held calls: not done while the encoder still loads...
    assert telemetry.tracer_provider.force_flush(timeout_millis=1) is False

    loader.gate.set()
    assert telemetry.tracer_provider.force_flush(timeout_millis=60_000) is True  # ...done once it is ready
    span = telemetry.only_span()
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time < span.end_time <= iteration_done_ns  # the call's own end, not the load's
    assert assert_all_agree(telemetry, totals, capsys.readouterr().err) == TOOL_CASE.expected()
    assert not telemetry.metric_points("llmledger.client.unestimated_calls")


@pytest.mark.parametrize("loader", ["fails", "hangs"], indirect=True)
def test_held_call_ends_without_counts_when_the_encoder_never_comes(
    loader: Loader,
    api: Api,
    fake: FakeOpenAI,
    telemetry: Telemetry,
    instrument: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "fails": the load raises after the call ended; "hangs": it outlasts the call's time limit.
    instrument(console=True, estimate_wait_s=0.05 if loader.outcome == "hangs" else 60.0)
    fake.stream(TOOL_CASE.path, TOOL_CASE.events)
    with usage_totals() as totals:
        items = api.stream(TOOL_CASE.request)
    iteration_done_ns = time.time_ns()
    assert len(items) == TOOL_CASE.chunks
    assert telemetry.finished() == []
    if loader.outcome == "fails":
        loader.gate.set()
    assert wait_for_pending_calls(60)
    span = telemetry.only_span()
    assert span.end_time is not None
    assert span.end_time <= iteration_done_ns
    attrs = span.attributes or {}
    assert "llmledger.usage.estimated" not in attrs
    assert "gen_ai.usage.output_tokens" not in attrs
    assert assert_all_agree(telemetry, totals, capsys.readouterr().err) == (None, None)
    [point] = telemetry.metric_points("llmledger.client.unestimated_calls")
    assert point.value == 1
    assert point.attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_no_load_and_no_hold_without_estimation(
    loader: Loader, api: Api, fake: FakeOpenAI, telemetry: Telemetry, instrument: Any
) -> None:
    instrument(estimate_tokens=False)
    fake.stream(TOOL_CASE.path, TOOL_CASE.events)
    api.stream(TOOL_CASE.request)
    span = telemetry.only_span()  # ended with the stream: nothing to wait for
    assert "gen_ai.usage.input_tokens" not in (span.attributes or {})
    assert not loader.started.is_set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_encoder_loads_loads_it_itself(
    loader: Loader, cold_counter: TokenCounter
) -> None:
    """``gunicorn --preload`` forks workers right after the app (and llmledger) started."""
    cold_counter.preload("o200k_base")
    assert loader.started.wait(10)  # the parent's load is under way (parked at the gate)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own load must start, and finish once the gate opens
        loader.gate.set()
        ok = cold_counter.wait_ready("o200k_base", 60)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
