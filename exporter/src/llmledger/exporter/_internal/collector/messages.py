"""What the receiving process and the drain process say to each other: typed messages, one JSON line each.

The receiving process (:class:`.drain_process.DrainProcess`) writes on the drain process's stdin::

    DrainStart    first line: the whole configuration (the drain reads no default of its own)
    StopRequest   drain for at most ``seconds``, then exit

The drain process (:func:`.drain_process.main`) writes on its stdout::

    DrainStatus   every 0.25 s, and once more after it stopped
    DrainExited   last line: whether the spool was emptied, or why it failed

On the wire each message is a JSON object with a ``"type"`` and its fields, written by
:func:`encode`. :func:`decode_command` and :func:`decode_report` read one line back into
the message, checking every field's type; anything else — not JSON, an unknown type, a
message meant for the other direction, a missing or mistyped field — raises
:class:`MessageError`, which the reader logs and goes past (see the two readers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, TypeAlias

from llmledger.exporter._internal.config import StoreConfig

from .config import SETTINGS, CollectorConfig, Setting

__all__ = [
    "Command",
    "DrainExited",
    "DrainStart",
    "DrainStatus",
    "MessageError",
    "Report",
    "StopRequest",
    "decode_command",
    "decode_report",
    "encode",
]

Json: TypeAlias = "str | int | float | bool | list[Json] | dict[str, Json] | None"
# The clients' bearer token stays in the receiving process: the drain never checks it.
_NOT_SENT: Final = frozenset({"auth_token", "auth_token_file"})


class MessageError(ValueError):
    """A line that is not a message this side expects (garbled, unknown, or with a bad field)."""


class _Fields:
    """A decoded message's fields, read with their types checked (:class:`MessageError` otherwise)."""

    def __init__(self, where: str, fields: Mapping[str, Json]) -> None:
        self._where = where  # "status message", "start message's settings" …
        self._fields = fields

    def _get(self, name: str) -> Json:
        if name not in self._fields:
            raise MessageError(f"{self._where} has no {name!r}")
        return self._fields[name]

    def _wrong(self, name: str, expected: str) -> MessageError:
        return MessageError(f"{self._where}: {name} is {self._fields[name]!r}, not {expected}")

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._get(name) is None else self.text(name)

    def whole(self, name: str) -> int:
        value = self._get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(name, "a whole number")
        return value

    def optional_whole(self, name: str) -> int | None:
        return None if self._get(name) is None else self.whole(name)

    def number(self, name: str) -> float:
        value = self._get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._wrong(name, "a number")
        return float(value)

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false")
        return value

    def object(self, name: str) -> _Fields:
        value = self._get(name)
        if not isinstance(value, dict):
            raise self._wrong(name, "an object")
        return _Fields(f"{self._where}'s {name}", value)

    def counts(self, name: str) -> dict[str, int]:
        inner = self.object(name)
        return {key: inner.whole(key) for key in inner.names()}

    def is_null(self, name: str) -> bool:
        return self._get(name) is None

    def names(self) -> list[str]:
        return list(self._fields)


# -- receiving process -> drain process ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainStart:
    """The drain process's configuration: every setting as the receiving process built it."""

    TYPE: ClassVar[str] = "start"
    config: CollectorConfig

    def fields(self) -> dict[str, Json]:
        config = self.config
        settings: dict[str, Json] = {}
        for setting in SETTINGS:
            if setting.name not in _NOT_SENT:
                value: object = getattr(config, setting.name)
                settings[setting.name] = str(value) if isinstance(value, Path) else _json(value)
        store = config.store
        return {
            "settings": settings,
            "store": {
                "url": store.url,
                "database": store.database,
                "cluster": store.cluster,
                "spans_ttl_days": store.spans_ttl_days,
                "calls_ttl_days": store.calls_ttl_days,
                "rollup_ttl_days": store.rollup_ttl_days,
            },
        }

    @classmethod
    def read(cls, fields: _Fields) -> DrainStart:
        settings = fields.object("settings")
        unknown = set(settings.names()) - {setting.name for setting in SETTINGS}
        if unknown:
            raise MessageError(f"start message: unknown settings {', '.join(sorted(unknown))}")
        values = {
            setting.name: _read_setting(settings, setting)
            for setting in SETTINGS
            if setting.name not in _NOT_SENT
        }
        store = fields.object("store")
        config = CollectorConfig(
            store=StoreConfig(
                url=store.text("url"),
                database=store.text("database"),
                cluster=store.optional_text("cluster"),
                spans_ttl_days=store.whole("spans_ttl_days"),
                calls_ttl_days=store.whole("calls_ttl_days"),
                rollup_ttl_days=store.whole("rollup_ttl_days"),
            ),
            **values,  # pyright: ignore[reportArgumentType]  (each checked against its setting's kind)
        )
        return cls(config)


