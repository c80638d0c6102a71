"""The user's price file: TOML prices that override or add to genai-prices' data.

A file holds ``[[price]]`` tables, one per (provider, model[, service tier][, valid from]);
rates are USD per million tokens. Everything wrong with a file is reported at once, each
problem naming the file, the line and the field. ``tomllib`` gives no positions, so
:func:`_locate_keys` scans the (already valid) TOML once to map every key path to its line.
See docs/pricing.md for the format.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from genai_prices.data_units import unit_data
from genai_prices.types import ModelPrice, Tier, TieredPrices
from genai_prices.units import UnitRegistry
from genai_prices.validation import validate_priced_units

__all__ = ["CustomPrice", "PriceFileError", "load_price_file", "parse_price_file"]

# Field in the file → genai-prices price key (USD per million of that token class).
PRICE_FIELDS: Mapping[str, str] = {
    "input": "input_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "output": "output_mtok",
    "input_audio": "input_audio_mtok",
    "cached_audio": "cache_audio_read_mtok",
    "output_audio": "output_audio_mtok",
    "input_image": "input_image_mtok",
}
_REQUIRED = ("provider", "model", "input", "output")
_OTHER_FIELDS = ("provider", "model", "service_tier", "valid_from")
_ALLOWED = ", ".join((*_OTHER_FIELDS, *PRICE_FIELDS))
_RATE_HINT = "expected a non-negative number of USD per million tokens"

_registry = UnitRegistry(unit_data)


@dataclass(frozen=True, slots=True)
class CustomPrice:
    """One ``[[price]]`` entry of a user's price file, validated."""

    provider: str
    model: str
    """As written; a trailing ``*`` makes it a prefix (``ft:gpt-4o-mini:acme::*``)."""
    service_tier: str | None
    valid_from: date | None
    prices: ModelPrice
    origin: str
    """``path:line`` of the entry, for explanations."""

    @property
    def is_prefix(self) -> bool:
        return self.model.endswith("*")

    @property
    def match_name(self) -> str:
        """Lower-case model name (prefix without its ``*``), as lookups compare it."""
        return self.model.rstrip("*").lower()


class PriceFileError(ValueError):
    """A price file that cannot be used; ``errors`` lists every problem, one line each."""

    def __init__(self, path: str, errors: Sequence[str]) -> None:
        self.path = path
        self.errors = tuple(errors)
        count = f"{len(self.errors)} problem" + ("s" if len(self.errors) != 1 else "")
        super().__init__(f"price file {path}: {count}:\n  " + "\n  ".join(self.errors))


