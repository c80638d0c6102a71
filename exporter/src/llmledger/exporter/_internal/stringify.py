"""Attribute values as strings, byte for byte as the Collector's ``clickhouse`` exporter writes them.

That exporter stores every attribute in ``Map(LowCardinality(String), String)`` through
pdata's ``Value.AsString()``: strings as they are, bools ``true``/``false``, ints in
decimal, doubles in the ES6 / Go ``encoding/json`` number format (``0.000435``,
``1e-7``, ``1e+21``, ``3``), bytes as standard base64, and arrays and maps as Go
``json.Marshal`` output (compact, HTML characters escaped, map keys sorted). Matching it
exactly means a span lands with the same bytes whichever writer carried it, so the
``llm_calls`` view parses both alike.

One renderer, two entry points: :func:`stringify` for one attribute value, and
:func:`stringify_column` for many (one attribute across a batch of spans, where the loop
stays in C). OTLP protobuf ``AnyValue`` messages are first decoded to the Python value an
SDK attribute would hold (:func:`any_value_raw`), so SDK spans and OTLP requests are
rendered by the same code (:func:`stringify_any_value` is the two steps).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["BY_TYPE", "any_value_raw", "go_float", "stringify", "stringify_any_value", "stringify_column"]

# Go's json encoder escapes these on top of what Python's does (HTML safety, JS line breaks).
_GO_EXTRA_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_NEEDS_GO_ESCAPE: Final = re.compile("[<>&\u2028\u2029]")
_NEEDS_JSON_ESCAPE: Final = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def go_float(value: float) -> str:
    """A double as Go's ``encoding/json`` (and pdata ``AsString``) writes it.

    Shortest round-trip digits; fixed notation for 1e-6 <= |x| < 1e21, otherwise
    exponent notation with no zero-padding of the exponent (``1e-7``, ``1.5e+21``).
    """
    return _go_float_text(repr(value))


def _go_float_text(text: str) -> str:
    """:func:`go_float` from Python's ``repr`` of the double."""
    if "e" not in text:
        # repr uses fixed notation only for 1e-4 <= |x| < 1e16, inside Go's fixed range.
        if text.endswith(".0"):
            return text[:-2]
        if text[-1] in "nf":  # nan, inf, -inf: what pdata returns for values JSON cannot hold
            return "json: unsupported value: " + {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[text]
        return text
    mantissa, _, exponent = text.partition("e")
    exp = int(exponent)
    if -7 < exp < 0:
        # 1e-6 <= |x| < 1e-4, where small costs live: 0.<zeros><digits>.
        sign, digits = ("-", mantissa[1:]) if mantissa[0] == "-" else ("", mantissa)
        return f"{sign}0.{'0' * (-exp - 1)}{digits.replace('.', '')}"
    if 0 <= exp < 21:
        return _fixed(mantissa, exp)
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp)}"


def _fixed(mantissa: str, exponent: int) -> str:
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "")
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_json_string(text: str) -> str:
    encoded = _json_string(text)
    if _NEEDS_GO_ESCAPE.search(text):
        encoded = encoded.translate(_GO_EXTRA_ESCAPES)
    return encoded


