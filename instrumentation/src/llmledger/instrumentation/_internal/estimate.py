"""Local token counts (tiktoken) for calls the API reported no usage for.

tiktoken downloads its encoding files on first use, with no timeout. A request must never
wait for that, so encodings load in one background thread per encoding; until one is
ready, calls get no estimate (and a single warning says why).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

logger = logging.getLogger("llmledger.instrumentation")


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...


# Per-message overhead of the chat format (OpenAI cookbook: "How to count tokens").
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3


def encoding_name_for(model: str | None) -> str:
    """The tiktoken encoding for a model; ``o200k_base`` for models tiktoken does not know."""
    if model:
        try:
            from tiktoken.model import encoding_name_for_model

            return encoding_name_for_model(model)
        except (KeyError, ImportError):
            pass
        # Azure deployment names and snapshots tiktoken lacks: a family prefix decides.
        lowered = model.lower()
        if lowered.startswith(("gpt-3.5", "gpt-35", "gpt-4-", "text-embedding", "davinci", "babbage")) or (
            lowered == "gpt-4"
        ):
            return "cl100k_base"
    return "o200k_base"


class TokenCounter:
    """Counts tokens once encodings are loaded; loads them off the request path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encodings: dict[str, _Encoding] = {}
        self._loading: set[str] = set()
        self._failed: set[str] = set()
        self._warned = False

    def preload(self, *names: str) -> None:
        for name in names:
            self._start_loading(name)

    def _start_loading(self, name: str) -> None:
        with self._lock:
            if name in self._encodings or name in self._loading or name in self._failed:
                return
            self._loading.add(name)
        thread = threading.Thread(
            target=self._load, args=(name,), name=f"llmledger-tiktoken-{name}", daemon=True
        )
        thread.start()

    def _load(self, name: str) -> None:
        try:
            import tiktoken

            encoding = tiktoken.get_encoding(name)
        except Exception as exc:  # download or parse failure: estimation stays off for it
            logger.warning(
                "llmledger: tiktoken encoding %s could not be loaded (%s); calls without "
                "API-reported usage will have no token counts",
                name,
                exc,
            )
            with self._lock:
                self._loading.discard(name)
                self._failed.add(name)
            return
        with self._lock:
            self._encodings[name] = encoding
            self._loading.discard(name)

    def wait_ready(self, name: str, timeout: float) -> bool:
        """For tests and the benchmark: block until ``name`` is loaded (never on a request)."""
        self._start_loading(name)
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01) + 1):
            with self._lock:
                if name in self._encodings:
                    return True
                if name in self._failed:
                    return False
            deadline.wait(0.01)
        return False

    def encoding(self, model: str | None) -> _Encoding | None:
        name = encoding_name_for(model)
        encoding = self._encodings.get(name)
        if encoding is None:
            self._start_loading(name)
            if not self._warned:
                self._warned = True
                logger.warning(
                    "llmledger: token estimation for %s is not ready yet (tiktoken encoding %s is "
                    "loading in the background); this call is recorded without token counts",
                    model,
                    name,
                )
        return encoding

    def count_text(self, model: str | None, text: str) -> int | None:
        encoding = self.encoding(model)
        if encoding is None:
            return None
        return len(encoding.encode(text, disallowed_special=()))

    def count_chat_input(
        self, model: str | None, messages: Iterable[Mapping[str, Any]] | None, tools: Any = None
    ) -> int | None:
        encoding = self.encoding(model)
        if encoding is None or messages is None:
            return None
        total = 0
        for message in messages:
            total += _TOKENS_PER_MESSAGE
            for key, value in message.items():
                text = _text_of(value)
                if text:
                    total += len(encoding.encode(text, disallowed_special=()))
                if key == "name":
                    total += _TOKENS_PER_NAME
        total += _REPLY_PRIMING
        if tools:
            # The API renders tool definitions into the prompt; their JSON is a close bound.
            total += len(
                encoding.encode(json.dumps(_plain(tools), separators=(",", ":")), disallowed_special=())
            )
        return total


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(item, Mapping):
                text = item.get("text")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(item, str):
                parts.append(item)
        return "".join(parts)
    if isinstance(value, Mapping):
        return json.dumps(_plain(value), separators=(",", ":"))  # tool_calls, function_call
    return ""


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in cast("Mapping[Any, Any]", value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in cast("Iterable[Any]", value)]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    return str(value)


TOKEN_COUNTER = TokenCounter()