def load_price_file(path: str | Path) -> tuple[CustomPrice, ...]:
    """Read and validate a price file; raises :class:`PriceFileError` listing every problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceFileError(name, [f"{name}: cannot read the price file: {exc}"]) from None
    return parse_price_file(text, name)


def parse_price_file(text: str, name: str = "<price file>") -> tuple[CustomPrice, ...]:
    try:
        # Decimal, not float: 0.1 must stay 0.1.
        document = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = found.group(1) if found else "1"
        reason = message[: found.start()].strip() if found else message
        raise PriceFileError(name, [f"{name}:{line}: not valid TOML: {reason}"]) from None
    lines = _locate_keys(text)
    return _Validator(name, lines).document(document)


class _Validator:
    def __init__(self, name: str, lines: Mapping[tuple[str | int, ...], int]) -> None:
        self.name = name
        self.lines = lines
        self.errors: list[tuple[int, str]] = []

    def line(self, path: tuple[str | int, ...]) -> int:
        # The longest recorded prefix: a value inside an inline table is on its key's line.
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple[str | int, ...], message: str) -> None:
        line = self.line(path)
        self.errors.append((line, f"{self.name}:{line}: {message}"))

    def document(self, document: Mapping[str, Any]) -> tuple[CustomPrice, ...]:
        for key in document:
            if key != "price":
                self.error((key,), f"unknown top-level key {key!r}: prices go in [[price]] tables")
        entries: Any = document.get("price", [])
        prices: list[CustomPrice] = []
        if not isinstance(entries, list):
            self.error(("price",), "'price' must be an array of tables: write each entry as [[price]]")
        else:
            seen: dict[tuple[str, str, str | None, date | None], int] = {}
            for index, entry in enumerate(cast(list[Any], entries)):
                price = self.entry(index, entry)
                if price is None:
                    continue
                key = (price.provider, price.model.lower(), price.service_tier, price.valid_from)
                if key in seen:
                    self.error(
                        ("price", index),
                        f"[[price]] #{index + 1}: duplicates [[price]] #{seen[key] + 1} (same provider, "
                        "model, service_tier and valid_from)",
                    )
                else:
                    seen[key] = index
                    prices.append(price)
        if self.errors:
            # In file order, however the checks ran.
            raise PriceFileError(
                self.name, [message for _, message in sorted(self.errors, key=lambda e: e[0])]
            )
        return tuple(prices)

    def entry(self, index: int, entry: Any) -> CustomPrice | None:
        at = ("price", index)
        label = f"[[price]] #{index + 1}"
        if not isinstance(entry, dict):
            self.error(at, f"{label}: expected a table")
            return None
        fields = cast(dict[str, Any], entry)
        before = len(self.errors)
        for field in fields:
            if field not in PRICE_FIELDS and field not in _OTHER_FIELDS:
                self.error((*at, field), f"{label}: unknown field {field!r} (known fields: {_ALLOWED})")
        for field in _REQUIRED:
            if field not in fields:
                hint = " (write output = 0 for embeddings)" if field == "output" else ""
                self.error(at, f"{label}: missing required field {field!r}{hint}")
        provider = self.text(fields, "provider", at, label)
        model = self.text(fields, "model", at, label)
        if model is not None and "*" in model.rstrip("*"):
            self.error((*at, "model"), f"{label}: field 'model': '*' may only end the name (a prefix match)")
        tier = self.text(fields, "service_tier", at, label)
        tier = tier.lower() if tier is not None else None
        valid_from = fields.get("valid_from")
        if valid_from is not None and (isinstance(valid_from, datetime) or not isinstance(valid_from, date)):
            self.error(
                (*at, "valid_from"),
                f"{label}: field 'valid_from': expected a date like 2026-01-01, got {_shown(valid_from)}",
            )
            valid_from = None
        rates: dict[str, Decimal | TieredPrices] = {}
        for field, price_key in PRICE_FIELDS.items():
            if field in fields:
                rate = self.rate(fields[field], (*at, field), f"{label}: field {field!r}")
                if rate is not None:
                    rates[price_key] = rate
        if len(self.errors) == before and rates:
            try:
                validate_priced_units([_registry.unit_for_price_key(key) for key in rates], _registry)
            except ValueError as exc:
                self.error(at, f"{label}: these rates cannot be combined: {_in_file_terms(str(exc))}")
        if len(self.errors) > before or provider is None or model is None:
            return None
        return CustomPrice(
            provider=provider,
            model=model,
            service_tier=tier,
            valid_from=valid_from,
            prices=ModelPrice(**rates),
            origin=f"{self.name}:{self.line(at)}",
        )

    def text(
        self, fields: Mapping[str, Any], field: str, at: tuple[str | int, ...], label: str
    ) -> str | None:
        value = fields.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(
                (*at, field), f"{label}: field {field!r}: expected a non-empty string, got {_shown(value)}"
            )
            return None
        return value.strip()

    def rate(self, value: Any, path: tuple[str | int, ...], label: str) -> Decimal | TieredPrices | None:
        if isinstance(value, dict):
            return self.tiered(cast(dict[str, Any], value), path, label)
        amount = _decimal(value)
        if amount is None:
            self.error(path, f"{label}: {_RATE_HINT}, got {_shown(value)}")
        return amount

    def tiered(self, value: dict[str, Any], path: tuple[str | int, ...], label: str) -> TieredPrices | None:
        """``{ base = 2.5, tiers = [{ start = 272000, price = 5 }] }``: long-context rates."""
        before = len(self.errors)
        for key in value:
            if key not in ("base", "tiers"):
                self.error(path, f"{label}: unknown key {key!r} in tiered rate (expected base, tiers)")
        base = _decimal(value.get("base"))
        if base is None:
            self.error(
                (*path, "base"),
                f"{label}: tiered rate needs 'base', {_RATE_HINT}, got {_shown(value.get('base'))}",
            )
        raw_tiers: Any = value.get("tiers")
        tiers: list[Tier] = []
        if not isinstance(raw_tiers, list) or not raw_tiers:
            self.error(
                (*path, "tiers"),
                f"{label}: tiered rate needs 'tiers', a non-empty list of {{ start, price }}",
            )
        else:
            for position, raw in enumerate(cast(list[Any], raw_tiers)):
                tier_label = f"{label}: tiers[{position}]"
                at = (*path, "tiers", position)
                if not isinstance(raw, dict) or set(cast(dict[str, Any], raw)) != {"start", "price"}:
                    self.error(at, f"{tier_label}: expected {{ start = <input tokens>, price = <rate> }}")
                    continue
                tier = cast(dict[str, Any], raw)
                start, price = tier["start"], _decimal(tier["price"])
                if type(start) is not int or start < 0:
                    self.error(
                        at, f"{tier_label}.start: expected a non-negative whole number of input tokens"
                    )
                elif tiers and start <= tiers[-1].start:
                    self.error(at, f"{tier_label}.start: tiers must be in increasing order of start")
                if price is None:
                    self.error(at, f"{tier_label}.price: {_RATE_HINT}, got {_shown(tier['price'])}")
                if len(self.errors) == before:
                    tiers.append(Tier(start=cast(int, start), price=cast(Decimal, price)))
        if len(self.errors) > before or base is None:
            return None
        return TieredPrices(base=base, tiers=tiers)


def _in_file_terms(message: str) -> str:
    """genai-prices' validation message with usage keys spelled as this file's fields."""
    for field, price_key in PRICE_FIELDS.items():
        usage_key = _registry.unit_for_price_key(price_key).usage_key
        message = re.sub(rf"\b{usage_key}\b", field, message)
    return message


def _decimal(value: Any) -> Decimal | None:
    """A finite non-negative Decimal from a TOML number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return amount


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


