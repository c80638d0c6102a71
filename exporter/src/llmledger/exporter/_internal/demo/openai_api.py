"""What the demo's OpenAI-compatible server answers: request body in, response body or stream events out.

Pure functions, no I/O: :mod:`.server` carries them over HTTP. Every body and event has the
shape OpenAI's API gives it (the tests validate each against the ``openai`` SDK's own types),
so the SDK's helpers — ``parse``, ``client.chat.completions.stream()``,
``client.responses.stream()`` — work against the stand-in as against the API.

The text is canned and the token counts are a pure function of the request, so every run
bills the same. Structured outputs (``response_format`` / ``text.format`` with a JSON schema)
get a made-up instance of the schema; offered function tools are called once (arguments made
up from the tool's schema), then answered in text once a tool result comes back.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "CREATED",
    "ApiError",
    "chat_chunks",
    "chat_completion",
    "completion",
    "completion_chunks",
    "embeddings",
    "response",
    "response_events",
]

CREATED = 1_764_000_000
# Models that reason: their answers carry reasoning tokens (and a reasoning item on Responses).
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_EMBEDDING_DIMENSIONS = 1536
_REPLIES = (
    "Score 82: strong fit, recent funding and an active buying committee.",
    "Here is a short summary of the conversation and the customer's next steps.",
    "Thanks for reaching out! I have reset the integration token; please retry the sync.",
    "The account looks healthy; renewal risk is low given weekly active usage.",
)


class ApiError(Exception):
    """A request the API would refuse: :attr:`status` and the API's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"message": message, "type": kind, "param": param, "code": code}
        }


def digest(value: Any) -> int:
    """A stable number for a JSON value: ids, canned replies and injected failures derive from it."""
    raw = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")


_ANSWER_SERIAL = itertools.count(1)


def _answer_seed(request: Mapping[str, Any]) -> int:
    """What picks the answer and its id: the request without its streaming options, so a
    streamed call answers exactly what the same call unstreamed does."""
    return digest({k: v for k, v in request.items() if k not in ("stream", "stream_options")})


def tokens(value: Any) -> int:
    """A stable stand-in for a tokenizer: about 4/3 tokens per word, at least 1."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return max(1, (len(text.split()) * 4 + 2) // 3)


def _reasons(model: str) -> bool:
    return model.startswith(_REASONING_PREFIXES)


def _pieces(text: str) -> list[str]:
    """Stream deltas: word by word, spaces kept, so the pieces join back to ``text``."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


# --- request checks ----------------------------------------------------------------------


def require_model(request: Mapping[str, Any]) -> str:
    model = request.get("model")
    if model is None:
        raise ApiError(
            400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, "Invalid type for 'model': expected a string.", param="model", code="invalid_type"
        )
    return model


def _require_list(request: Mapping[str, Any], name: str) -> list[Any]:
    value = request.get(name)
    if value is None:
        raise ApiError(
            400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"Invalid '{name}': expected a non-empty array.", param=name, code="invalid_type")
    return cast(list[Any], value)


def _count(request: Mapping[str, Any], name: str) -> int:
    value = request.get(name, 1)
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 128:
        raise ApiError(
            400,
            f"Invalid '{name}': expected an integer from 1 to 128.",
            param=name,
            code="integer_out_of_range",
        )
    return value


def _object(value: Any) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any] | None:
    return cast(list[Any], value) if isinstance(value, list) else None


def _include_usage(request: Mapping[str, Any]) -> bool:
    return bool(_object(request.get("stream_options")).get("include_usage"))


def _obfuscated(request: Mapping[str, Any]) -> bool:
    # The API pads every chat chunk with an `obfuscation` string unless asked not to.
    return _object(request.get("stream_options")).get("include_obfuscation") is not False


# --- made-up values for JSON schemas -----------------------------------------------------

