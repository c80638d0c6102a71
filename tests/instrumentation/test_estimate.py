"""Local token counts when the API reports none; never waiting on tiktoken's downloads."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import tiktoken

from llmledger.instrumentation._internal import estimate
from llmledger.instrumentation._internal.estimate import TokenCounter, encoding_name_for

from . import api_payloads as P
from .conftest import Api, FakeOpenAI, Telemetry


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-2025-04-14", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),  # Azure spelling tiktoken lacks
        ("text-embedding-3-small", "cl100k_base"),
        ("my-azure-deployment", "o200k_base"),
        (None, "o200k_base"),
    ],
)
def test_encoding_choice(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_chat_input_count_matches_cookbook_formula() -> None:
    counter = TokenCounter()
    assert counter.wait_ready("o200k_base", timeout=30)
    enc = tiktoken.get_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there", "name": "bob"},
    ]
    expected = 3 + len(enc.encode("system")) + len(enc.encode("Be brief."))
    expected += 3 + len(enc.encode("user")) + len(enc.encode("Hello there")) + len(enc.encode("bob")) + 1
    expected += 3
    assert counter.count_chat_input("gpt-4o", messages) == expected


@pytest.mark.usefixtures("instrumented")
def test_non_stream_without_usage_is_estimated(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    assert estimate.TOKEN_COUNTER.wait_ready("o200k_base", timeout=30)
    body = P.chat_completion(content="Hi there, friend")
    del body["usage"]
    fake.json("/chat/completions", body)
    api.call(
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
    )
    attrs = telemetry.only_span().attributes or {}
    enc = tiktoken.get_encoding("o200k_base")
    assert attrs["llmledger.usage.estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 3 + len(enc.encode("user")) + len(enc.encode("Hello")) + 3
    # Non-stream output text is read from the response when usage is missing.
    assert attrs["gen_ai.usage.output_tokens"] == len(enc.encode("Hi there, friend"))


@pytest.mark.usefixtures("instrumented")
def test_embeddings_without_usage_estimated(api: Api, fake: FakeOpenAI, telemetry: Telemetry) -> None:
    assert estimate.TOKEN_COUNTER.wait_ready("cl100k_base", timeout=30)
    body = P.embedding()
    del body["usage"]
    fake.json("/embeddings", body)
    api.call(lambda c: c.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"]))
    attrs = telemetry.only_span().attributes or {}
    enc = tiktoken.get_encoding("cl100k_base")
    assert attrs["gen_ai.usage.input_tokens"] == len(enc.encode("hello world")) + len(enc.encode("bye"))
    assert attrs["llmledger.usage.estimated"] is True


def test_requests_never_wait_for_a_hung_download(
    monkeypatch: pytest.MonkeyPatch,
    instrument: Any,
    fake: FakeOpenAI,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    started = threading.Event()

    def hung_download(name: str) -> Any:
        started.set()
        release.wait(30)  # a download with no timeout, stuck
        raise OSError("network unreachable")

    counter = TokenCounter()
    monkeypatch.setattr(estimate, "TOKEN_COUNTER", counter)
    monkeypatch.setattr("llmledger.instrumentation._internal.call.TOKEN_COUNTER", counter)
    monkeypatch.setattr(tiktoken, "get_encoding", hung_download)
    instrument(estimate_tokens=True)
    fake.stream("/chat/completions", P.chat_chunks(["a", "b"], include_usage=False))
    try:
        with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
            for _ in range(2):
                chunks = Api("sync", fake).stream(
                    lambda c: c.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": "x"}],
                        stream=True,
                        stream_options={"include_obfuscation": False},
                    )
                )
                assert len(chunks) == 4
        assert started.wait(5)
        assert not release.is_set()  # both calls finished while the download was still hanging
        spans = telemetry.finished()
        assert len(spans) == 2
        for span in spans:
            attrs = span.attributes or {}
            assert "gen_ai.usage.input_tokens" not in attrs
            assert "llmledger.usage.estimated" not in attrs
        assert caplog.text.count("token estimation for gpt-4o-mini-2024-07-18 is not ready yet") == 1
    finally:
        release.set()