# --- key → line -------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _locate_keys(text: str) -> dict[tuple[str | int, ...], int]:
    """Line (1-based) of every table header and key, by key path (array-of-tables as indices).

    Only called on text ``tomllib`` accepted, so it can trust the structure: it tracks table
    headers, dotted keys, and skips values (strings of all four kinds, multi-line arrays,
    inline tables, comments) to find where the next statement starts.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    arrays: dict[tuple[str | int, ...], int] = {}  # array-of-tables path → last index
    table: tuple[str | int, ...] = ()
    scanner = _Scanner(text)
    while scanner.skip_blank():
        line = scanner.line
        if scanner.peek("[["):
            scanner.pos += 2
            keys = scanner.keys("]]")
            parent = _resolve(tuple(keys[:-1]), arrays)
            path = (*parent, keys[-1])
            arrays[path] = arrays.get(path, -1) + 1
            table = (*path, arrays[path])
        elif scanner.peek("["):
            scanner.pos += 1
            table = _resolve(tuple(scanner.keys("]")), arrays)
        else:
            keys = scanner.keys("=")
            for depth in range(1, len(keys) + 1):  # ``a.b = 1`` also defines ``a`` here
                lines.setdefault((*table, *keys[:depth]), line)
            scanner.skip_value()
            continue
        lines.setdefault(table, line)
    return lines


def _resolve(keys: tuple[str, ...], arrays: Mapping[tuple[str | int, ...], int]) -> tuple[str | int, ...]:
    """``[a.b]`` inside an array of tables ``a`` means ``a[last].b``."""
    path: tuple[str | int, ...] = ()
    for key in keys:
        path = (*path, key)
        if path in arrays:
            path = (*path, arrays[path])
    return path


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def advance(self, count: int = 1) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + count)
        self.pos += count

    def skip_blank(self) -> bool:
        """Skip whitespace, newlines and comments; False at the end of the text."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n":
                self.advance()
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return True
        return False

    def keys(self, end: str) -> list[str]:
        """A dotted key up to ``end`` (``=``, ``]`` or ``]]``), consuming ``end``."""
        keys: list[str] = []
        while True:
            self.skip_inline_space()
            if self.peek(end):
                self.advance(len(end))
                return keys
            if self.peek("."):
                self.advance()
            elif self.peek('"') or self.peek("'"):
                keys.append(self.string())
            else:
                found = _BARE_KEY.match(self.text, self.pos)
                if found is None:  # pragma: no cover - tomllib accepted the text
                    raise ValueError(f"unexpected character at line {self.line}")
                keys.append(found.group())
                self.pos = found.end()

    def skip_inline_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def string(self) -> str:
        """A quoted string (any of TOML's four kinds); returns its raw content."""
        quote = self.text[self.pos]
        delimiter = quote * 3 if self.peek(quote * 3) else quote
        self.advance(len(delimiter))
        start = self.pos
        while not self.peek(delimiter):
            self.advance(2 if quote == '"' and self.peek("\\") else 1)
        # A multi-line string may end with up to two extra quotes before its delimiter.
        while len(delimiter) == 3 and self.text.startswith(delimiter, self.pos + 1):
            self.advance()
        content = self.text[start : self.pos]
        self.advance(len(delimiter))
        return content

    def skip_value(self) -> None:
        depth = 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in "\"'":
                self.string()
                continue
            if char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
                continue
            if char == "\n" and depth == 0:
                return
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            self.advance()
