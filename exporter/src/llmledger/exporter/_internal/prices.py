"""Prices as data: genai-prices' bundled snapshot and the user's price file, as ``model_prices`` rows.

The ``llm_calls`` view prices spans that arrive without ``gen_ai.usage.cost`` by an exact
(provider, model) lookup in ``model_prices``, falling back to the model name without a
date suffix. So each genai-prices model contributes its id and every exact name its match
rule lists; prefix rules contribute the prefix itself. Regex and substring rules cannot
be expressed as an exact lookup and are skipped (those spans stay unpriced, never 0).

Only the bundled snapshot is read: genai-prices' background ``UpdatePrices`` thread is
never started. Rates are flat USD per million tokens; for tiered prices the base tier is
stored (a call past a tier threshold is under-priced here; the instrumentation, which
sees the request, prices tiers exactly).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from clickhouse_connect.driver.client import Client
from genai_prices import data as genai_data
from genai_prices.types import ClauseEquals, ClauseOr, ClauseStartsWith, ModelInfo, ModelPrice, TieredPrices

from llmledger.instrumentation.pricing import PROVIDER_IDS, provider_name

__all__ = ["PriceRow", "genai_price_rows", "price_file_rows", "price_provider", "write_prices"]


_COLUMNS: Final = (
    ("provider", "LowCardinality(String)"),
    ("model", "String"),
    ("input_per_mtok", "Decimal(38, 12)"),
    ("cached_input_per_mtok", "Nullable(Decimal(38, 12))"),
    ("cache_write_per_mtok", "Nullable(Decimal(38, 12))"),
    ("output_per_mtok", "Decimal(38, 12)"),
    ("source", "LowCardinality(String)"),
    ("updated_at", "DateTime64(3, 'UTC')"),
)


def price_provider(provider: str) -> str:
    """The genai-prices provider id for a ``gen_ai.provider.name`` (or an alias of one, or an id already):
    the app's provider map, the one the llm_calls view is rendered with."""
    name = provider_name(provider)
    return PROVIDER_IDS.get(name, name)


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One ``model_prices`` row: USD per million tokens for a (provider, model)."""

    provider: str
    model: str
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    output_per_mtok: Decimal
    source: str
    cache_write_per_mtok: Decimal | None = None
    """Writing to the prompt cache (Anthropic's cache creation); None: priced as plain input."""


def _flat(price: Decimal | TieredPrices | None) -> Decimal | None:
    if isinstance(price, TieredPrices):
        return price.base
    return price


def _match_names(model: ModelInfo) -> Iterator[str]:
    yield model.id
    pending: list[Any] = [model.match]
    while pending:
        clause = pending.pop()
        if isinstance(clause, ClauseOr):
            pending.extend(clause.or_)
        elif isinstance(clause, ClauseEquals):
            yield clause.equals
        elif isinstance(clause, ClauseStartsWith):
            yield clause.starts_with.rstrip("-")


def _row(provider: str, model: str, prices: ModelPrice, source: str) -> PriceRow | None:
    input_price = _flat(getattr(prices, "input_mtok", None))
    output_price = _flat(getattr(prices, "output_mtok", None))
    if input_price is None and output_price is None:
        return None  # priced per request, image or second: nothing a token count can use
    return PriceRow(
        provider=provider,
        model=model.lower(),
        input_per_mtok=input_price or Decimal(0),
        cached_input_per_mtok=_flat(getattr(prices, "cache_read_mtok", None)),
        output_per_mtok=output_price or Decimal(0),
        source=source,
        cache_write_per_mtok=_flat(getattr(prices, "cache_write_mtok", None)),
    )


def genai_price_rows(at: datetime | None = None) -> list[PriceRow]:
    """Rows for every token-priced model in genai-prices' bundled data, at the prices valid ``at``."""
    when = at or datetime.now(UTC)
    rows: dict[tuple[str, str], PriceRow] = {}
    for provider in genai_data.providers:
        for model in provider.models:
            prices = model.get_prices(when)
            for name in _match_names(model):
                row = _row(provider.id, name, prices, "genai-prices")
                if row is not None:
                    rows.setdefault((row.provider, row.model), row)
    return list(rows.values())


def price_file_rows(path: str | Path, at: datetime | None = None) -> list[PriceRow]:
    """Rows from the user's TOML price file (the format of docs/pricing.md), at the prices valid ``at``.

    Entries for a specific service tier are skipped (spans are priced at the standard
    tier here), as are prefix entries (``model = "ft:…*"``), which need a pattern match.
    """
    # The parser and its validation live with the instrumentation, which reads the same file.
    from llmledger.instrumentation.pricing import load_price_file

    today = (at or datetime.now(UTC)).date()
    chosen: dict[tuple[str, str], tuple[Any, PriceRow]] = {}
    for entry in load_price_file(path):
        if entry.service_tier is not None or entry.is_prefix:
            continue
        if entry.valid_from is not None and entry.valid_from > today:
            continue
        row = _row(price_provider(entry.provider), entry.model, entry.prices, "custom")
        if row is None:
            continue
        key = (row.provider, row.model)
        since = entry.valid_from or datetime.min.date()
        if key not in chosen or chosen[key][0] <= since:
            chosen[key] = (since, row)
    return [row for _, row in chosen.values()]


def write_prices(client: Client, database: str, rows: Iterable[PriceRow], at: datetime | None = None) -> int:
    """Insert ``rows`` into ``model_prices`` in one batch; return how many were written."""
    stamp = (at or datetime.now(UTC)).replace(tzinfo=None)
    data = [
        (
            r.provider,
            r.model,
            r.input_per_mtok,
            r.cached_input_per_mtok,
            r.cache_write_per_mtok,
            r.output_per_mtok,
            r.source,
            stamp,
        )
        for r in rows
    ]
    if data:
        client.insert(
            "model_prices",
            data,
            database=database,
            column_names=[name for name, _ in _COLUMNS],
            column_type_names=[type_name for _, type_name in _COLUMNS],
        )
    return len(data)
