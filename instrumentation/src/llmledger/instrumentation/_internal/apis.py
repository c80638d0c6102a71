"""What each openai endpoint means for telemetry: pure extractors, no span access.

One ``ApiSpec`` per API family maps request kwargs to attributes, a response (or stream
chunk) into ``ResponseFacts``, and estimates tokens when the API reported none. The
wrappers in ``patch.py`` only start the span, call, apply these, and end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

from llmledger.instrumentation._internal import attributes as A
from llmledger.instrumentation._internal.estimate import TokenCounter, content_texts
from llmledger.instrumentation._internal.usage import (
    TokenUsage,
    usage_from_chat,
    usage_from_embeddings,
    usage_from_responses,
)

AttrValue = str | bool | int | float | tuple[str, ...]


def given(value: Any) -> bool:
    """False for the SDK's ``omit``/``NOT_GIVEN`` sentinels and None."""
    return value is not None and not _is_sentinel(value)


def _is_sentinel(value: Any) -> bool:
    name = type(value).__name__
    return name in ("Omit", "NotGiven")


class ResponseFacts:
    """What was learnt from the response (or stream) of one call."""

    __slots__ = (
        "finish_reasons",
        "output_messages",
        "output_parts",
        "response_id",
        "response_model",
        "service_tier",
        "status",
        "system_fingerprint",
        "tool_calls",
        "usage",
    )

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        self.service_tier: str | None = None
        self.system_fingerprint: str | None = None
        self.status: str | None = None
        self.usage: TokenUsage | None = None
        self.output_parts: list[str] = []
        # Tool calls the model made, by position: [name, argument fragments...]. Kept apart
        # from the text so each is counted on its own, the way the model generated it.
        self.tool_calls: dict[Any, list[str]] | None = None
        self.output_messages: list[dict[str, Any]] | None = None

    def add_tool_call(self, key: Any, name: Any, arguments: Any) -> None:
        """Note a tool call's name and (a fragment of) its arguments, as output to estimate."""
        calls = self.tool_calls
        if calls is None:
            calls = self.tool_calls = {}
        parts = calls.get(key)
        if parts is None:
            parts = calls[key] = [name if isinstance(name, str) else ""]
        elif isinstance(name, str) and name and not parts[0]:
            parts[0] = name
        if isinstance(arguments, str) and arguments:
            parts.append(arguments)

    def add_tool_arguments(self, key: Any, fragment: Any) -> None:
        self.add_tool_call(key, None, fragment)


# Request kwargs copied onto the span as they are: (kwarg, attribute, numeric kind).
_COMMON_NUMERIC: tuple[tuple[str, str, type[int] | type[float]], ...] = (
    ("temperature", A.REQUEST_TEMPERATURE, float),
    ("top_p", A.REQUEST_TOP_P, float),
    ("presence_penalty", A.REQUEST_PRESENCE_PENALTY, float),
    ("frequency_penalty", A.REQUEST_FREQUENCY_PENALTY, float),
    ("seed", A.REQUEST_SEED, int),
)


