"""The store's copy of the app's price book: what ``llmledger prices sync`` writes to ``model_prices``.

The rows are :meth:`llmledger.instrumentation.pricing.PriceBook.price_rows`: genai-prices'
bundled data and the user's price file, resolved by the instrumentation's own lookup, with
every dimension it prices by (service tier, date, time of day, input thresholds, cache reads
and writes, reasoning, per-call fees). The ``llm_calls`` view prices spans that arrive
without a cost from them (schema/expressions/price_index.sql), so the store charges what the
app charges. Only the bundled data is read: genai-prices' ``UpdatePrices`` thread is never
started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.store import run_command
from llmledger.instrumentation.pricing import PriceBook, PriceRow, load_price_file

__all__ = ["BookWritten", "price_book", "write_prices"]

_COLUMNS: Final = (
    ("synced_at", "DateTime64(3, 'UTC')"),
    ("provider", "LowCardinality(String)"),
    ("model", "String"),
    ("lookup", "LowCardinality(String)"),
    ("prefix", "Bool"),
    ("service_tier", "LowCardinality(String)"),
    ("valid_from", "Nullable(Date)"),
    ("valid_until", "Nullable(Date)"),
    ("day_from", "UInt32"),
    ("day_until", "UInt32"),
    ("input_tokens_above", "UInt64"),
    ("input_per_mtok", "Decimal(38, 18)"),
    ("cached_input_per_mtok", "Decimal(38, 18)"),
    ("cache_write_per_mtok", "Decimal(38, 18)"),
    ("output_per_mtok", "Decimal(38, 18)"),
    ("reasoning_per_mtok", "Decimal(38, 18)"),
    ("per_call_usd", "Decimal(38, 18)"),
    ("source", "LowCardinality(String)"),
)
_SCALE: Final = 18
# The store's names for a price's source (cost_source says `model_prices:<source>`).
_SOURCES: Final = {"price_table": "genai-prices", "custom": "custom"}


def price_book(
    price_file: str | Path | None,
    *,
    genai_prices: bool = True,
    azure_deployments: Mapping[str, str] | None = None,
) -> PriceBook:
    """The book the app compiles from the same inputs; raises ``PriceFileError`` for a bad file."""
    custom = load_price_file(price_file) if price_file is not None else ()
    return PriceBook(custom, azure_deployments=azure_deployments, providers=None if genai_prices else [])


@dataclass(frozen=True, slots=True)
class BookWritten:
    """What one sync wrote."""

    rows: int
    models: int
    """Distinct (provider, model) names priced."""
    custom: int
    """Rows from the price file."""
    skipped: int
    """Rows left out because a rate has more than 18 decimals (the store could not hold it exactly):
    their calls stay unpriced in the store rather than priced wrong."""


def _exact(value: Decimal) -> bool:
    exponent = value.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -_SCALE


def write_prices(
    client: Client, database: str, rows: Iterable[PriceRow], at: datetime | None = None
) -> BookWritten:
    """Write ``rows`` as the store's price book, in one insert (the lookup reads the newest book,
    so it switches at once), then drop the older books."""
    stamp = (at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    data: list[Sequence[object]] = []
    models: set[tuple[str, str]] = set()
    custom = skipped = 0
    for row in rows:
        rates = row.rates
        values = (
            rates.input,
            rates.cached_input,
            rates.cache_write,
            rates.output,
            rates.reasoning,
            rates.per_call,
        )
        if not all(map(_exact, values)):
            skipped += 1
            continue
        data.append(
            (
                stamp,
                row.provider,
                row.model,
                row.lookup,
                row.prefix,
                row.service_tier,
                row.valid_from,
                row.valid_until,
                row.day_from,
                row.day_until,
                rates.input_tokens_above,
                *values,
                _SOURCES.get(row.source, row.source),
            )
        )
        models.add((row.provider, row.model))
        custom += row.source == "custom"
    if data:
        client.insert(
            "model_prices",
            data,
            database=database,
            column_names=[name for name, _ in _COLUMNS],
            column_type_names=[type_name for _, type_name in _COLUMNS],
            settings={"max_insert_block_size": max(len(data), 1_048_576)},
        )
        run_command(
            client,
            f"ALTER TABLE `{database}`.model_prices DELETE WHERE synced_at < {{stamp:DateTime64(3)}}",
            parameters={"stamp": stamp},
        )
    return BookWritten(len(data), len(models), custom, skipped)
