"""Token counts of one call, read from the shapes the openai SDK returns.

Pure functions over SDK objects (or anything shaped like them): no span access, no I/O.
Conventions follow the GenAI semantic conventions: ``input_tokens`` includes cached input,
``output_tokens`` includes reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one LLM or embedding call.

    ``None`` means "not reported" (unknown), never zero. The detail fields are subsets of
    the totals: ``cached_input_tokens`` and ``input_audio_tokens`` are inside
    ``input_tokens``; ``reasoning_tokens`` and ``output_audio_tokens`` inside ``output_tokens``;
    ``input_image_tokens`` inside ``input_tokens`` (image models price them at their own rate).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    cached_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    estimated: bool = False

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _opt_int(value: Any) -> int | None:
    return value if type(value) is int else None


def usage_from_chat(usage: Any) -> TokenUsage | None:
    """``CompletionUsage`` of chat completions and legacy completions."""
    if usage is None:
        return None
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return TokenUsage(
        input_tokens=_opt_int(getattr(usage, "prompt_tokens", None)),
        output_tokens=_opt_int(getattr(usage, "completion_tokens", None)),
        cached_input_tokens=_int(getattr(prompt_details, "cached_tokens", None)),
        cache_write_tokens=_int(getattr(prompt_details, "cache_write_tokens", None)),
        input_audio_tokens=_int(getattr(prompt_details, "audio_tokens", None)),
        input_image_tokens=_int(getattr(prompt_details, "image_tokens", None)),
        reasoning_tokens=_int(getattr(completion_details, "reasoning_tokens", None)),
        output_audio_tokens=_int(getattr(completion_details, "audio_tokens", None)),
    )


def usage_from_responses(usage: Any) -> TokenUsage | None:
    """``ResponseUsage`` of the Responses API."""
    if usage is None:
        return None
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    return TokenUsage(
        input_tokens=_opt_int(getattr(usage, "input_tokens", None)),
        output_tokens=_opt_int(getattr(usage, "output_tokens", None)),
        cached_input_tokens=_int(getattr(input_details, "cached_tokens", None)),
        cache_write_tokens=_int(getattr(input_details, "cache_write_tokens", None)),
        reasoning_tokens=_int(getattr(output_details, "reasoning_tokens", None)),
    )


def usage_from_embeddings(usage: Any) -> TokenUsage | None:
    """``Usage`` of embeddings: only prompt tokens; output is zero by definition."""
    if usage is None:
        return None
    prompt = _opt_int(getattr(usage, "prompt_tokens", None))
    return TokenUsage(input_tokens=prompt, output_tokens=0 if prompt is not None else None)
