"""What the receiving process and the drain process say to each other: typed messages, one JSON line each.

The receiving process (:class:`.drain_process.DrainProcess`) writes on the drain process's stdin::

    DrainStart    first line: the whole configuration (the drain reads no default of its own)
    StopRequest   drain for at most ``seconds``, then exit

The drain process (:func:`.drain_process.main`) writes on its stdout::

    DrainStatus   every 0.25 s, and once more after it stopped
    DrainExited   last line: whether the spool was emptied, or why it failed

On the wire each message is a JSON object with a ``"type"`` and its fields, written by
:func:`encode`. :func:`decode_command` and :func:`decode_report` read one line back into
the message, checking every field against the type its dataclass declares (one decoder for
every message, :func:`_decode`); anything else — not JSON, an unknown type, a message
meant for the other direction, a missing or mistyped field — raises :class:`MessageError`,
which the reader logs and goes past (see the two readers).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Final,
    Self,
    TypeAlias,
    TypeVar,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

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
_T = TypeVar("_T")
_S = TypeVar("_S", str, int, float, bool)
_M = TypeVar("_M", bound="_Message")


class MessageError(ValueError):
    """A line that is not a message this side expects (garbled, unknown, or with a bad field)."""


# What each scalar type takes on the wire, and how a refusal names it. JSON has one kind of
# number, and Python's bool is an int: a whole number is an int but not a bool, a number
# any int or float but a bool.
_SCALARS: Final[Mapping[type, tuple[str, Callable[[Json], bool]]]] = {
    str: ("a string", lambda value: isinstance(value, str)),
    int: ("a whole number", lambda value: isinstance(value, int) and not isinstance(value, bool)),
    float: ("a number", lambda value: isinstance(value, int | float) and not isinstance(value, bool)),
    bool: ("true or false", lambda value: isinstance(value, bool)),
}


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

    def scalar(self, name: str, kind: type[_S]) -> _S:
        """The field ``name`` as a ``kind`` (one of :data:`_SCALARS`)."""
        value = self._get(name)
        expected, accepts = _SCALARS[kind]
        if not accepts(value):
            raise self._wrong(name, expected)
        if kind is float:  # a JSON whole number read as a number is made a float: 3 -> 3.0
            value = float(cast(int | float, value))
        return cast(_S, value)

    def object(self, name: str) -> _Fields:
        value = self._get(name)
        if not isinstance(value, dict):
            raise self._wrong(name, "an object")
        return _Fields(f"{self._where}'s {name}", value)

    def counts(self, name: str) -> dict[str, int]:
        inner = self.object(name)
        return {key: inner.scalar(key, int) for key in inner.names()}

    def is_null(self, name: str) -> bool:
        return self._get(name) is None

    def names(self) -> list[str]:
        return list(self._fields)


class _Message:
    """What every message shares: its dataclass fields are its fields on the wire, each read
    back checked against its declared type. A message whose wire form is not its fields
    (:class:`DrainStart`) says so in its own :meth:`fields` and :meth:`read`."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def fields(self) -> dict[str, Json]:
        return _encode_fields(self)

    @classmethod
    def read(cls, fields: _Fields) -> Self:
        return _decode(cls, fields)


# -- receiving process -> drain process ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainStart(_Message):
    """The drain process's configuration: every setting as the receiving process built it."""

    TYPE: ClassVar[str] = "start"
    config: CollectorConfig

    def fields(self) -> dict[str, Json]:
        config = self.config
        settings: dict[str, Json] = {}
        for setting in SETTINGS:
            if setting.name not in _NOT_SENT:
                settings[setting.name] = _encode_value(getattr(config, setting.name))
        return {"settings": settings, "store": _encode_fields(config.store)}

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
        config = CollectorConfig(
            store=_decode(StoreConfig, fields.object("store")),
            **values,  # pyright: ignore[reportArgumentType]  (each checked against its setting's kind)
        )
        return cls(config)