def _go_json(value: Any) -> str | None:
    """Go ``json.Marshal`` of a pdata raw value; ``None`` where Go fails (NaN, Inf)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else go_float(value)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, bytes | bytearray):
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    if isinstance(value, Mapping):
        parts: list[str] = []
        for key in sorted(value):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            item = _go_json(value[key])
            if item is None:
                return None
            parts.append(_go_json_string(str(key)) + ":" + item)  # pyright: ignore[reportUnknownArgumentType]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, Sequence):
        items: list[str] = []
        for element in value:  # pyright: ignore[reportUnknownVariableType]
            item = _go_json(element)
            if item is None:
                return None
            items.append(item)
        return "[" + ",".join(items) + "]"
    return _go_json_string(str(value))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _sequence(value: Sequence[Any]) -> str:
    # The common case, a few plain strings (finish reasons), skips the general encoder.
    if value and all(type(item) is str for item in value):
        joined = '","'.join(value)
        if not _NEEDS_JSON_ESCAPE.search(joined):
            return f'["{joined}"]'
    # A failed marshal (NaN in an array) yields "", as pdata ignores the error.
    return _go_json(value) or ""


# Exact types first: one dict lookup instead of an isinstance chain on the hot path.
BY_TYPE: Final[dict[type, Callable[[Any], str]]] = {
    str: str,
    bool: _bool,
    int: int.__repr__,
    float: go_float,
    bytes: _bytes,
    tuple: _sequence,
    list: _sequence,
}


def stringify(value: object) -> str:
    """An OpenTelemetry SDK attribute value as the Collector's exporter stores it."""
    convert = BY_TYPE.get(type(value))
    if convert is not None:
        return convert(value)
    if value is None:
        return ""
    if isinstance(value, str):  # str and int subclasses (enums) by their plain value
        return str.__str__(value)
    if isinstance(value, bool):
        return _bool(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return go_float(float(value))
    if isinstance(value, bytes | bytearray):
        return _bytes(bytes(value))
    return _go_json(value) or ""


_BOOL_TEXT: Final = {True: "true", False: "false"}

Memo = dict[type, dict[Any, str]]
"""Strings already made for ints and floats, by exact type: what :func:`stringify_column`
may share across the columns of one batch, where token counts and prices repeat."""


def stringify_column(values: list[Any], memo: Memo | None = None) -> list[str]:
    """``[stringify(v) for v in values]``, exactly, with no Python call per value in the common cases.

    Meant for one attribute across many spans, where the values share a type. ``values``
    itself is returned when every value is already a string. ``memo`` keeps the strings
    of ints and floats for the next columns (pass the same dict for one batch).
    """
    try:
        "".join(values)  # raises TypeError at the first value that is not a string
    except TypeError:
        pass
    else:
        return values
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is bool:
            return list(map(_BOOL_TEXT.__getitem__, values))
        if kind is int:
            return _memoized(values, _ints, memo.setdefault(int, {}) if memo is not None else {})
        # 0.0 == -0.0 but they print differently, so a column with a zero goes value by value.
        # (NaN needs no care: it is only equal to itself, so each NaN object is its own key.)
        if kind is float:
            if 0.0 in values:
                return _floats(values)
            return _memoized(values, _floats, memo.setdefault(float, {}) if memo is not None else {})
        if kind is tuple:
            return _sequences(values)
    return [value if type(value) is str else stringify(value) for value in values]


def _memoized(
    values: list[Any], convert: Callable[[list[Any]], list[str]], known: dict[Any, str]
) -> list[str]:
    # Only for one exact type, where equal values give equal strings: each distinct value
    # is converted once, then every value is a dict lookup.
    missing = list(set(values).difference(known))
    if missing:
        known.update(zip(missing, convert(missing), strict=True))
    return list(map(known.__getitem__, values))


def _ints(values: list[int]) -> list[str]:
    return list(map(int.__repr__, values))


def _floats(values: list[float]) -> list[str]:
    texts = list(map(float.__repr__, values))
    # repr is already Go's text unless it has an exponent, a ".0" ending, or is nan/inf.
    joined = " ".join(texts) + " "
    if "e" in joined or ".0 " in joined or "n" in joined:
        return [
            _go_float_text(text) if "e" in text or text[-2:] == ".0" or text[-1] in "nf" else text
            for text in texts
        ]
    return texts


def _sequences(values: list[tuple[Any, ...]]) -> list[str]:
    try:
        uniques = set(values)
    except TypeError:  # a map inside: not hashable
        return list(map(stringify, values))
    # Equal tuples of strings print alike; (1,) == (True,) == (1.0,) do not, so only
    # tuples of plain strings share a conversion.
    if 2 * len(uniques) > len(values) or not all(type(item) is str for value in uniques for item in value):
        return list(map(_sequence, values))
    table = {value: _sequence(value) for value in uniques}
    return list(map(table.__getitem__, values))


def _array_raw(value: AnyValue) -> tuple[Any, ...]:
    # A tuple, as the SDK holds a sequence attribute (stringify_column shares equal ones).
    return tuple(map(any_value_raw, value.array_value.values))


def _kvlist_raw(value: AnyValue) -> dict[str, Any]:
    return {kv.key: any_value_raw(kv.value) for kv in value.kvlist_value.values}


def _no_value(value: AnyValue) -> None:
    return None


# The set member's name -> its value; a dict lookup rather than a chain of comparisons.
_RAW_BY_MEMBER: Final[dict[str | None, Callable[[AnyValue], Any]]] = {
    "string_value": attrgetter("string_value"),
    "bool_value": attrgetter("bool_value"),
    "int_value": attrgetter("int_value"),
    "double_value": attrgetter("double_value"),
    "bytes_value": attrgetter("bytes_value"),
    "array_value": _array_raw,
    "kvlist_value": _kvlist_raw,
}


def any_value_raw(value: AnyValue) -> Any:
    """pdata's ``AsRaw`` of an OTLP ``AnyValue``: the Python value an SDK attribute would hold.

    OTLP values are decoded to these and rendered by :func:`stringify`, as SDK values are:
    one renderer, whichever source a value came from.
    """
    return _RAW_BY_MEMBER.get(value.WhichOneof("value"), _no_value)(value)


# A scalar member -> the renderer of the Python type it holds (BY_TYPE's, so an OTLP value and
# the same SDK value print alike): one dict lookup where decoding then dispatching costs two calls.
_RENDER_BY_MEMBER: Final = {
    "int_value": BY_TYPE[int],
    "double_value": BY_TYPE[float],
    "bool_value": BY_TYPE[bool],
    "bytes_value": BY_TYPE[bytes],
    "string_value": BY_TYPE[str],
}


def stringify_any_value(value: AnyValue) -> str:
    """An OTLP protobuf ``AnyValue`` as the Collector's exporter stores it: ``stringify(any_value_raw(value))``."""
    member = value.WhichOneof("value")
    render = _RENDER_BY_MEMBER.get(member)  # pyright: ignore[reportArgumentType]
    if render is not None:
        return render(getattr(value, member))  # pyright: ignore[reportArgumentType]
    return stringify(any_value_raw(value))