_NAMED_STRINGS = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "company": "Analytical Engines",
    "city": "London",
    "country": "United Kingdom",
    "title": "Sales Lead",
    "url": "https://example.com",
    "phone": "+44 20 7946 0958",
    "summary": _REPLIES[1],
}
_FORMATTED_STRINGS = {
    "email": "ada@example.com",
    "date-time": "2025-11-24T16:00:00Z",
    "date": "2025-11-24",
    "time": "16:00:00",
    "uri": "https://example.com",
    "uuid": "8c5e0e4a-4b8e-4f3e-9f0e-0d7a4c3b2a10",
}


def schema_instance(
    schema: Any, *, name: str = "", defs: Mapping[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value valid for a JSON schema of the kind structured outputs accept (objects, arrays,
    scalars, enums, ``anyOf``, ``$ref``), deterministic and readable."""
    node = _object(schema)
    defs = {**(defs or {}), **_object(node.get("$defs")), **_object(node.get("definitions"))}
    if depth > 8:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str):
        return schema_instance(defs.get(ref.rsplit("/", 1)[-1], {}), name=name, defs=defs, depth=depth + 1)
    if "const" in node:
        return node["const"]
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        return cast(list[Any], enum)[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = node.get(combinator)
        if isinstance(options, list) and options:
            # The first option that is not null: a value says more than a null does.
            choices = cast(list[Any], options)
            chosen = next((o for o in choices if _object(o).get("type") != "null"), choices[0])
            return schema_instance(chosen, name=name, defs=defs, depth=depth + 1)
    kind: Any = node.get("type")
    if isinstance(kind, list):
        kinds = [str(k) for k in cast(list[Any], kind)]
        kind = next((k for k in kinds if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in node):
        properties = _object(node.get("properties"))
        return {
            key: schema_instance(value, name=key, defs=defs, depth=depth + 1)
            for key, value in properties.items()
        }
    if kind == "array":
        items = [
            schema_instance(node.get("items", {}), name=name, defs=defs, depth=depth + 1)
            for _ in range(max(1, int(node.get("minItems", 1))))
        ]
        return items
    if kind in ("integer", "number"):
        return _number_in(node, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATTED_STRINGS:
        return _FORMATTED_STRINGS[fmt]
    return _NAMED_STRINGS.get(name.lower(), f"sample {name}" if name else "sample text")


def _number_in(node: Mapping[str, Any], *, integer: bool) -> int | float:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    value: float = 42 if integer else 0.5
    if isinstance(low, int | float) and value <= low:
        value = low + (1 if "minimum" not in node else 0)
    if isinstance(high, int | float) and value >= high:
        value = high - (1 if "maximum" not in node else 0)
    return int(value) if integer else float(value)


# --- what the model "says" ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ToolCall:
    call_id: str
    name: str
    arguments: str


def _reply_text(request: Mapping[str, Any], *, seed: int = 0) -> str:
    return _REPLIES[(_answer_seed(request) + seed) % len(_REPLIES)]


def _tool_call(request: Mapping[str, Any], tools: Sequence[Any], *, responses_api: bool) -> _ToolCall | None:
    """The function tool the model calls, if it calls one: the one ``tool_choice`` names, else
    the first offered, unless the conversation already ends with a tool result."""
    functions = [_object(t) for t in tools if _object(t).get("type") == "function"]
    choice: Any = request.get("tool_choice", "auto")
    if not functions or choice == "none":
        return None
    chosen = functions[0]
    named = _object(choice)
    if named:
        wanted = _object(named.get("function")).get("name") or named.get("name")
        chosen = next((f for f in functions if _function_name(f) == wanted), chosen)
    elif choice != "required" and _answers_a_tool(request):
        return None
    spec = chosen if responses_api else _object(chosen.get("function"))
    arguments = schema_instance(spec.get("parameters") or {"type": "object", "properties": {}})
    return _ToolCall(
        call_id=f"call_demo{(_answer_seed(request) + 1) % 10**12:012d}",
        name=_function_name(chosen),
        arguments=json.dumps(arguments, separators=(",", ":")),
    )


def _function_name(tool: Mapping[str, Any]) -> str:
    return str(tool.get("name") or _object(tool.get("function")).get("name") or "")


def _answers_a_tool(request: Mapping[str, Any]) -> bool:
    """Whether the last input item is a tool's result (chat: a ``tool`` message; Responses: a
    ``function_call_output`` item)."""
    items = request.get("messages")
    if items is None:
        items = request.get("input")
    if not isinstance(items, list) or not items:
        return False
    last = _object(cast(list[Any], items)[-1])
    return last.get("role") == "tool" or last.get("type") == "function_call_output"


def _structured_text(format_spec: Mapping[str, Any], request: Mapping[str, Any]) -> str | None:
    """JSON text for a JSON-schema or JSON-object output format; ``None`` for plain text."""
    kind = format_spec.get("type")
    if kind == "json_schema":
        # Chat nests the schema under "json_schema"; Responses puts it beside "type".
        schema = _object(format_spec.get("json_schema")).get("schema", format_spec.get("schema"))
        return json.dumps(schema_instance(schema or {}))
    if kind == "json_object":
        return json.dumps({"answer": _reply_text(request)})
    return None


# --- chat completions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ChatAnswer:
    model: str
    chat_id: str
    choices: list[tuple[str | None, _ToolCall | None]]
    usage: dict[str, Any]
    service_tier: str


def _chat_answer(request: Mapping[str, Any]) -> _ChatAnswer:
    model = require_model(request)
    messages = _require_list(request, "messages")
    n = _count(request, "n")
    tools = _list(request.get("tools")) or []
    call = _tool_call(request, tools, responses_api=False)
    structured = _structured_text(_object(request.get("response_format")), request)
    choices: list[tuple[str | None, _ToolCall | None]] = []
    for index in range(n):
        if call is not None:
            choices.append((None, call))
        else:
            choices.append((structured if structured is not None else _reply_text(request, seed=index), None))
    prompt = tokens(messages) + (tokens(tools) if tools else 0)
    completion_tokens = sum(
        tokens(text if text is not None else (tc.arguments if tc else "")) for text, tc in choices
    )
    reasoning = completion_tokens * 3 if _reasons(model) else 0
    cached = (prompt // 2) // 128 * 128  # prompt caching works in 128-token blocks
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens + reasoning,
        "total_tokens": prompt + completion_tokens + reasoning,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    tier = request.get("service_tier")
    return _ChatAnswer(
        model=model,
        # Unique per answer, as the API's are: the same question asked twice is two calls
        # (the store counts spans with one response id as one call).
        chat_id=f"chatcmpl-demo{_answer_seed(request) % 10**12:012d}{next(_ANSWER_SERIAL):06d}",
        choices=choices,
        usage=usage,
        service_tier="default" if tier in (None, "auto") else str(tier),
    )


def _tool_call_body(call: _ToolCall) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chat_completion(request: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``POST /v1/chat/completions`` without ``stream``."""
    answer = _chat_answer(request)
    choices: list[dict[str, Any]] = []
    for index, (text, call) in enumerate(answer.choices):
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        if call is not None:
            message["tool_calls"] = [_tool_call_body(call)]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if call is not None else "stop",
            }
        )
    return {
        "id": answer.chat_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": answer.model,
        "choices": choices,
        "usage": answer.usage,
        "service_tier": answer.service_tier,
        "system_fingerprint": "fp_demo",
    }


