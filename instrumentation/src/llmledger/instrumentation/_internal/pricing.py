"""Exact USD cost of one call: (provider, model, service tier, time, tokens) → :class:`CallCost`.

Prices come from the user's price file and from genai-prices' *bundled* data (its update
thread is never started). Working out which price applies — model matching, conditional
prices by date or time of day, service-tier variants, provider fallbacks — is slow, so it
happens once per (provider, model, tier) and time cell, and the price found is compiled
into integer coefficients per token field. Pricing a call is then a few integer
multiply-adds: money stays exact (integers of ``10**-scale`` USD, made Decimal at the end)
whatever decimal context the application has set.

What other packages use of it is re-exported, with a few helpers, by the public
``llmledger.instrumentation.pricing``: that module's ``__all__`` is the one list of it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from fractions import Fraction
from itertools import pairwise
from operator import attrgetter, mul
from pathlib import Path

import genai_prices
from genai_prices.data import providers as bundled_providers
from genai_prices.data_snapshot import find_provider_by_id
from genai_prices.data_units import unit_data
from genai_prices.types import (
    ClauseContains,
    ClauseEndsWith,
    ClauseEquals,
    ClauseOr,
    ClauseRegex,
    ClauseStartsWith,
    ConditionalPrice,
    MatchLogic,
    ModelInfo,
    ModelPrice,
    PriceContext,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)
from genai_prices.units import UnitDef, UnitRegistry
from genai_prices.validation import validate_priced_units

from llmledger.instrumentation._internal.price_file import CustomPrice, load_price_file
from llmledger.instrumentation._internal.usage import TokenUsage

logger = logging.getLogger("llmledger.instrumentation")

# Semantic-convention ``gen_ai.provider.name`` → genai-prices provider id. Names not listed
# are tried as genai-prices ids as they are.
PROVIDER_IDS: Mapping[str, str] = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "groq": "groq",
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
}

# Provider names other instrumentations write (older semconv ``gen_ai.system`` values,
# OpenLLMetry, OpenLIT, OpenInference's ``llm.provider``/``llm.system``) → the semantic-
# convention ``gen_ai.provider.name``. Lower-case keys; names not listed are kept as they are.
# The store's llm_calls view is rendered from this map, so both read spans the same way.
PROVIDER_ALIASES: Mapping[str, str] = {
    "az.ai.openai": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gen_ai",
    "bedrock": "aws.bedrock",
    "aws": "aws.bedrock",
    "xai": "x_ai",
    "x-ai": "x_ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
}

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_REGISTRY = UnitRegistry(unit_data)
_ZERO = Decimal(0)
_multiply = _EXACT.multiply  # exact: the context has the maximum precision
_CACHE_LIMIT = 10_000
# How the store looks a response model up (PriceRow.lookup): the name as listed; an unlisted
# dated snapshot of it; the same with a compact date; an unlisted longer name (for names a
# prefix rule uses). The app prices the last three by what it finds for them (a rule, the
# snapshot fallback, or nothing), found here for a representative name.
_LOOKUPS = (("name", ""), ("dated", "-2099-01-01"), ("compact", "-20990101"), ("prefix", "x"))
_SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")

# TokenUsage field → genai-prices usage key. Cost is linear in these, in this order.
_INPUT_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("cached_input_tokens", "cache_read_tokens"),
    ("cache_write_tokens", "cache_write_tokens"),
    ("input_audio_tokens", "input_audio_tokens"),
    ("cached_audio_tokens", "cache_audio_read_tokens"),
    ("input_image_tokens", "input_image_tokens"),
)
_OUTPUT_FIELDS = (
    ("output_tokens", "output_tokens"),
    ("reasoning_tokens", "output_reasoning_tokens"),
    ("output_audio_tokens", "output_audio_tokens"),
)
_FIELD_INDEX = {usage_key: index for index, (_, usage_key) in enumerate(_INPUT_FIELDS + _OUTPUT_FIELDS)}
_usage_values = attrgetter(*(name for name, _ in _INPUT_FIELDS + _OUTPUT_FIELDS))
_N_INPUT = len(_INPUT_FIELDS)
_N_FIELDS = _N_INPUT + len(_OUTPUT_FIELDS)


@dataclass(frozen=True, slots=True)
class CallCost:
    """USD cost of one call, exact."""

    total: Decimal
    """``input + output``, plus a per-request fee for the few models that charge one."""
    input: Decimal
    """Input tokens, cached input at its own rate included."""
    output: Decimal
    """Output tokens, reasoning included."""
    source: str
    """``price_table`` (genai-prices data), ``custom`` (the user's price file) or ``provider``."""


@dataclass(frozen=True, slots=True)
class RateBand:
    """Effective USD per million tokens of each token class, for inputs above ``input_tokens_above``.

    Effective: a class the price data does not price separately costs what its parent costs
    (cached input without a cache rate is plain input).
    """

    input_tokens_above: int
    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    input_audio: Decimal
    output_audio: Decimal
    input_image: Decimal
    reasoning: Decimal = _ZERO
    """Reasoning output (a part of output); the output rate unless the data prices it apart."""
    per_call: Decimal = _ZERO
    """USD per request, charged once per call whatever its tokens (a few models have one)."""


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One row of the compiled price book as the store holds it (``model_prices``).

    Resolved by the app's own lookup, so a row says what :meth:`PriceBook.price_call` charges:
    calls of ``provider`` reporting ``model`` on ``service_tier``, made in the UTC days
    ``[valid_from, valid_until)`` and the UTC seconds of the day ``[day_from, day_until)``,
    with more than ``rates.input_tokens_above`` input tokens (the row with the highest
    threshold below a call's input applies to all its tokens). Where no row applies, the
    app prices nothing either.
    """

    provider: str
    """``gen_ai.provider.name`` of the calls, as the store's ``llm_calls`` spells it."""
    model: str
    """Response model as listed by the price data or the price file, lower case."""
    lookup: str
    """``name``: calls reporting ``model`` itself. ``dated`` and ``compact``: calls reporting a
    snapshot of it that nothing lists (``gpt-4o-2099-01-01``, ``gpt-4o-20990101``); ``prefix``:
    calls reporting a longer name nothing lists, where ``prefix`` is set. Priced by what the
    app finds for such a name (a genai-prices rule, its snapshot fallback, nothing); present
    only where that differs from the default (as the name; ``compact``: not priced). A row
    whose period is empty (``valid_from == valid_until``) says "not priced"."""
    service_tier: str
    """A tier with prices of its own (lower case), or ``""``: every other tier and none."""
    valid_from: date | None
    valid_until: date | None
    day_from: int
    day_until: int
    rates: RateBand
    source: str
    """``custom`` (the price file) or ``price_table`` (genai-prices' data)."""
    prefix: bool = False
    """A rule matches names that start with ``model`` (genai-prices' prefix rules, the price
    file's ``*`` entries): an unlisted name is priced by the ``prefix`` rows of the longest
    such ``model`` it starts with."""


@dataclass(frozen=True, slots=True)
class PriceExplanation:
    """Which price applies to a call and why (``llmledger prices show``)."""

    provider: str
    model: str
    service_tier: str | None
    at: datetime
    source: str | None
    """``None`` when the call cannot be priced."""
    steps: tuple[str, ...]
    bands: tuple[RateBand, ...]
    valid_from: date | None
    valid_until: date | None

    def __str__(self) -> str:
        tier = f" (service tier {self.service_tier})" if self.service_tier else ""
        lines = [f"{self.provider} / {self.model}{tier} at {self.at.isoformat()}"]
        lines += [f"  - {step}" for step in self.steps]
        if self.source is None:
            lines.append("  => not priced: calls get no cost (never $0)")
            return "\n".join(lines)
        period = f"from {self.valid_from or 'the start'} until {self.valid_until or 'further notice'}"
        lines.append(f"  => source {self.source}, in effect {period}; USD per million tokens:")
        for band in self.bands:
            above = f"input > {band.input_tokens_above:,} tokens" if band.input_tokens_above else "base"
            lines.append(
                f"     {above}: input {band.input}, cached input {band.cached_input}, "
                f"cache write {band.cache_write}, output {band.output}, input audio {band.input_audio}, "
                f"output audio {band.output_audio}, input image {band.input_image}"
            )
        return "\n".join(lines)


# --- compiled prices (the hot path) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Band:
    above: int
    input: tuple[int, ...]
    """Coefficient per usage field (all of them: output fields are 0 here)."""
    output: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A ModelPrice as integer coefficients: cost = sum of coefficient * field, in 10**-scale USD."""

    scale: int
    bands: tuple[_Band, ...]
    """Ascending ``above``; the first is -1 (applies to any input size)."""
    per_call: int
    checks: tuple[tuple[int, ...], ...]
    """Token counts each priced share of a total must not exceed, as ``sum(coefficient * field) >= 0``."""
    unit: Decimal = field(init=False)
    """``10**-scale`` USD: one integer sub-unit."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", Decimal(1).scaleb(-self.scale, _EXACT))

    def cost(self, usage: TokenUsage, source: str) -> CallCost | None:
        """Cost of ``usage``, whose input and output totals are known; None if its counts do not add up."""
        values: tuple[int, ...] = _usage_values(usage)
        input_tokens = values[0]
        if min(values) < 0:
            return None
        for check in self.checks:
            if sum(map(mul, check, values)) < 0:
                return None
        bands = self.bands
        band = bands[0]
        if len(bands) > 1:
            for candidate in reversed(bands):
                if input_tokens > candidate.above:
                    band = candidate
                    break
        input_units = sum(map(mul, band.input, values))
        output_units = sum(map(mul, band.output, values))
        unit = self.unit
        return CallCost(
            _multiply(input_units + output_units + self.per_call, unit),
            _multiply(input_units, unit) if input_units else _ZERO,
            _multiply(output_units, unit) if output_units else _ZERO,
            source,
        )

    def rate_bands(self) -> tuple[RateBand, ...]:
        def per_mtok(units: int) -> Decimal:
            amount = Decimal(units).scaleb(6 - self.scale, _EXACT).normalize(_EXACT)
            # normalize() writes 10 as 1E+1; keep whole numbers plain.
            return (
                amount.quantize(Decimal(1), context=_EXACT)
                if amount == amount.to_integral_value()
                else amount
            )

        result: list[RateBand] = []
        for band in self.bands:
            i, o = band.input, band.output[_N_INPUT:]
            result.append(
                RateBand(
                    input_tokens_above=max(band.above, 0),
                    input=per_mtok(i[0]),
                    cached_input=per_mtok(i[0] + i[1]),
                    cache_write=per_mtok(i[0] + i[2]),
                    output=per_mtok(o[0]),
                    input_audio=per_mtok(i[0] + i[3]),
                    output_audio=per_mtok(o[0] + o[2]),
                    input_image=per_mtok(i[0] + i[5]),
                    reasoning=per_mtok(o[0] + o[1]),
                    per_call=Decimal(self.per_call).scaleb(-self.scale, _EXACT).normalize(_EXACT)
                    if self.per_call
                    else _ZERO,
                )
            )
        return tuple(result)


class _Unpriceable(Exception):
    """A price that exists but cannot be applied to token counts."""


def _compile(price: ModelPrice) -> _Compiled:
    priced: list[tuple[UnitDef, Decimal | TieredPrices]] = []
    for key, value in vars(price).items():
        if key.startswith("_") or value is None:
            continue
        try:
            priced.append((_REGISTRY.unit_for_price_key(key), value))
        except KeyError:
            raise _Unpriceable(f"unknown price key {key!r}") from None
    try:
        validate_priced_units([unit for unit, _ in priced], _REGISTRY)
    except ValueError as exc:
        raise _Unpriceable(f"inconsistent price data: {exc}") from None
    tokens = sorted(
        ((unit, value) for unit, value in priced if unit.dimensions.get("family") == "tokens"),
        key=lambda item: (-len(item[0].dimensions), item[0].usage_key),
    )
    if not tokens:
        units = ", ".join(sorted(unit.price_key for unit, _ in priced)) or "nothing"
        raise _Unpriceable(f"priced per {units}, not per token")
    per_request = [(unit, value) for unit, value in priced if unit.usage_key == "requests"]

    # Each priced unit is billed for its *leaf* count: its tokens minus those of more
    # specific priced units (genai-prices' decomposition), a linear form over our fields.
    leaves: dict[str, list[int]] = {}
    checks: list[tuple[int, ...]] = []
    for unit, _ in tokens:
        leaf = [0] * _N_FIELDS
        if (index := _FIELD_INDEX.get(unit.usage_key)) is not None:
            leaf[index] = 1
        has_descendants = False
        for other, _ in tokens:
            if other is not unit and unit.dimensions.items() <= other.dimensions.items():
                has_descendants = True
                leaf = [a - b for a, b in zip(leaf, leaves[other.usage_key], strict=True)]
        leaves[unit.usage_key] = leaf
        if has_descendants:
            checks.append(tuple(leaf))

    starts = sorted(
        {tier.start for _, value in tokens if isinstance(value, TieredPrices) for tier in value.tiers}
    )
    aboves = [-1, *starts]

    def rate_at(value: Decimal | TieredPrices, above: int) -> Decimal:
        if not isinstance(value, TieredPrices):
            return value
        applicable = value.base
        for tier in value.tiers:
            if tier.start <= above:
                applicable = tier.price
        return applicable

    per_token = [
        [(unit, Fraction(rate_at(value, above)) / unit.per) for unit, value in tokens] for above in aboves
    ]
    fixed = sum(
        (Fraction(value) / unit.per for unit, value in per_request if isinstance(value, Decimal)), Fraction(0)
    )
    fractions = [rate for band in per_token for _, rate in band] + [fixed]
    scale = 0
    while any((rate * 10**scale).denominator != 1 for rate in fractions):
        scale += 1
        if scale > 60:  # only a unit counted per 60 or 3600 (never a token) could get here
            raise _Unpriceable("a rate is not a whole number of any decimal sub-unit of USD")
    bands: list[_Band] = []
    for above, band in zip(aboves, per_token, strict=True):
        coefficients = [0] * _N_FIELDS
        for unit, rate in band:
            units = int(rate * 10**scale)
            coefficients = [
                c + units * leaf for c, leaf in zip(coefficients, leaves[unit.usage_key], strict=True)
            ]
        no_output = [0] * (_N_FIELDS - _N_INPUT)
        bands.append(
            _Band(above, (*coefficients[:_N_INPUT], *no_output), (*[0] * _N_INPUT, *coefficients[_N_INPUT:]))
        )
    return _Compiled(scale, tuple(bands), int(fixed * 10**scale), tuple(checks))


# --- resolution: which price applies ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """The price in effect for one (provider, model, tier) within one time cell."""

    compiled: _Compiled | None
    source: str
    """Empty when ``compiled`` is None."""
    steps: tuple[str, ...]
    valid_from: date | None
    valid_until: date | None


@dataclass(frozen=True, slots=True)
class _BundledMatch:
    provider: Provider
    model: ModelInfo
    context: PriceContext | None
    steps: tuple[str, ...]


@dataclass(slots=True)
class _Resolution:
    """Everything that can price one (provider, model, tier), with the times where it changes."""

    custom: tuple[tuple[CustomPrice, ...], ...]
    """Candidate custom schedules, most specific first; each sorted by ``valid_from``."""
    bundled: _BundledMatch | None
    steps: tuple[str, ...]
    date_bounds: tuple[float, ...]
    """UTC-midnight timestamps where a price starts."""
    day_bounds: tuple[float, ...]
    """Seconds after UTC midnight where a time-of-day price starts or ends."""
    cells: dict[tuple[int, int], _Plan] = field(default_factory=dict[tuple[int, int], _Plan])
    static: _Plan | None = None
    recent: tuple[float, float, _Plan | None] = (0.0, 0.0, None)
    """(from, until, plan) of the date cell last used: one tuple, so threads see it whole."""

    def plan(self, at: datetime | None) -> _Plan:
        if self.static is not None:
            return self.static
        if at is None:
            stamp = time.time()
        else:
            stamp = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()
        start, end, plan = self.recent
        if start <= stamp < end and plan is not None:
            return plan
        bounds, day_bounds = self.date_bounds, self.day_bounds
        cell = bisect_right(bounds, stamp)
        key = (cell, bisect_right(day_bounds, stamp % 86400) if day_bounds else 0)
        plan = self.cells.get(key)
        if plan is None:
            plan = self.cells[key] = self.plan_at(datetime.fromtimestamp(stamp, UTC), cell)
        if not day_bounds:
            start = bounds[cell - 1] if cell > 0 else -math.inf
            self.recent = (start, bounds[cell] if cell < len(bounds) else math.inf, plan)
        return plan

    def plan_at(self, moment: datetime, cell: int) -> _Plan:
        bounds = self.date_bounds
        valid_from = _day(bounds[cell - 1]) if cell > 0 else None
        valid_until = _day(bounds[cell]) if cell < len(bounds) else None
        today = moment.date()
        steps = list(self.steps)
        for schedule in self.custom:
            in_effect = [entry for entry in schedule if entry.valid_from is None or entry.valid_from <= today]
            if in_effect:
                entry = in_effect[-1]
                steps.append(f"custom price from {entry.origin} ({entry.provider} / {entry.model})")
                later = schedule[len(in_effect)].valid_from if len(in_effect) < len(schedule) else None
                return _planned(entry.prices, "custom", steps, entry.valid_from, later)
            steps.append(
                f"custom price {schedule[0].origin} starts {schedule[0].valid_from}, not yet in effect"
            )
        if self.bundled is None:
            steps.append("no price for this model in genai-prices' bundled data")
            return _Plan(None, "", tuple(steps), valid_from, valid_until)
        match = self.bundled
        steps += match.steps
        price = match.model.get_prices(moment, match.context)
        if not self.day_bounds:
            # The cell may be narrower than this price's life (another tier's price changed).
            def price_in(index: int) -> ModelPrice:
                stamp = bounds[index - 1] if index > 0 else bounds[0] - 86400
                return match.model.get_prices(datetime.fromtimestamp(stamp, UTC), match.context)

            # A custom price's start is a boundary whatever the data says.
            fixed = {_midnight(e.valid_from) for schedule in self.custom for e in schedule if e.valid_from}
            first, last = cell, cell
            while first > 0 and bounds[first - 1] not in fixed and price_in(first - 1) == price:
                first -= 1
            while last < len(bounds) and bounds[last] not in fixed and price_in(last + 1) == price:
                last += 1
            valid_from = _day(bounds[first - 1]) if first > 0 else None
            valid_until = _day(bounds[last]) if last < len(bounds) else None
        if match.context is not None:
            standard = match.model.get_prices(moment)
            wanted = ", ".join(f"{key}={value}" for key, value in match.context.items())
            if price == standard:
                steps.append(f"no separate price for {wanted} in effect then: standard prices apply")
            else:
                steps.append(f"price variant {wanted} applies")
        return _planned(price, "price_table", steps, valid_from, valid_until)


_UNKNOWN = _Resolution(custom=(), bundled=None, steps=(), date_bounds=(), day_bounds=())
"""Cached for a (provider, model, tier) nothing can price."""


def _planned(
    price: ModelPrice, source: str, steps: list[str], valid_from: date | None, valid_until: date | None
) -> _Plan:
    try:
        return _Plan(_compile(price), source, tuple(steps), valid_from, valid_until)
    except _Unpriceable as exc:
        steps.append(f"cannot price tokens with it: {exc}")
        return _Plan(None, "", tuple(steps), valid_from, valid_until)


def _day(stamp: float) -> date:
    return datetime.fromtimestamp(stamp, UTC).date()


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _seconds(moment: datetime) -> float:
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def _constraints(model: ModelInfo) -> Iterator[StartDateConstraint | TimeOfDateConstraint]:
    prices: Sequence[ConditionalPrice] = [] if isinstance(model.prices, ModelPrice) else model.prices
    for item in (*prices, *(model.price_variants or ())):
        if item.constraint is not None:
            yield item.constraint


def _price_context(service_tier: str | None) -> PriceContext | None:
    """The genai-prices request context for ``service_tier`` as the API reports it."""
    if service_tier is None:
        return None
    tier = service_tier.lower()
    if tier == "batch":
        return {"processing": "batch"}
    # ``auto`` is a request value; a response reporting it ran on the default tier.
    return {"service_tier": "default" if tier == "auto" else tier}


class PriceBook:
    """Prices calls. One per process; safe to share between threads."""

    def __init__(
        self,
        custom: Sequence[CustomPrice] = (),
        *,
        azure_deployments: Mapping[str, str] | None = None,
        providers: Sequence[Provider] | None = None,
        snapshot_fallback: bool = True,
    ) -> None:
        self._custom_exact: dict[tuple[str, str, str | None], list[CustomPrice]] = {}
        self._custom_prefix: list[CustomPrice] = []
        for entry in custom:
            if entry.is_prefix:
                self._custom_prefix.append(entry)
            else:
                key = (entry.provider, entry.match_name, entry.service_tier)
                self._custom_exact.setdefault(key, []).append(entry)
        self._custom_prefix.sort(key=lambda entry: -len(entry.match_name))
        self._custom = tuple(custom)
        self._azure = {name.lower(): model for name, model in (azure_deployments or {}).items()}
        self._providers = list(providers if providers is not None else bundled_providers)
        self._snapshot_fallback = snapshot_fallback
        self._resolved: dict[tuple[str, str, str | None], _Resolution] = {}
        self._models_found: dict[tuple[str, str], ModelInfo | None] = {}
        self._lock = threading.Lock()
        self._unpriced: Counter[tuple[str, str]] = Counter()
        self._warned: set[tuple[str, str]] = set()
        self.on_unpriced: Callable[[str, str], None] | None = None
        """Called on every call that gets no price (hook a metric counter here)."""

    @classmethod
    def from_config(
        cls,
        *,
        price_file: str | Path | None = None,
        azure_deployments: Mapping[str, str] | None = None,
    ) -> PriceBook:
        """Raises :class:`~.price_file.PriceFileError` (every problem, with file and line)."""
        custom = load_price_file(price_file) if price_file is not None else ()
        return cls(custom, azure_deployments=azure_deployments)

    @property
    def unpriced_counts(self) -> dict[tuple[str, str], int]:
        """Calls that got no price, by (provider, model), since start."""
        with self._lock:
            return dict(self._unpriced)

    def price_call(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        *,
        service_tier: str | None = None,
        at: datetime | None = None,
    ) -> CallCost | None:
        """None when the price is unknown (never a zero cost); also when usage is unknown."""
        if usage.input_tokens is None or usage.output_tokens is None:
            return None
        resolution = self._resolved.get((provider, model, service_tier))
        if resolution is None:
            resolution = self._resolve(provider, model, service_tier)
        if resolution is _UNKNOWN:
            self._count_unpriced(provider, model, "no price known for this model")
            return None
        plan = resolution.plan(at)
        compiled = plan.compiled
        if compiled is None:
            self._count_unpriced(provider, model, plan.steps[-1])
            return None
        cost = compiled.cost(usage, plan.source)
        if cost is None:
            self._count_unpriced(provider, model, f"token counts do not add up: {usage}")
        return cost

    def explain(
        self, provider: str, model: str, *, service_tier: str | None = None, at: datetime | None = None
    ) -> PriceExplanation:
        """Which price applies to a call like this, and why."""
        moment = at or datetime.now(UTC)
        resolution = self._resolve(provider, model, service_tier, cache=False)
        if resolution is not _UNKNOWN:
            plan = resolution.plan(moment)
        else:
            steps = (
                *self._lookup_steps(provider, model),
                "no custom price and no price in genai-prices' data",
            )
            plan = _Plan(None, "", steps, None, None)
        return PriceExplanation(
            provider=provider,
            model=model,
            service_tier=service_tier,
            at=moment,
            source=plan.source or None,
            steps=plan.steps,
            bands=plan.compiled.rate_bands() if plan.compiled is not None else (),
            valid_from=plan.valid_from,
            valid_until=plan.valid_until,
        )

    def price_rows(self) -> Iterator[PriceRow]:
        """The compiled price book as the store holds it: what ``llmledger prices sync`` loads.

        For every provider name a span can carry and every model name the price data or the
        price file lists (and every Azure deployment), the price :meth:`price_call` applies,
        by service tier, date, time of day and input size, resolved by the same lookup.
        """
        for provider, names in self._listed_names().items():
            for name, prefix in names.items():
                for row in self._name_rows(provider, name, prefix):
                    yield replace(row, prefix=prefix) if prefix else row

    def _listed_names(self) -> dict[str, dict[str, bool]]:
        """Model names by provider name, in the data's order, each with whether a rule uses it as
        a prefix."""
        listed: dict[str, dict[str, bool]] = {}
        by_id: dict[str, list[str]] = {}
        for name, provider_id in PROVIDER_IDS.items():
            by_id.setdefault(provider_id, []).append(name)
        for provider in self._providers:
            models = list(provider.models)
            for fallback_id in provider.fallback_model_providers or ():
                fallback = next((p for p in self._providers if p.id == fallback_id), None)
                models += fallback.models if fallback is not None else []
            names = {model.id.lower(): False for model in models}
            for model in models:
                for name, kind in _names(model.match):
                    if kind != "regex":
                        names[name] = names.get(name, False) or kind == "prefix"
            for key in by_id.get(provider.id, [provider.id]):
                listed.setdefault(key, {}).update(names)
        for entry in self._custom:
            names = listed.setdefault(entry.provider, {})
            names[entry.match_name] = names.get(entry.match_name, False) or entry.is_prefix
        for deployment in self._azure:
            for key in ("azure.ai.openai", "azure.ai.inference"):
                listed.setdefault(key, {}).setdefault(deployment, False)
        return listed

    def _name_rows(self, provider: str, name: str, prefix: bool) -> Iterator[PriceRow]:
        listed: list[PriceRow] = []
        for lookup, suffix in _LOOKUPS if prefix else _LOOKUPS[:-1]:
            rows: list[PriceRow] = []
            for tier in self._tiers(provider, name + suffix):
                rows += self._timeline(provider, name + suffix, tier, name, lookup)
            if not suffix:
                listed = rows
                yield from rows
                continue
            # Without rows of their own, a dated snapshot or a longer name is priced as the name,
            # a compact-dated snapshot not at all.
            default = [replace(row, lookup=lookup) for row in listed] if lookup != "compact" else []
            if rows == default:
                continue
            if not rows:
                # Priced by nothing, though the name is: a row no call falls in says so.
                never = date(1970, 1, 1)
                rows = [
                    PriceRow(
                        provider, name, lookup, "", never, never, 0, 0, listed[0].rates, listed[0].source
                    )
                ]
            yield from rows

    def _tiers(self, provider: str, name: str) -> dict[str, None]:
        """``""`` and every service tier (lower case) that something prices ``name`` apart for."""
        tiers: dict[str, None] = {"": None}
        for entry in self._custom:
            if (
                entry.service_tier
                and entry.provider == provider
                and (entry.match_name == name or (entry.is_prefix and name.startswith(entry.match_name)))
            ):
                tiers[entry.service_tier.lower()] = None
        mapped = (
            self._azure.get(name, name) if provider in ("azure.ai.openai", "azure.ai.inference") else name
        )
        bundled = self._find_bundled(provider, mapped.lower(), None)
        if bundled is not None and any(model is bundled.model for model in bundled.provider.models):
            for variant in bundled.model.price_variants or ():
                # Only contexts a response can report (see _price_context).
                if variant.when == {"processing": "batch"}:
                    tiers["batch"] = None
                elif len(variant.when) == 1 and "service_tier" in variant.when:
                    tiers[variant.when["service_tier"].lower()] = None
        if "default" in tiers:
            tiers["auto"] = None  # priced as the default tier
        return tiers

    def _timeline(self, provider: str, name: str, tier: str, listed: str, lookup: str) -> Iterator[PriceRow]:
        """Rows (under the ``listed`` name) for every period in which the price of (provider,
        name, tier) cannot change."""
        resolution = self._resolve(provider, name, tier or None, cache=False)
        if resolution is _UNKNOWN:
            return
        bounds = resolution.date_bounds
        edges = (0.0, *resolution.day_bounds, 86400.0)
        windows = list(pairwise(edges))
        previous: tuple[object, ...] | None = None
        pending: list[PriceRow] = []
        for cell in range(len(bounds) + 1):
            first_day = (
                bounds[cell - 1]
                if cell > 0
                else (bounds[0] - 86400 if bounds else _midnight(datetime.now(UTC).date()))
            )
            valid_from = _day(bounds[cell - 1]) if cell > 0 else None
            valid_until = _day(bounds[cell]) if cell < len(bounds) else None
            cell_rows: list[PriceRow] = []
            for low, high in windows:
                plan = resolution.plan_at(datetime.fromtimestamp(first_day + (low + high) / 2, UTC), cell)
                if plan.compiled is None:
                    continue
                for band in plan.compiled.rate_bands():
                    cell_rows.append(
                        PriceRow(
                            provider,
                            listed,
                            lookup,
                            tier,
                            valid_from,
                            valid_until,
                            math.ceil(low),
                            math.ceil(high),
                            band,
                            plan.source,
                        )
                    )
            shape = tuple((row.day_from, row.rates, row.source) for row in cell_rows)
            if shape == previous and pending:
                # Same prices as the period before: one period (fewer rows to look up).
                pending = [replace(row, valid_until=valid_until) for row in pending]
                continue
            yield from pending
            pending, previous = cell_rows, shape
        yield from pending

    # --- slow path ---

    def _count_unpriced(self, provider: str, model: str, reason: str) -> None:
        key = (provider, model)
        with self._lock:
            self._unpriced[key] += 1
            first = key not in self._warned
            self._warned.add(key)
        if first:
            logger.warning(
                "llmledger: no price for %s model %r (%s); its calls get no cost attribute. Add it to "
                "the price file (docs/pricing.md). Further calls are counted, not logged.",
                provider,
                model,
                reason,
            )
        if self.on_unpriced is not None:
            self.on_unpriced(provider, model)

    def _lookup_steps(self, provider: str, model: str) -> list[str]:
        steps: list[str] = []
        if provider in ("azure.ai.openai", "azure.ai.inference") and model.lower() in self._azure:
            steps.append(
                f"Azure deployment {model!r} is model {self._azure[model.lower()]!r} (azure_deployments)"
            )
        return steps

    def _resolve(
        self, provider: str, model: str, service_tier: str | None, *, cache: bool = True
    ) -> _Resolution:
        steps = self._lookup_steps(provider, model)
        tier = service_tier.lower() if service_tier is not None else None
        names = [model.lower()]
        if steps:
            names.append(self._azure[model.lower()].lower())
        custom: list[tuple[CustomPrice, ...]] = []
        for name in names:
            for wanted in (tier, None) if tier is not None else (None,):
                schedule = self._custom_exact.get((provider, name, wanted))
                if schedule:
                    custom.append(tuple(sorted(schedule, key=lambda e: e.valid_from or date.min)))
            for entry in self._custom_prefix:
                if (
                    entry.provider == provider
                    and name.startswith(entry.match_name)
                    and entry.service_tier in (tier, None)
                ):
                    custom.append((entry,))
        bundled = self._find_bundled(provider, names[-1], service_tier)
        result = _UNKNOWN
        if custom or bundled is not None:
            days: set[date] = {
                entry.valid_from for schedule in custom for entry in schedule if entry.valid_from
            }
            times: set[float] = set()
            for constraint in _constraints(bundled.model) if bundled is not None else ():
                if isinstance(constraint, StartDateConstraint):
                    days.add(constraint.start_date)
                else:
                    anchor = date(2000, 1, 1)
                    for moment in (constraint.start_time, constraint.end_time):
                        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
                        times.add(_seconds(datetime.combine(anchor, aware).astimezone(UTC)))
            resolution = _Resolution(
                custom=tuple(custom),
                bundled=bundled,
                steps=tuple(steps),
                date_bounds=tuple(sorted(_midnight(day) for day in days)),
                day_bounds=tuple(sorted(times)),
            )
            if not days and not times:
                resolution.static = resolution.plan_at(datetime.now(UTC), 0)
            result = resolution
        if cache and len(self._resolved) < _CACHE_LIMIT:
            self._resolved[(provider, model, service_tier)] = result
        return result

    def _find_model(self, provider: Provider, model: str) -> ModelInfo | None:
        # genai-prices tries every match rule in turn (~0.5 ms for a name it does not know);
        # price_rows asks for each name once per tier and lookup.
        key = (provider.id, model)
        if key in self._models_found:
            return self._models_found[key]
        found = provider.find_model(model, all_providers=self._providers)
        if len(self._models_found) < 10 * _CACHE_LIMIT:
            self._models_found[key] = found
        return found

    def _find_bundled(self, provider: str, model: str, service_tier: str | None) -> _BundledMatch | None:
        provider_id = PROVIDER_IDS.get(provider, provider)
        data_provider = find_provider_by_id(self._providers, provider_id)
        if data_provider is None:
            return None
        steps: list[str] = []
        found = self._find_model(data_provider, model)
        if found is None and self._snapshot_fallback and _SNAPSHOT_DATE.search(model):
            base = _SNAPSHOT_DATE.sub("", model)
            found = self._find_model(data_provider, base)
            if found is not None:
                steps.append(
                    f"dated snapshot {model!r} is not in the data: priced as its base model {base!r} "
                    "(snapshot fallback; add the snapshot to the price file if its price differs)"
                )
        if found is None:
            return None
        own = any(candidate is found for candidate in data_provider.models)
        origin = f"provider {data_provider.id!r}"
        if not own:
            origin += f" (through its fallback to {_owner(self._providers, found)!r})"
        steps.insert(
            0,
            f"genai-prices {genai_prices.__version__} bundled data: {origin}, "
            f"model {found.id!r} ({found.name or found.id}) matches {model!r}",
        )
        windows = [c for c in _constraints(found) if isinstance(c, TimeOfDateConstraint)]
        if windows:
            spans = ", ".join(f"{c.start_time:%H:%M}-{c.end_time:%H:%M}" for c in windows)
            steps.append(f"prices change with the time of day (UTC windows {spans}): the call time decides")
        context = _price_context(service_tier)
        if context is not None and not own:
            # genai-prices ignores request context for models found through a fallback provider.
            steps.append(f"service tier {service_tier!r} not applied: prices come from a fallback provider")
            context = None
        return _BundledMatch(data_provider, found, context, tuple(steps))


def _owner(providers: Sequence[Provider], model: ModelInfo) -> str:
    return next((p.id for p in providers if any(m is model for m in p.models)), "?")


def _names(match: MatchLogic) -> Iterator[tuple[str, str]]:
    """(name, match kind) for each way ``match`` accepts a model name."""
    if isinstance(match, ClauseEquals):
        yield match.equals.lower(), "exact"
    elif isinstance(match, ClauseStartsWith):
        yield match.starts_with.lower(), "prefix"
    elif isinstance(match, ClauseEndsWith):
        yield match.ends_with.lower(), "suffix"
    elif isinstance(match, ClauseContains):
        yield match.contains.lower(), "contains"
    elif isinstance(match, ClauseRegex):
        yield match.regex, "regex"
    elif isinstance(match, ClauseOr):
        for clause in match.or_:
            yield from _names(clause)
    # ClauseAnd has no single name to match on; such models are left out of the rows.
