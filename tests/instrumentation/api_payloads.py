"""Response bodies shaped exactly like OpenAI's API (each is validated against the SDK's types).

Builders return plain JSON-able dicts — what travels on the wire — so the real SDK parses
them through its real HTTP path.
"""

from __future__ import annotations

import json
from typing import Any

CREATED = 1_764_000_000


def usage_chat(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0, audio_in: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    content: str | None = "Hello! How can I help?",
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
    service_tier: str | None = "default",
    n: int = 1,
    id: str = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason}
            for i in range(n)
        ],
        "usage": usage if usage is not None else usage_chat(19, 10),
        "service_tier": service_tier,
        "system_fingerprint": "fp_44709d6fcb",
    }


def tool_call(name: str = "get_weather", arguments: str = '{"city":"Paris"}') -> dict[str, Any]:
    return {"id": "call_abc123", "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_chunks(
    pieces: list[str],
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    usage: dict[str, Any] | None = None,
    include_usage: bool = True,
    finish_reason: str = "stop",
) -> list[dict[str, Any]]:
    """The chunks of a streamed chat completion; with ``include_usage`` every chunk carries
    ``usage: null`` and a final chunk with empty ``choices`` carries the usage, as the API does."""
    base = {
        "id": "chatcmpl-stream-1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_44709d6fcb",
    }
    chunks: list[dict[str, Any]] = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
    ]
    for piece in pieces:
        chunks.append(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
                ],
            }
        )
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}]}
    )
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append(
            {**base, "choices": [], "usage": usage if usage is not None else usage_chat(12, len(pieces))}
        )
    return chunks


def chat_tool_call_chunks(
    calls: list[tuple[str, list[str]]],
    *,
    content_before: list[str] | None = None,
    model: str = "gpt-4o-mini-2024-07-18",
) -> list[dict[str, Any]]:
    """A streamed chat completion whose answer is tool calls, without a usage chunk: each
    call opens with its id, type and name (arguments ``""``), then its arguments arrive in
    fragments; parallel calls follow one another by ``index``, as the API streams them.
    With ``content_before``, text deltas come first (the model says something, then calls)."""
    base = {
        "id": "chatcmpl-stream-tools",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_44709d6fcb",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    chunks: list[dict[str, Any]] = []
    if content_before:
        chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        chunks += [chunk({"content": piece}) for piece in content_before]
    for index, (name, fragments) in enumerate(calls):
        opening: dict[str, Any] = {
            "tool_calls": [
                {
                    "index": index,
                    "id": f"call_{index}Xh2uLGmqKdFQeZ8wH3Tb",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
        if not chunks:
            opening = {"role": "assistant", "content": None, **opening, "refusal": None}
        chunks.append(chunk(opening))
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            for fragment in fragments
        ]
    chunks.append(chunk({}, "tool_calls"))
    return chunks


def completion(
    *,
    model: str = "gpt-3.5-turbo-instruct",
    text: str = "\n\nThis is a test.",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "length"}],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def completion_chunks(
    pieces: list[str], *, model: str = "gpt-3.5-turbo-instruct", include_usage: bool = True
) -> list[dict[str, Any]]:
    base = {"id": "cmpl-stream-1", "object": "text_completion", "created": CREATED, "model": model}
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"text": p, "index": 0, "logprobs": None, "finish_reason": None}]}
        for p in pieces
    ]
    chunks.append({**base, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]})
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 4,
                    "completion_tokens": len(pieces),
                    "total_tokens": 4 + len(pieces),
                },
            }
        )
    return chunks


def embedding(*, model: str = "text-embedding-3-small", n: int = 1, prompt_tokens: int = 8) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.0023064255, -0.009327292, 0.015797347]}
            for i in range(n)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def response_usage(inp: int, out: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


def response(
    *,
    model: str = "gpt-4.1-2025-04-14",
    text: str = "In a peaceful grove beneath a silver moon...",
    status: str = "completed",
    usage: dict[str, Any] | None = None,
    id: str = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    background: bool = False,
    service_tier: str = "default",
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if status == "completed":
        output = [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
            }
        ]
    return {
        "id": id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": background,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": service_tier,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": (usage if usage is not None else response_usage(36, 87)) if status == "completed" else None,
        "user": None,
        "metadata": {},
    }


def response_function_call_events(
    calls: list[tuple[str, list[str]]], *, model: str = "gpt-4.1-2025-04-14"
) -> list[dict[str, Any]]:
    """A streamed Responses answer made of function calls, cut off before ``response.completed``
    (a dropped connection, a proxy that ends the stream early): no usage ever arrives."""
    in_progress = response(model=model, status="in_progress")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": in_progress},
        {"type": "response.in_progress", "sequence_number": 1, "response": in_progress},
    ]
    seq = 2
    for index, (name, fragments) in enumerate(calls):
        item_id = f"fc_67ccd3acc8d48190a77525dc6de64b4{index}"
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": f"call_{index}Xh2uLGmqKdFQeZ8wH3Tb",
            "name": name,
        }
        events.append(
            {
                "type": "response.output_item.added",
                "sequence_number": seq,
                "output_index": index,
                "item": item,
            }
        )
        seq += 1
        for fragment in fragments:
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    "sequence_number": seq,
                    "item_id": item_id,
                    "output_index": index,
                    "delta": fragment,
                }
            )
            seq += 1
        arguments = "".join(fragments)
        events.append(
            {
                "type": "response.function_call_arguments.done",
                "sequence_number": seq,
                "item_id": item_id,
                "output_index": index,
                "arguments": arguments,
            }
        )
        events.append(
            {
                "type": "response.output_item.done",
                "sequence_number": seq + 1,
                "output_index": index,
                "item": {**item, "status": "completed", "arguments": arguments},
            }
        )
        seq += 2
    return events


def response_events(
    pieces: list[str],
    *,
    usage: dict[str, Any] | None = None,
    model: str = "gpt-4.1-2025-04-14",
    completed: bool = True,
) -> list[dict[str, Any]]:
    """A streamed Responses answer; without ``completed`` it is cut off before its last event."""
    text = "".join(pieces)
    in_progress = response(model=model, status="in_progress")
    done = response(model=model, text=text, usage=usage)
    item_id = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": in_progress},
        {"type": "response.in_progress", "sequence_number": 1, "response": in_progress},
        {
            "type": "response.output_item.added",
            "sequence_number": 2,
            "output_index": 0,
            "item": {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
        {
            "type": "response.content_part.added",
            "sequence_number": 3,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        },
    ]
    seq = 4
    for piece in pieces:
        events.append(
            {
                "type": "response.output_text.delta",
                "sequence_number": seq,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
        )
        seq += 1
    events += [
        {
            "type": "response.output_text.done",
            "sequence_number": seq,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        },
        {
            "type": "response.content_part.done",
            "sequence_number": seq + 1,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []},
        },
        {
            "type": "response.output_item.done",
            "sequence_number": seq + 2,
            "output_index": 0,
            "item": done["output"][0],
        },
    ]
    if completed:
        events.append({"type": "response.completed", "sequence_number": seq + 3, "response": done})
    return events


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def sse(events: list[dict[str, Any]], *, done_marker: bool = True, named: bool = False) -> bytes:
    """Server-sent events as the API writes them (Responses names each event; chat does not)."""
    out = bytearray()
    for event in events:
        if named:
            out += f"event: {event['type']}\n".encode()
        out += b"data: " + json.dumps(event).encode() + b"\n\n"
    if done_marker:
        out += b"data: [DONE]\n\n"
    return bytes(out)