@dataclass(frozen=True, slots=True)
class StopRequest(_Message):
    """Stop: drain for at most ``seconds``, then send the last status and exit."""

    TYPE: ClassVar[str] = "stop"
    seconds: float


# -- drain process -> receiving process ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainStatus(_Message):
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


@dataclass(frozen=True, slots=True)
class DrainExited(_Message):
    """The drain process's last line: whether it emptied the spool, or the error it stopped on."""

    TYPE: ClassVar[str] = "exited"
    drained: bool
    error: str | None = None


Command: TypeAlias = DrainStart | StopRequest
Report: TypeAlias = DrainStatus | DrainExited
_COMMANDS: Final = {kind.TYPE: kind for kind in (DrainStart, StopRequest)}
_REPORTS: Final = {kind.TYPE: kind for kind in (DrainStatus, DrainExited)}


def encode(message: Command | Report) -> str:
    """One line (without its newline) that :func:`decode_command` or :func:`decode_report` reads back."""
    return json.dumps({"type": message.TYPE, **message.fields()})


def decode_command(line: str) -> Command:
    """A message for the drain process; :class:`MessageError` for anything else."""
    return _decode_line(line, _COMMANDS, "not a message for the drain process")


def decode_report(line: str) -> Report:
    """A message from the drain process; :class:`MessageError` for anything else."""
    return _decode_line(line, _REPORTS, "not a message from the drain process")


def _decode_line(line: str, kinds: Mapping[str, type[_M]], unknown: str) -> _M:
    kind, fields = _open(line)
    message = kinds.get(kind)
    if message is None:
        raise MessageError(f"{unknown}: {kind!r}")
    return message.read(fields)


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


def _encode_fields(message: object) -> dict[str, Json]:
    """A dataclass's fields as JSON, by name: what :func:`_decode` reads back."""
    return {item.name: _encode_value(getattr(message, item.name)) for item in dataclasses.fields(message)}  # pyright: ignore[reportArgumentType]  (a dataclass instance)


def _encode_value(value: object) -> Json:
    if isinstance(value, Mapping):
        return {str(key): _encode_value(item) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    if isinstance(value, Path):
        return str(value)
    return _json(value)


def _decode(kind: type[_T], fields: _Fields) -> _T:
    """A dataclass read back from its fields, each checked against the type it declares."""
    values = {name: _decode_value(fields, name, declared) for name, declared in _field_types(kind).items()}
    return kind(**values)


@functools.cache
def _field_types(kind: type[Any]) -> dict[str, object]:
    hints = get_type_hints(kind)
    return {item.name: hints[item.name] for item in dataclasses.fields(kind)}


def _decode_value(fields: _Fields, name: str, declared: object) -> object:
    """One field's value, checked against its declared type (those the messages use)."""
    if isinstance(declared, types.UnionType):
        (present,) = [arg for arg in get_args(declared) if arg is not types.NoneType]
        return None if fields.is_null(name) else _decode_value(fields, name, present)
    if get_origin(declared) is Mapping and get_args(declared) == (str, int):
        return fields.counts(name)
    if isinstance(declared, type) and declared in _SCALARS:
        return fields.scalar(name, declared)
    if declared is Path:
        return Path(fields.scalar(name, str))
    raise TypeError(f"{name}: {declared!r} has no JSON form here")


# The type a setting's value has on the wire, by the setting's kind (any other kind: a string).
_SETTING_TYPES: Final[Mapping[str, type]] = {
    "bool": bool,
    "int": int,
    "size": int,
    "seconds": float,
    "path": Path,
}


def _read_setting(settings: _Fields, setting: Setting) -> object:
    """One setting's value from a start message, checked against the setting's kind."""
    if setting.optional and settings.is_null(setting.name):
        return None
    value = _decode_value(settings, setting.name, _SETTING_TYPES.get(setting.kind, str))
    if setting.kind == "choice" and value not in setting.choices:
        raise MessageError(
            f"start message: {setting.name} is {value!r}, not one of {', '.join(setting.choices)}"
        )
    return value