class ApiSpec:
    """Base: request attributes common to every generating endpoint."""

    operation: ClassVar[str]
    api_type: ClassVar[str]
    numeric: ClassVar[tuple[tuple[str, str, type[int] | type[float]], ...]] = _COMMON_NUMERIC

    def add_request_attributes(self, kwargs: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        """Add the attributes the request kwargs imply to ``attrs`` (the hot path: one lookup per kwarg)."""
        for name, key, kind in self.numeric:
            value = kwargs.get(name)
            # An integer setting (seed) takes a float only when it is a whole number: NaN or
            # infinity cannot become one (the API refuses them; the span must not fail).
            if type(value) is int or (type(value) is float and (kind is float or value.is_integer())):
                attrs[key] = kind(value)
        tier = kwargs.get("service_tier")
        if type(tier) is str:
            attrs[A.OPENAI_REQUEST_SERVICE_TIER] = tier
        self.add_specific_attributes(kwargs, attrs)

    def add_specific_attributes(self, kwargs: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        """What only this API's requests carry."""

    def inject_stream_usage(self, kwargs: dict[str, Any]) -> bool:
        """Ask a stream for its usage chunk when the user did not say; True when we did."""
        return False

    def apply_response(self, facts: ResponseFacts, response: Any, capture: bool) -> None:
        raise NotImplementedError

    def apply_chunk(self, facts: ResponseFacts, chunk: Any) -> bool:
        """Fold one stream item into ``facts``; True when it is a usage-only chunk."""
        raise NotImplementedError

    def estimate(
        self, counter: TokenCounter, model: str | None, kwargs: Mapping[str, Any], facts: ResponseFacts
    ) -> TokenUsage | None:
        return None

    def input_messages(self, kwargs: Mapping[str, Any]) -> Any:
        return None

    def response_type(self) -> type[Any] | None:
        """The SDK model of a non-stream response body (to read raw responses)."""
        return None


def _put(attrs: dict[str, AttrValue], key: str, value: Any, kind: type[int] | type[float]) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        attrs[key] = kind(value)


def _stop_sequences(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    return None


class _ChoicesSpec(ApiSpec):
    """Chat completions and legacy completions: a body of ``choices`` under the same header and usage."""

    def inject_stream_usage(self, kwargs: dict[str, Any]) -> bool:
        if given(kwargs.get("stream_options")):
            return False
        kwargs["stream_options"] = {"include_usage": True}
        return True

    @staticmethod
    def _apply_header(facts: ResponseFacts, response: Any) -> Any:
        """Id, model, fingerprint, finish reasons and usage into ``facts``; the choices."""
        facts.response_id = getattr(response, "id", None)
        facts.response_model = getattr(response, "model", None)
        facts.system_fingerprint = getattr(response, "system_fingerprint", None)
        choices = getattr(response, "choices", None) or ()
        facts.finish_reasons = [c.finish_reason for c in choices if getattr(c, "finish_reason", None)]
        facts.usage = usage_from_chat(getattr(response, "usage", None))
        return choices


class ChatCompletionsSpec(_ChoicesSpec):
    operation = A.OP_CHAT
    api_type = A.API_CHAT_COMPLETIONS
    numeric = (*_COMMON_NUMERIC, ("n", A.REQUEST_CHOICE_COUNT, int))

    def add_specific_attributes(self, kwargs: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        max_tokens = kwargs.get("max_completion_tokens")
        if not given(max_tokens):
            max_tokens = kwargs.get("max_tokens")
        _put(attrs, A.REQUEST_MAX_TOKENS, max_tokens, int)
        stop = kwargs.get("stop")
        if stop is not None:
            sequences = _stop_sequences(stop)
            if sequences:
                attrs[A.REQUEST_STOP_SEQUENCES] = sequences
        response_format = kwargs.get("response_format")
        if response_format is not None:
            output_type = _output_type(response_format)
            if output_type:
                attrs[A.OUTPUT_TYPE] = output_type

    def apply_response(self, facts: ResponseFacts, response: Any, capture: bool) -> None:
        choices = self._apply_header(facts, response)
        facts.service_tier = getattr(response, "service_tier", None)
        if facts.usage is None:  # keep the text for a local estimate
            for index, choice in enumerate(choices):
                message = getattr(choice, "message", None)
                for text in (getattr(message, "content", None), getattr(message, "refusal", None)):
                    if isinstance(text, str):
                        facts.output_parts.append(text)
                for position, call in enumerate(getattr(message, "tool_calls", None) or ()):
                    function = getattr(call, "function", None)
                    facts.add_tool_call(
                        (index, position),
                        getattr(function, "name", None),
                        getattr(function, "arguments", None),
                    )
                function_call = getattr(message, "function_call", None)  # the deprecated functions API
                if function_call is not None:
                    facts.add_tool_call(
                        (index, -1),
                        getattr(function_call, "name", None),
                        getattr(function_call, "arguments", None),
                    )
        if capture:
            facts.output_messages = [_chat_message(c) for c in choices]

    def apply_chunk(self, facts: ResponseFacts, chunk: Any) -> bool:
        if facts.response_id is None:
            facts.response_id = chunk.id
            facts.response_model = chunk.model
            facts.service_tier = getattr(chunk, "service_tier", None)
            facts.system_fingerprint = getattr(chunk, "system_fingerprint", None)
        choices = chunk.choices
        if choices:
            for choice in choices:
                reason = choice.finish_reason
                if reason is not None:
                    facts.finish_reasons.append(reason)
                delta = choice.delta
                if delta is not None:
                    content = delta.content
                    if content:
                        facts.output_parts.append(content)
                    else:  # a text chunk carries nothing else: the hot path stops above
                        _fold_chat_delta_extras(facts, choice.index, delta)
        usage = chunk.usage
        if usage is not None:
            facts.usage = usage_from_chat(usage)
            return not choices
        return False

    def estimate(
        self, counter: TokenCounter, model: str | None, kwargs: Mapping[str, Any], facts: ResponseFacts
    ) -> TokenUsage | None:
        messages = kwargs.get("messages")
        if not isinstance(messages, (list, tuple)):
            return None
        input_tokens = counter.count_chat_input(
            model,
            [m for m in messages if isinstance(m, Mapping)],  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            kwargs.get("tools") if given(kwargs.get("tools")) else None,
        )
        output_tokens = count_output(counter, model, facts)
        if input_tokens is None or output_tokens is None:
            return None
        return TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=True)

    def input_messages(self, kwargs: Mapping[str, Any]) -> Any:
        return kwargs.get("messages")

    def response_type(self) -> type[Any] | None:
        from openai.types.chat import ChatCompletion

        return ChatCompletion


def _fold_chat_delta_extras(facts: ResponseFacts, choice_index: int, delta: Any) -> None:
    """A chat delta without text: tool-call names and argument fragments, a refusal, a legacy function call."""
    tool_calls = delta.tool_calls
    if tool_calls:
        for call in tool_calls:
            function = call.function
            if function is not None:
                facts.add_tool_call((choice_index, call.index), function.name, function.arguments)
        return
    refusal = getattr(delta, "refusal", None)
    if refusal:
        facts.output_parts.append(refusal)
        return
    function_call = delta.function_call
    if function_call is not None:
        facts.add_tool_call((choice_index, -1), function_call.name, function_call.arguments)


def count_output(counter: TokenCounter, model: str | None, facts: ResponseFacts) -> int | None:
    """Output tokens of what the model generated: its text, and each tool call's name and arguments."""
    total = counter.count_text(model, "".join(facts.output_parts))
    if total is None or not facts.tool_calls:
        return total
    for name, *arguments in facts.tool_calls.values():
        for text in (name, "".join(arguments)):
            count = counter.count_text(model, text)
            if count is None:
                return None
            total += count
    return total


def _output_type(response_format: Any) -> str | None:
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if kind in ("json_object", "json_schema"):
            return "json"
        if kind == "text":
            return "text"
        return None
    if isinstance(response_format, type):
        return "json"  # a pydantic model passed to .parse()
    return None


def _chat_message(choice: Any) -> dict[str, Any]:
    message = getattr(choice, "message", None)
    out: dict[str, Any] = {
        "role": getattr(message, "role", "assistant"),
        "finish_reason": choice.finish_reason,
    }
    content = getattr(message, "content", None)
    if content is not None:
        out["content"] = content
    refusal = getattr(message, "refusal", None)
    if refusal:
        out["refusal"] = refusal
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [
            {
                "id": t.id,
                "name": getattr(t.function, "name", None),
                "arguments": getattr(t.function, "arguments", None),
            }
            for t in tool_calls
            if getattr(t, "function", None) is not None
        ]
    return out


_RESPONSE_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesSpec(ApiSpec):
    operation = A.OP_CHAT
    api_type = A.API_RESPONSES

    def add_specific_attributes(self, kwargs: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        _put(attrs, A.REQUEST_MAX_TOKENS, kwargs.get("max_output_tokens"), int)
        text = kwargs.get("text")
        if isinstance(text, Mapping):
            fmt = text.get("format")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            output_type = _output_type(fmt)
            if output_type:
                attrs[A.OUTPUT_TYPE] = output_type
        if isinstance(kwargs.get("text_format"), type):
            attrs[A.OUTPUT_TYPE] = "json"

    def apply_response(self, facts: ResponseFacts, response: Any, capture: bool) -> None:
        facts.response_id = getattr(response, "id", None)
        facts.response_model = getattr(response, "model", None)
        facts.service_tier = getattr(response, "service_tier", None)
        facts.status = getattr(response, "status", None)
        reason = _responses_finish_reason(response)
        facts.finish_reasons = [reason] if reason else []
        facts.usage = usage_from_responses(getattr(response, "usage", None))
        if facts.usage is None:
            text = getattr(response, "output_text", None)
            if isinstance(text, str):
                facts.output_parts.append(text)
            for index, item in enumerate(getattr(response, "output", None) or ()):
                if getattr(item, "type", None) == "function_call":
                    facts.add_tool_call(index, getattr(item, "name", None), getattr(item, "arguments", None))
        if capture:
            text = getattr(response, "output_text", None)
            facts.output_messages = [{"role": "assistant", "content": text, "finish_reason": reason}]

    def apply_chunk(self, facts: ResponseFacts, chunk: Any) -> bool:
        kind = chunk.type
        if kind == "response.output_text.delta":
            facts.output_parts.append(chunk.delta)
        elif kind == "response.function_call_arguments.delta":
            facts.add_tool_arguments(chunk.output_index, chunk.delta)
        elif kind == "response.output_item.added":
            item = chunk.item
            if item.type == "function_call":
                facts.add_tool_call(chunk.output_index, item.name, item.arguments)
        elif kind == "response.refusal.delta":
            facts.output_parts.append(chunk.delta)
        elif kind in _RESPONSE_TERMINAL_EVENTS or kind == "response.created":
            response = chunk.response
            facts.response_id = response.id
            facts.response_model = response.model
            facts.service_tier = response.service_tier
            facts.status = response.status
            if kind != "response.created":
                reason = _responses_finish_reason(response)
                facts.finish_reasons = [reason] if reason else []
                facts.usage = usage_from_responses(response.usage)
        return False

    def estimate(
        self, counter: TokenCounter, model: str | None, kwargs: Mapping[str, Any], facts: ResponseFacts
    ) -> TokenUsage | None:
        pieces: list[str] = []
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            pieces.append(instructions)
        raw_input = kwargs.get("input")
        if isinstance(raw_input, str):
            pieces.append(raw_input)
        elif isinstance(raw_input, list):
            for item in raw_input:  # pyright: ignore[reportUnknownVariableType]
                if isinstance(item, Mapping):
                    pieces.extend(content_texts(item.get("content")))  # pyright: ignore[reportUnknownMemberType]
        input_tokens = counter.count_text(model, "\n".join(pieces))
        output_tokens = count_output(counter, model, facts)
        if input_tokens is None or output_tokens is None:
            return None
        return TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=True)

    def input_messages(self, kwargs: Mapping[str, Any]) -> Any:
        raw_input = kwargs.get("input")
        instructions = kwargs.get("instructions")
        messages: list[Any] = []
        if isinstance(instructions, str):
            messages.append({"role": "system", "content": instructions})
        if isinstance(raw_input, str):
            messages.append({"role": "user", "content": raw_input})
        elif isinstance(raw_input, list):
            messages.extend(raw_input)  # pyright: ignore[reportUnknownArgumentType]
        return messages

    def response_type(self) -> type[Any] | None:
        from openai.types.responses import Response

        return Response


def _responses_finish_reason(response: Any) -> str | None:
    status = getattr(response, "status", None)
    if status == "completed":
        return "stop"
    if status == "incomplete":
        details = getattr(response, "incomplete_details", None)
        reason = getattr(details, "reason", None)
        return "length" if reason == "max_output_tokens" else (reason or "incomplete")
    if status == "failed":
        return "error"
    return None


class CompletionsSpec(_ChoicesSpec):
    operation = A.OP_TEXT_COMPLETION
    api_type = A.API_COMPLETIONS
    numeric = (
        *_COMMON_NUMERIC,
        ("n", A.REQUEST_CHOICE_COUNT, int),
        ("max_tokens", A.REQUEST_MAX_TOKENS, int),
    )

    def add_specific_attributes(self, kwargs: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        stop = _stop_sequences(kwargs.get("stop"))
        if stop:
            attrs[A.REQUEST_STOP_SEQUENCES] = stop

    def apply_response(self, facts: ResponseFacts, response: Any, capture: bool) -> None:
        choices = self._apply_header(facts, response)
        if facts.usage is None:
            facts.output_parts.extend(c.text for c in choices if isinstance(getattr(c, "text", None), str))
        if capture:
            facts.output_messages = [
                {"role": "assistant", "content": c.text, "finish_reason": c.finish_reason} for c in choices
            ]

    def apply_chunk(self, facts: ResponseFacts, chunk: Any) -> bool:
        if facts.response_id is None:
            facts.response_id = chunk.id
            facts.response_model = chunk.model
        choices = chunk.choices
        if choices:
            for choice in choices:
                if choice.finish_reason is not None:
                    facts.finish_reasons.append(choice.finish_reason)
                if choice.text:
                    facts.output_parts.append(choice.text)
        usage = chunk.usage
        if usage is not None:
            facts.usage = usage_from_chat(usage)
            return not choices
        return False

    def estimate(
        self, counter: TokenCounter, model: str | None, kwargs: Mapping[str, Any], facts: ResponseFacts
    ) -> TokenUsage | None:
        text = "".join(_strings(kwargs.get("prompt")))
        input_tokens = counter.count_text(model, text)
        output_tokens = counter.count_text(model, "".join(facts.output_parts))
        if input_tokens is None or output_tokens is None:
            return None
        return TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=True)

    def input_messages(self, kwargs: Mapping[str, Any]) -> Any:
        return [{"role": "user", "content": kwargs.get("prompt")}]

    def response_type(self) -> type[Any] | None:
        from openai.types import Completion

        return Completion


class EmbeddingsSpec(ApiSpec):
    operation = A.OP_EMBEDDINGS
    api_type = A.API_EMBEDDINGS
    numeric = ()

    def add_specific_attributes(self, kwargs: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        fmt = kwargs.get("encoding_format")
        if isinstance(fmt, str):
            attrs[A.REQUEST_ENCODING_FORMATS] = (fmt,)

    def apply_response(self, facts: ResponseFacts, response: Any, capture: bool) -> None:
        facts.response_model = getattr(response, "model", None)
        facts.usage = usage_from_embeddings(getattr(response, "usage", None))

    def apply_chunk(self, facts: ResponseFacts, chunk: Any) -> bool:  # embeddings never stream
        return False

    def estimate(
        self, counter: TokenCounter, model: str | None, kwargs: Mapping[str, Any], facts: ResponseFacts
    ) -> TokenUsage | None:
        texts = _strings(kwargs.get("input"))
        if not texts:
            return None
        total = 0
        for text in texts:
            count = counter.count_text(model, text)
            if count is None:
                return None
            total += count
        return TokenUsage(input_tokens=total, output_tokens=0, estimated=True)

    def response_type(self) -> type[Any] | None:
        from openai.types import CreateEmbeddingResponse

        return CreateEmbeddingResponse


CHAT_COMPLETIONS = ChatCompletionsSpec()
RESPONSES = ResponsesSpec()
COMPLETIONS = CompletionsSpec()
EMBEDDINGS = EmbeddingsSpec()


def messages_json(messages: Any) -> str | None:
    """Messages as the JSON string the GenAI conventions record (only with content capture on)."""
    if messages is None:
        return None
    try:
        return json.dumps(messages, default=_jsonable, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(cast("Iterable[Any]", value))
    return repr(value)


def _strings(value: Any) -> list[str]:
    """The text items of a prompt/input that may be a string or a list (token-id lists are skipped)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in cast("list[Any]", value) if isinstance(item, str)]
    return []
