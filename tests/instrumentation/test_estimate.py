"""Local token counts when the API reports none; never waiting on tiktoken's downloads."""

from __future__ import annotations

import json

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


def test_chat_content_parts_count_their_text() -> None:
    counter = TokenCounter()
    assert counter.wait_ready("o200k_base", timeout=30)
    enc = tiktoken.get_encoding("o200k_base")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "text", "text": " this image?"},
            ],
        }
    ]
    # The parts' text as one string; the image adds nothing the count could know.
    expected = 3 + len(enc.encode("user")) + len(enc.encode("What is in this image?")) + 3
    assert counter.count_chat_input("gpt-4o", messages) == expected


def test_an_assistant_tool_call_counts_its_json() -> None:
    counter = TokenCounter()
    assert counter.wait_ready("o200k_base", timeout=30)
    enc = tiktoken.get_encoding("o200k_base")
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"},
    ]
    # The calls are in the prompt as JSON (they carry no "text" part, so reading them as
    # content parts counted nothing); the tool's answer as text.
    expected = (
        3
        + len(enc.encode("assistant"))
        + len(enc.encode(json.dumps([call], separators=(",", ":"))))
        + 3
        + len(enc.encode("tool"))
        + len(enc.encode("call_1"))
        + len(enc.encode("4 degrees"))
        + 3
    )
    assert counter.count_chat_input("gpt-4o", messages) == expected


@pytest.mark.usefixtures("instrumented")
def test_responses_list_input_without_usage_counts_each_text(
    api: Api, fake: FakeOpenAI, telemetry: Telemetry
) -> None:
    assert estimate.TOKEN_COUNTER.wait_ready("o200k_base", timeout=30)
    body = P.response(text="Un chat sur un canapé.")
    body["usage"] = None
    fake.json("/responses", body)
    api.call(
        lambda c: c.responses.create(
            model="gpt-4.1",
            instructions="Be brief.",
            input=[
                {"role": "user", "content": "Hello"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Describe"},
                        {"type": "input_image", "image_url": "https://example.com/cat.png"},
                        {"type": "input_text", "text": "this picture"},
                    ],
                },
            ],
        )
    )
    attrs = telemetry.only_span().attributes or {}
    enc = tiktoken.get_encoding("o200k_base")
    assert attrs["llmledger.usage.estimated"] is True
    # Instructions, then every text of the input, one per line.
    assert attrs["gen_ai.usage.input_tokens"] == len(enc.encode("Be brief.\nHello\nDescribe\nthis picture"))
    assert attrs["gen_ai.usage.output_tokens"] == len(enc.encode("Un chat sur un canapé."))
