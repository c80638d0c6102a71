"""Local token counts (tiktoken) for calls the API reported no usage for.

tiktoken downloads its encoding files on first use, with no timeout, and parsing one takes
a good part of a second. A request must never wait for that, so encodings load in one
background thread each, started when the instrumentation is installed. A call that ends
before its encoding is ready is not recorded without counts: it is *held* (``when_ready``)
and finished by a waiter thread as soon as the encoding is ready, or without counts once
its time limit passes or the load fails. ``wait_pending`` lets flush and shutdown wait for
the held calls.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, cast

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


Finish = Callable[[bool], None]
"""Finishes a held call: True when its encoding is ready, False to record it without counts."""


class _Held(NamedTuple):
    encoding: str
    deadline: float  # time.monotonic()
    finish: Finish


class TokenCounter:
    """Counts tokens once encodings are loaded; loads them off the request path."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._encodings: dict[str, _Encoding] = {}
        self._loading: set[str] = set()
        self._failed: set[str] = set()
        self._names: dict[str | None, str] = {}
        self._held: list[_Held] = []
        self._finishing = 0  # held calls taken off the list whose finish is running
        self._waiter: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):
            after_fork = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := after_fork()) and method())

    def _after_fork_in_child(self) -> None:
        """A pre-forking server (``gunicorn --preload``) may fork while an encoding loads: the
        child has no loader or waiter thread, so it starts its own loads; held calls are the
        parent's to finish."""
        self._lock = threading.Condition()
        loading, self._loading = self._loading, set()
        self._held, self._finishing, self._waiter = [], 0, None
        for name in loading:
            self._start_loading(name)

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
                self._lock.notify_all()
            return
        with self._lock:
            self._encodings[name] = encoding
            self._loading.discard(name)
            self._lock.notify_all()

    def encoding_name(self, model: str | None) -> str:
        name = self._names.get(model)
        if name is None:
            name = encoding_name_for(model)
            if len(self._names) < 4096:  # model names come from requests: bounded
                self._names[model] = name
        return name

    def is_ready(self, name: str) -> bool:
        return name in self._encodings

    def when_ready(self, name: str, finish: Finish, timeout: float) -> None:
        """Run ``finish(True)`` once encoding ``name`` is loaded, ``finish(False)`` if it fails
        or ``timeout`` seconds pass first; at once, in this thread, if that is known already."""
        with self._lock:
            ready = name in self._encodings
            settled = ready or name in self._failed
            if not settled:
                self._held.append(_Held(name, time.monotonic() + timeout, finish))
                if self._waiter is None:
                    self._waiter = threading.Thread(
                        target=self._finish_held, name="llmledger-held-calls", daemon=True
                    )
                    self._waiter.start()
                self._lock.notify_all()
        if settled:
            finish(ready)
            return
        self._start_loading(name)

    def _finish_held(self) -> None:
        """The waiter thread: finishes held calls as their encodings settle or time runs out."""
        while True:
            with self._lock:
                due: list[tuple[_Held, bool]] = []
                waiting: list[_Held] = []
                now = time.monotonic()
                for held in self._held:
                    if held.encoding in self._encodings:
                        due.append((held, True))
                    elif held.encoding in self._failed or held.deadline <= now:
                        due.append((held, False))
                    else:
                        waiting.append(held)
                self._held = waiting
                if not due:
                    if not waiting:
                        self._waiter = None
                        self._lock.notify_all()
                        return
                    self._lock.wait(min(held.deadline for held in waiting) - now)
                    continue
                self._finishing += len(due)
            for held, ready in due:
                try:
                    held.finish(ready)
                except Exception:  # finish guards itself; this thread must outlive any bug
                    logger.exception("llmledger: finishing a held call failed")
                with self._lock:
                    self._finishing -= 1
                    self._lock.notify_all()

    def pending(self) -> int:
        """Calls held for an encoding and not finished yet."""
        with self._lock:
            return len(self._held) + self._finishing

    def wait_pending(self, timeout: float | None) -> bool:
        """Block until no call is held, at most ``timeout`` seconds (None: as long as the held
        calls' own time limits); True when none is left. Never on a request."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._held or self._finishing:
                if deadline is None:
                    self._lock.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def wait_ready(self, name: str, timeout: float) -> bool:
        """For tests and the benchmark: block until ``name`` is loaded (never on a request)."""
        self._start_loading(name)
        deadline = time.monotonic() + timeout
        with self._lock:
            while name not in self._encodings and name not in self._failed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return name in self._encodings

    def encoding(self, model: str | None) -> _Encoding | None:
        """The loaded encoding for ``model``; None (and its load started) while it is not ready."""
        name = self.encoding_name(model)
        encoding = self._encodings.get(name)
        if encoding is None:
            self._start_loading(name)
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
                text = _text_of(key, value)
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


def content_texts(content: Any) -> list[str]:
    """The text of a message's ``content``, chat's or the Responses API's: the string itself, or
    the ``text`` of each part of a list (images, audio and files carry none)."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(part, Mapping):
                text = part.get("text")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
                if isinstance(text, str):
                    texts.append(text)
            elif isinstance(part, str):
                texts.append(part)
    return texts


def _text_of(key: str, value: Any) -> str:
    """What a message's field puts in the prompt: text, or the JSON of a structured field."""
    if isinstance(value, str):
        return value
    if key == "content":
        return "".join(content_texts(value))
    if isinstance(value, (list, Mapping)):
        # tool_calls (a list of calls), function_call, audio: the API renders their JSON.
        return json.dumps(_plain(value), separators=(",", ":"))
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
