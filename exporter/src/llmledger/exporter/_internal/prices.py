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

from llmledger.exporter._internal.identifiers import quote_identifier
from llmledger.exporter._internal.store import run_command
from llmledger.instrumentation.pricing import PriceBook, PriceRow, load_price_file

__all__ = ["BookWritten", "price_book", "write_prices"]

_COLUMNS: Final = (
    ("synced_at", "DateTime64(3, 'UTC')"),
    ("provider", "LowCardinality(String)"),
    ("model", "String"),
    ("lookup", "LowCardinality(String)"),
    ("lookups_apart", "Array(LowCardinality(String))"),
    ("prefix", "Bool"),
    ("service_tier", "LowCardinality(String)"),
    ("tiers_apart", "Array(LowCardinality(String))"),
    ("valid_from", "Nullable(Date)"),
    ("valid_until", "Nullable(Date)"),
    ("day_from", "UInt32"),
    ("day_until", "UInt32"),
    ("input_tokens_above", "UInt64"),
    ("input_tokens_up_to", "UInt64"),
    ("input_per_mtok", "Decimal(38, 18)"),
    ("cached_input_per_mtok", "Decimal(38, 18)"),
    ("cache_write_per_mtok", "Decimal(38, 18)"),
    ("output_per_mtok", "Decimal(38, 18)"),
    ("reasoning_per_mtok", "Decimal(38, 18)"),
    ("per_call_usd", "Decimal(38, 18)"),
    ("source", "LowCardinality(String)"),
)
_SCALE: Final = 18
_NO_LIMIT: Final = 2**64 - 1
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
    client: Client,
    database: str,
    rows: Iterable[PriceRow],
    at: datetime | None = None,
    *,
    cluster: str | None = None,
) -> BookWritten:
    """Make ``rows`` the store's price book: written to ``model_prices_next``, then the two
    tables exchanged in one atomic rename, so calls are priced by the old book or the new one,
    never by a mix, and a failed write leaves the old book in force."""
    stamp = (at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    given = list(rows)
    kept = [row for row in given if all(map(_exact, _rates(row)))]
    # A band applies up to the next band's threshold (the app picks the highest one below).
    thresholds: dict[tuple[object, ...], list[int]] = {}
    # Which lookups and tiers have rows of their own: the lookup prefers them (price_match.sql).
    lookups: dict[tuple[str, str], set[str]] = {}
    tiers: dict[tuple[str, str, str], set[str]] = {}
    for row in kept:
        thresholds.setdefault(_band_group(row), []).append(row.rates.input_tokens_above)
        lookups.setdefault((row.provider, row.model), set()).add(row.lookup)
        tiers.setdefault((row.provider, row.model, row.lookup), set()).add(row.service_tier)
    data: list[Sequence[object]] = []
    for row in kept:
        above = row.rates.input_tokens_above
        higher = [t for t in thresholds[_band_group(row)] if t > above]
        data.append(
            (
                stamp,
                row.provider,
                row.model,
                row.lookup,
                sorted(lookups[(row.provider, row.model)] - {"name"}) if row.lookup == "name" else [],
                row.prefix,
                row.service_tier,
                sorted(tiers[(row.provider, row.model, row.lookup)] - {""}) if not row.service_tier else [],
                row.valid_from,
                row.valid_until,
                row.day_from,
                row.day_until,
                above,
                min(higher) if higher else _NO_LIMIT,
                *_rates(row),
                _SOURCES.get(row.source, row.source),
            )
        )
    db = quote_identifier(database, "database name")
    on_cluster = f" ON CLUSTER {quote_identifier(cluster, 'cluster name')}" if cluster else ""
    run_command(client, f"TRUNCATE TABLE IF EXISTS {db}.model_prices_next{on_cluster}")
    if data:
        client.insert(
            "model_prices_next",
            data,
            database=database,
            column_names=[name for name, _ in _COLUMNS],
            column_type_names=[type_name for _, type_name in _COLUMNS],
        )
    run_command(client, f"EXCHANGE TABLES {db}.model_prices AND {db}.model_prices_next{on_cluster}")
    run_command(client, f"TRUNCATE TABLE IF EXISTS {db}.model_prices_next{on_cluster}")
    return BookWritten(
        len(data),
        len({(row.provider, row.model) for row in kept}),
        sum(row.source == "custom" for row in kept),
        len(given) - len(kept),
    )


def _rates(row: PriceRow) -> tuple[Decimal, ...]:
    r = row.rates
    return (r.input, r.cached_input, r.cache_write, r.output, r.reasoning, r.per_call)


def _band_group(row: PriceRow) -> tuple[object, ...]:
    """The rows of one price (one period and time of day): its input-size bands."""
    return (
        row.provider,
        row.model,
        row.lookup,
        row.service_tier,
        row.valid_from,
        row.valid_until,
        row.day_from,
    )