@dataclass(frozen=True, slots=True)
class StopRequest:
    """Stop: drain for at most ``seconds``, then send the last status and exit."""

    TYPE: ClassVar[str] = "stop"
    seconds: float

    def fields(self) -> dict[str, Json]:
        return {"seconds": self.seconds}

    @classmethod
    def read(cls, fields: _Fields) -> StopRequest:
        return cls(fields.number("seconds"))


# -- drain process -> receiving process ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """Where the drain stands: what ``/metrics``, ``/healthz`` and ``/readyz`` report.

    Spool figures cover every signal's spool; errors name the signal they come from.
    """

    TYPE: ClassVar[str] = "status"
    counters: Mapping[str, int]  # this process's counters since it started
    # Committed with each spool's cursor: the receiving process counts these exactly from
    # them, whatever drain process died before it could report (see DrainProcess.counters).
    durable_counters: Mapping[str, int]
    durable_counters_at_open: Mapping[str, int]
    insert_seconds: float  # how long the insert under way has run (0 when none is)
    spool_damaged_bytes: int
    pending_bytes: int
    lag_seconds: float
    store_up: bool
    last_error: str | None
    fatal_error: str | None
    query_port: int | None
    query_error: str | None

    def fields(self) -> dict[str, Json]:
        return {
            "counters": dict(self.counters),
            "durable_counters": dict(self.durable_counters),
            "durable_counters_at_open": dict(self.durable_counters_at_open),
            "insert_seconds": self.insert_seconds,
            "spool_damaged_bytes": self.spool_damaged_bytes,
            "pending_bytes": self.pending_bytes,
            "lag_seconds": self.lag_seconds,
            "store_up": self.store_up,
            "last_error": self.last_error,
            "fatal_error": self.fatal_error,
            "query_port": self.query_port,
            "query_error": self.query_error,
        }

    @classmethod
    def read(cls, fields: _Fields) -> DrainStatus:
        return cls(
            counters=fields.counts("counters"),
            durable_counters=fields.counts("durable_counters"),
            durable_counters_at_open=fields.counts("durable_counters_at_open"),
            insert_seconds=fields.number("insert_seconds"),
            spool_damaged_bytes=fields.whole("spool_damaged_bytes"),
            pending_bytes=fields.whole("pending_bytes"),
            lag_seconds=fields.number("lag_seconds"),
            store_up=fields.flag("store_up"),
            last_error=fields.optional_text("last_error"),
            fatal_error=fields.optional_text("fatal_error"),
            query_port=fields.optional_whole("query_port"),
            query_error=fields.optional_text("query_error"),
        )


@dataclass(frozen=True, slots=True)
class DrainExited:
    """The drain process's last line: whether it emptied the spool, or the error it stopped on."""

    TYPE: ClassVar[str] = "exited"
    drained: bool
    error: str | None = None

    def fields(self) -> dict[str, Json]:
        return {"drained": self.drained, "error": self.error}

    @classmethod
    def read(cls, fields: _Fields) -> DrainExited:
        return cls(fields.flag("drained"), fields.optional_text("error"))


Command: TypeAlias = DrainStart | StopRequest
Report: TypeAlias = DrainStatus | DrainExited
_COMMANDS: Final = {kind.TYPE: kind for kind in (DrainStart, StopRequest)}
_REPORTS: Final = {kind.TYPE: kind for kind in (DrainStatus, DrainExited)}


def encode(message: Command | Report) -> str:
    """One line (without its newline) that :func:`decode_command` or :func:`decode_report` reads back."""
    return json.dumps({"type": message.TYPE, **message.fields()})


def decode_command(line: str) -> Command:
    """A message for the drain process; :class:`MessageError` for anything else."""
    kind, fields = _open(line)
    reader = _COMMANDS.get(kind)
    if reader is None:
        raise MessageError(f"not a message for the drain process: {kind!r}")
    return reader.read(fields)


def decode_report(line: str) -> Report:
    """A message from the drain process; :class:`MessageError` for anything else."""
    kind, fields = _open(line)
    reader = _REPORTS.get(kind)
    if reader is None:
        raise MessageError(f"not a message from the drain process: {kind!r}")
    return reader.read(fields)


def _open(line: str) -> tuple[str, _Fields]:
    try:
        document: Json = json.loads(line)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MessageError("not a JSON object")
    kind = document.get("type")
    if not isinstance(kind, str):
        raise MessageError("a message without a type")
    return kind, _Fields(f"{kind} message", document)


def _json(value: object) -> Json:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{value!r} has no JSON form here")


def _read_setting(settings: _Fields, setting: Setting) -> object:
    """One setting's value from a start message, checked against the setting's kind."""
    if setting.optional and settings.is_null(setting.name):
        return None
    kind = setting.kind
    if kind == "bool":
        return settings.flag(setting.name)
    if kind in ("int", "size"):
        return settings.whole(setting.name)
    if kind == "seconds":
        return settings.number(setting.name)
    text = settings.text(setting.name)
    if kind == "path":
        return Path(text)
    if kind == "choice" and text not in setting.choices:
        raise MessageError(
            f"start message: {setting.name} is {text!r}, not one of {', '.join(setting.choices)}"
        )
    return text