def chat_chunks(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``data:`` payloads of a streamed chat completion, in order (``[DONE]`` not included).

    As the API streams: per choice a first chunk with the role, the content (or tool call)
    in pieces, a chunk with the finish reason; with ``stream_options.include_usage`` every
    chunk carries ``usage: null`` and a last chunk with no choices carries the usage."""
    answer = _chat_answer(request)
    base = {
        "id": answer.chat_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": answer.model,
        "service_tier": answer.service_tier,
        "system_fingerprint": "fp_demo",
    }

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    chunks: list[dict[str, Any]] = []
    for index, (text, call) in enumerate(answer.choices):
        if call is None:
            chunks.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
            chunks += [chunk(index, {"content": piece}) for piece in _pieces(text or "")]
            chunks.append(chunk(index, {}, "stop"))
            continue
        first = {
            "index": 0,
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        chunks.append(
            chunk(index, {"role": "assistant", "content": None, "tool_calls": [first], "refusal": None})
        )
        chunks += [
            chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in _argument_pieces(call.arguments)
        ]
        chunks.append(chunk(index, {}, "tool_calls"))
    if _include_usage(request):
        for item in chunks:
            item["usage"] = None
        chunks.append({**base, "choices": [], "usage": answer.usage})
    if _obfuscated(request):
        for number, item in enumerate(chunks):
            item["obfuscation"] = _padding(number)
    return chunks


def _argument_pieces(arguments: str, size: int = 8) -> list[str]:
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def _padding(number: int) -> str:
    return "demoPad0123456789"[: 4 + number % 12]


# --- Responses API -----------------------------------------------------------------------


def response(request: Mapping[str, Any], *, status: str = "completed") -> dict[str, Any]:
    """The body of ``POST /v1/responses`` (and of its stream's ``response.completed``)."""
    model = require_model(request)
    response_id = f"resp_demo{_answer_seed(request) % 10**16:016d}"
    text_config = _object(request.get("text"))
    format_spec = _object(text_config.get("format")) or {"type": "text"}
    tools = _list(request.get("tools")) or []
    output: list[dict[str, Any]] = []
    visible = ""
    if _reasons(model):
        output.append({"id": f"rs_{response_id[5:]}", "type": "reasoning", "summary": []})
    call = _tool_call(request, tools, responses_api=True)
    if call is not None:
        visible = call.arguments
        output.append(
            {
                "id": f"fc_{response_id[5:]}",
                "type": "function_call",
                "status": "completed",
                "arguments": call.arguments,
                "call_id": call.call_id,
                "name": call.name,
            }
        )
    else:
        structured = _structured_text(format_spec, request)
        visible = structured if structured is not None else _reply_text(request)
        output.append(
            {
                "id": f"msg_{response_id[5:]}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": visible, "annotations": [], "logprobs": []}],
            }
        )
    prompt = tokens(request.get("input", "")) + tokens(request.get("instructions") or "")
    if tools:
        prompt += tokens(tools)
    written = tokens(visible)
    reasoning = written * 3 if _reasons(model) else 0
    cached = (prompt // 2) // 128 * 128
    reasoning_config = _object(request.get("reasoning"))
    completed = status == "completed"
    tier = request.get("service_tier")
    return {
        "id": response_id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": bool(request.get("background", False)),
        "completed_at": CREATED + 1 if completed else None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": output if completed else [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {
            "effort": reasoning_config.get("effort", "medium" if _reasons(model) else None),
            "summary": reasoning_config.get("summary"),
        },
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": "default" if tier in (None, "auto") else str(tier),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": format_spec, "verbosity": text_config.get("verbosity", "medium")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": tools,
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": written + reasoning,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + written + reasoning,
        }
        if completed
        else None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def response_events(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed response, in the API's order: created, in_progress, then per
    output item its ``added``, its content (parts and text deltas, or argument deltas) and its
    ``done``, then completed — each with its ``sequence_number``."""
    done = response(request)
    in_progress = response(request, status="in_progress")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
    ]
    for index, item in enumerate(cast(list[dict[str, Any]], done["output"])):
        kind = item["type"]
        if kind == "message":
            events += _message_events(index, item)
        elif kind == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
            events.append({"type": "response.output_item.added", "output_index": index, "item": added})
            where = {"item_id": item["id"], "output_index": index}
            events += [
                {"type": "response.function_call_arguments.delta", **where, "delta": piece}
                for piece in _argument_pieces(item["arguments"])
            ]
            events.append(
                {"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]}
            )
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        else:
            events.append({"type": "response.output_item.added", "output_index": index, "item": item})
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": done})
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def _message_events(index: int, item: Mapping[str, Any]) -> list[dict[str, Any]]:
    part = cast(list[dict[str, Any]], item["content"])[0]
    text = str(part["text"])
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where,
         "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
    ]  # fmt: skip
    events += [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        for piece in _pieces(text)
    ]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events


# --- legacy completions ------------------------------------------------------------------


def _prompts(request: Mapping[str, Any]) -> list[Any]:
    prompt = request.get("prompt")
    if prompt is None:
        raise ApiError(
            400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
        )
    # A list of strings is several prompts; a list of token ids is one.
    if isinstance(prompt, list) and prompt and not isinstance(cast(list[Any], prompt)[0], int):
        return cast(list[Any], prompt)
    return [prompt]


def completion(request: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``POST /v1/completions`` without ``stream``: ``n`` choices per prompt."""
    model = require_model(request)
    prompts = _prompts(request)
    n = _count(request, "n")
    texts = [_reply_text(request, seed=i) for i in range(len(prompts) * n)]
    prompt_tokens = sum(_token_count(p) for p in prompts)
    completion_tokens = sum(tokens(t) for t in texts)
    return {
        "id": _completion_id(request),
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_demo",
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": "stop"}
            for i, text in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _completion_id(request: Mapping[str, Any]) -> str:
    return f"cmpl-demo{_answer_seed(request) % 10**12:012d}"


def completion_chunks(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``data:`` payloads of a streamed completion (``[DONE]`` not included): text pieces
    per choice, a last piece per choice with its finish reason, then — with
    ``stream_options.include_usage`` — a chunk with no choices carrying the usage."""
    whole = completion(request)
    base = {"id": whole["id"], "object": "text_completion", "created": CREATED, "model": whole["model"],
            "system_fingerprint": "fp_demo"}  # fmt: skip
    chunks: list[dict[str, Any]] = []
    for choice in cast(list[dict[str, Any]], whole["choices"]):
        index = choice["index"]
        chunks += [
            {**base, "choices": [{"text": piece, "index": index, "logprobs": None, "finish_reason": None}]}
            for piece in _pieces(str(choice["text"]))
        ]
        chunks.append(
            {**base, "choices": [{"text": "", "index": index, "logprobs": None, "finish_reason": "stop"}]}
        )
    if _include_usage(request):
        for item in chunks:
            item["usage"] = None
        chunks.append({**base, "choices": [], "usage": whole["usage"]})
    return chunks


# --- embeddings --------------------------------------------------------------------------


def embeddings(request: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``POST /v1/embeddings``: one unit vector per input, of the model's size (or
    ``dimensions``), as floats or — with ``encoding_format: base64`` — little-endian float32."""
    model = require_model(request)
    raw = request.get("input")
    if raw is None:
        raise ApiError(
            400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if raw == "" or raw == []:
        raise ApiError(400, "'input' cannot be an empty string or array.", param="input")
    # A string, a list of strings, a list of token ids, or a list of lists of token ids.
    listed = _list(raw)
    items: list[Any] = listed if listed is not None and not isinstance(listed[0], int) else [raw]
    size = request.get("dimensions") or _EMBEDDING_DIMENSIONS.get(model, _DEFAULT_EMBEDDING_DIMENSIONS)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ApiError(400, "Invalid 'dimensions': expected a positive integer.", param="dimensions")
    encoding = request.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(
            400, "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format"
        )
    data: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        vector = _unit_vector([model, item], size)
        value: Any = (
            base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if encoding == "base64" else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    used = sum(_token_count(i) for i in items)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


def _token_count(text_or_ids: Any) -> int:
    """A list of token ids counts as itself; text is estimated."""
    ids = _list(text_or_ids)
    return len(ids) if ids is not None else tokens(text_or_ids)


def _unit_vector(seed: Any, size: int) -> list[float]:
    generator = random.Random(digest(seed))  # noqa: S311 - made-up vectors, not secrets
    values = [generator.gauss(0.0, 1.0) for _ in range(size)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded to float32, as the API's vectors are.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]
