"""PriceBook prices calls exactly as genai-prices would, without calling it per request.

Every expected cost here is computed independently through genai-prices' own API
(``calc_price`` with its ``Usage`` type, fields mapped by hand below), never through
PriceBook.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

import genai_prices
import pytest
from genai_prices import Usage
from hypothesis import given, settings
from hypothesis import strategies as st

from llmledger.instrumentation._internal.pricing import CallCost, PriceBook, RateBand
from llmledger.instrumentation._internal.usage import TokenUsage

# After every date-constrained price in the bundled data took effect (latest: 2026-10-19).
AT = datetime(2026, 11, 1, 15, 0, tzinfo=UTC)

# Models as the API reports them in responses: aliases, dated snapshots, fine-tunes.
OPENAI_CHAT = [
    "gpt-4o",
    "gpt-4o-2024-08-06",
    "gpt-4o-2024-11-20",
    "gpt-4o-2024-05-13",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "chatgpt-4o-latest",
    "gpt-4.1",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano",
    "gpt-4.5-preview",
    "gpt-4-turbo",
    "gpt-4-turbo-2024-04-09",
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-32k",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-16k",
    "gpt-5",
    "gpt-5-2025-08-07",
    "gpt-5-chat-latest",
    "gpt-5-mini",
    "gpt-5-nano-2025-08-07",
    "gpt-5.1",
    "gpt-5.2",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.5",
    "gpt-6-sol",
    "ft:gpt-4o-mini-2024-07-18:acme::abc123",
    "ft:gpt-3.5-turbo-0125:acme::xyz",
]
OPENAI_REASONING = [
    "o1",
    "o1-2024-12-17",
    "o1-mini",
    "o1-pro",
    "o3",
    "o3-2025-04-16",
    "o3-mini",
    "o3-pro",
    "o4-mini",
    "o4-mini-2025-04-16",
    "codex-mini-latest",
    "gpt-5-pro",
    "gpt-5.4-pro",
]
OPENAI_AUDIO_IMAGE = [
    "gpt-4o-audio-preview-2024-12-17",
    "gpt-4o-mini-audio-preview",
    "gpt-audio",
    "gpt-audio-mini",
    "gpt-4o-realtime-preview",
    "gpt-realtime",
    "gpt-image-1",
]
OPENAI_EMBEDDING = ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"]
OPENAI_LEGACY = ["davinci-002", "babbage-002", "gpt-3.5-turbo-instruct", "text-davinci-003"]
OPENAI_MODELS = OPENAI_CHAT + OPENAI_REASONING + OPENAI_AUDIO_IMAGE + OPENAI_EMBEDDING + OPENAI_LEGACY

USAGES = {
    "plain": TokenUsage(input_tokens=1234, output_tokens=567),
    "cached+reasoning": TokenUsage(
        input_tokens=20_000, output_tokens=3_000, cached_input_tokens=12_288, reasoning_tokens=2_048
    ),
    "cache write": TokenUsage(
        input_tokens=9_000, output_tokens=100, cached_input_tokens=1_024, cache_write_tokens=4_000
    ),
    "audio": TokenUsage(
        input_tokens=5_000,
        output_tokens=1_500,
        cached_input_tokens=1_000,
        input_audio_tokens=3_000,
        cached_audio_tokens=500,
        output_audio_tokens=1_200,
    ),
    "image": TokenUsage(input_tokens=4_000, output_tokens=50, input_image_tokens=2_500),
    "long context": TokenUsage(input_tokens=300_000, output_tokens=8_000, cached_input_tokens=100_000),
    "embedding": TokenUsage(input_tokens=8_191, output_tokens=0),
    "one token": TokenUsage(input_tokens=1, output_tokens=0),
}


def genai_usage(usage: TokenUsage) -> Usage:
    """TokenUsage mapped field by field onto genai-prices' Usage.

    Zeros are passed explicitly: genai-prices refuses to infer a count (cached audio) that
    overlapping reported counts (cached, audio) leave ambiguous.
    """
    values = {
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "input_audio_tokens": usage.input_audio_tokens,
        "cache_audio_read_tokens": usage.cached_audio_tokens,
        "input_image_tokens": usage.input_image_tokens,
        "output_tokens": usage.output_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
        "output_audio_tokens": usage.output_audio_tokens,
    }
    return Usage(**values)


def tier_context(service_tier: str | None) -> dict[str, str] | None:
    """How genai-prices' data spells the tier OpenAI reports."""
    if service_tier is None:
        return None
    if service_tier == "batch":
        return {"processing": "batch"}
    return {"service_tier": "default" if service_tier == "auto" else service_tier}


def reference(
    model: str,
    usage: TokenUsage,
    *,
    provider_id: str = "openai",
    service_tier: str | None = None,
    at: datetime = AT,
) -> CallCost:
    calculation = genai_prices.calc_price(
        genai_usage(usage),
        model,
        provider_id=provider_id,
        genai_request_timestamp=at,
        price_context=tier_context(service_tier),
    )
    return CallCost(calculation.total_price, calculation.input_price, calculation.output_price, "price_table")


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def test_covers_at_least_thirty_openai_models_across_families() -> None:
    assert len(OPENAI_MODELS) >= 30
    assert all(OPENAI_MODELS.count(model) == 1 for model in OPENAI_MODELS)


@pytest.mark.parametrize("shape", USAGES)
@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_models_match_genai_prices(book: PriceBook, model: str, shape: str) -> None:
    usage = USAGES[shape]
    assert book.price_call("openai", model, usage, at=AT) == reference(model, usage)


TIER_MODELS = ["gpt-4o", "gpt-4.1-mini", "gpt-5", "gpt-5-nano", "o3", "o4-mini", "gpt-5.4", "gpt-6-sol", "o1"]
TIERS = [None, "default", "auto", "flex", "priority", "batch", "scale"]


@pytest.mark.parametrize(
    "at",
    [datetime(2026, 10, 1, tzinfo=UTC), AT],
    ids=["before tier prices", "after tier prices"],
)
@pytest.mark.parametrize("service_tier", TIERS)
@pytest.mark.parametrize("model", TIER_MODELS)
def test_service_tiers_match_genai_prices(
    book: PriceBook, model: str, service_tier: str | None, at: datetime
) -> None:
    usage = USAGES["cached+reasoning"]
    expected = reference(model, usage, service_tier=service_tier, at=at)
    assert book.price_call("openai", model, usage, service_tier=service_tier, at=at) == expected


def test_tier_prices_differ_where_the_data_says_so(book: PriceBook) -> None:
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    totals = {tier: book.price_call("openai", "gpt-5", usage, service_tier=tier, at=AT) for tier in TIERS}
    assert {tier: cost.total for tier, cost in totals.items() if cost} == {
        None: Decimal("11.25"),
        "default": Decimal("11.25"),
        "auto": Decimal("11.25"),
        "scale": Decimal("11.25"),
        "flex": Decimal("5.625"),
        "batch": Decimal("5.625"),
        "priority": Decimal("22.5"),
    }


@pytest.mark.parametrize("input_tokens", [271_999, 272_000, 272_001, 1_000_000])
@pytest.mark.parametrize("model", ["gpt-5.4", "gpt-5.5", "gpt-5.4-pro", "gpt-6-sol"])
def test_long_context_tiers_switch_above_the_threshold(
    book: PriceBook, model: str, input_tokens: int
) -> None:
    usage = TokenUsage(input_tokens=input_tokens, output_tokens=1_000, cached_input_tokens=50_000)
    assert book.price_call("openai", model, usage, at=AT) == reference(model, usage)


def test_long_context_rate_applies_to_every_token(book: PriceBook) -> None:
    below = book.price_call("openai", "gpt-5.4", TokenUsage(input_tokens=272_000, output_tokens=0), at=AT)
    above = book.price_call("openai", "gpt-5.4", TokenUsage(input_tokens=272_001, output_tokens=0), at=AT)
    assert below is not None
    assert above is not None
    assert below.total == Decimal("0.68")  # 272,000 x $2.50/M
    assert above.total == Decimal("1.360005")  # 272,001 x $5/M: the cliff, as OpenAI bills it


@pytest.mark.parametrize(
    "at",
    [
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 6, 9, 23, 59, tzinfo=UTC),
        datetime(2025, 6, 10, tzinfo=UTC),
    ],
)
def test_prices_follow_the_call_time(book: PriceBook, at: datetime) -> None:
    # o3 dropped from $10/$40 to $2/$8 on 2025-06-10.
    usage = USAGES["plain"]
    assert book.price_call("openai", "o3", usage, at=at) == reference("o3", usage, at=at)


def test_explanation_gives_the_period_a_price_is_in_effect(book: PriceBook) -> None:
    before = book.explain("openai", "o3", at=datetime(2025, 1, 1, tzinfo=UTC))
    after = book.explain("openai", "o3", at=AT)
    assert (before.valid_from, before.valid_until, before.bands[0].input) == (None, date(2025, 6, 10), 10)
    assert (after.valid_from, after.valid_until, after.bands[0].input) == (date(2025, 6, 10), None, 2)


def test_one_book_prices_concurrent_calls_at_different_times_consistently() -> None:
    book = PriceBook()
    times = [datetime(2025, 1, 1, tzinfo=UTC), AT, datetime(2025, 6, 10, tzinfo=UTC), None]
    calls = [
        (model, USAGES[shape], tier, times[i % len(times)])
        for i, (model, shape, tier) in enumerate(
            (model, shape, tier)
            for model in ["o3", "gpt-5", "gpt-5.4", "deepseek-chat"]
            for shape in ("plain", "cached+reasoning", "long context")
            for tier in (None, "priority", "flex")
        )
    ]

    def price_all(_: int) -> list[CallCost | None]:
        return [
            book.price_call(
                "deepseek" if model.startswith("deepseek") else "openai", model, u, service_tier=t, at=at
            )
            for model, u, t, at in calls * 20
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(price_all, range(8)))
    fresh = PriceBook()
    expected = [
        fresh.price_call(
            "deepseek" if model.startswith("deepseek") else "openai", model, u, service_tier=t, at=at
        )
        for model, u, t, at in calls * 20
        if at is not None
    ]
    for result in results:
        assert [cost for cost, (*_, at) in zip(result, calls * 20, strict=True) if at is not None] == expected
        assert all(cost is not None for cost in result)


def test_naive_call_time_is_utc(book: PriceBook) -> None:
    usage = USAGES["plain"]
    naive = datetime(2025, 6, 10, 0, 30)
    assert book.price_call("openai", "o3", usage, at=naive) == reference("o3", usage, at=naive)


@pytest.mark.parametrize("hour", [0, 1, 12, 16, 17, 23])
def test_time_of_day_prices_match_genai_prices(book: PriceBook, hour: int) -> None:
    # DeepSeek's off-peak discount applies 16:30-00:30 UTC.
    usage = USAGES["cached+reasoning"]
    for minute in (0, 29, 30, 31):
        at = datetime(2026, 11, 1, hour, minute, tzinfo=UTC)
        expected = reference("deepseek-chat", usage, provider_id="deepseek", at=at)
        assert book.price_call("deepseek", "deepseek-chat", usage, at=at) == expected
    explanation = book.explain("deepseek", "deepseek-chat", at=AT)
    assert explanation.steps[1] == (
        "prices change with the time of day (UTC windows 00:30-16:30): the call time decides"
    )


@pytest.mark.parametrize(
    ("provider", "model", "provider_id"),
    [
        ("groq", "llama-3.3-70b-versatile", "groq"),
        ("mistral_ai", "mistral-large-2512", "mistral"),
        ("x_ai", "grok-4-0709", "x-ai"),
        ("gcp.gemini", "gemini-2.5-pro", "google"),
        ("gcp.vertex_ai", "gemini-2.0-flash", "google"),
        ("anthropic", "claude-sonnet-4-5", "anthropic"),
        ("perplexity", "sonar-pro", "perplexity"),  # a fee per request on top of tokens
        ("perplexity", "sonar-deep-research", "perplexity"),  # reasoning at its own rate
        ("azure.ai.openai", "o1", "azure"),
        ("azure.ai.openai", "gpt-4o", "azure"),
    ],
)
def test_other_providers_map_to_genai_prices_ids(
    book: PriceBook, provider: str, model: str, provider_id: str
) -> None:
    for usage in (USAGES["plain"], USAGES["cached+reasoning"], USAGES["long context"]):
        expected = reference(model, usage, provider_id=provider_id)
        assert book.price_call(provider, model, usage, at=AT) == expected


def test_azure_deployments_are_priced_as_their_model() -> None:
    book = PriceBook(azure_deployments={"Prod-Chat": "gpt-4o-mini"})
    usage = USAGES["cached+reasoning"]
    expected = reference("gpt-4o-mini", usage, provider_id="azure")
    assert book.price_call("azure.ai.openai", "prod-chat", usage, at=AT) == expected
    # genai-prices applies no service-tier variant to a model found through a fallback provider.
    assert book.price_call("azure.ai.openai", "Prod-Chat", usage, service_tier="priority", at=AT) == expected
    explanation = book.explain("azure.ai.openai", "Prod-Chat", service_tier="priority", at=AT)
    assert explanation.steps[0] == "Azure deployment 'Prod-Chat' is model 'gpt-4o-mini' (azure_deployments)"
    assert "fallback" in explanation.steps[1]


def test_unknown_model_is_never_zero(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()
    seen: list[tuple[str, str]] = []
    book.on_unpriced = lambda provider, model: seen.append((provider, model))
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        for _ in range(3):
            assert book.price_call("openai", "gpt-9-imaginary", USAGES["plain"]) is None
        assert book.price_call("self_hosted", "llama-70b", USAGES["plain"]) is None
    assert book.unpriced_counts == {("openai", "gpt-9-imaginary"): 3, ("self_hosted", "llama-70b"): 1}
    assert seen == [("openai", "gpt-9-imaginary")] * 3 + [("self_hosted", "llama-70b")]
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        "llmledger: no price for openai model 'gpt-9-imaginary' (no price known for this model); its calls "
        "get no cost attribute. Add it to the price file (docs/pricing.md). Further calls are counted, "
        "not logged.",
        "llmledger: no price for self_hosted model 'llama-70b' (no price known for this model); its calls "
        "get no cost attribute. Add it to the price file (docs/pricing.md). Further calls are counted, "
        "not logged.",
    ]


@pytest.mark.parametrize("model", ["whisper-1", "tts-1", "moderation-latest"])
def test_models_not_priced_per_token_are_unpriced_not_free(book: PriceBook, model: str) -> None:
    assert book.price_call("openai", model, USAGES["plain"], at=AT) is None
    assert book.explain("openai", model, at=AT).source is None


def test_fine_tunes_are_not_priced_as_their_base_model(book: PriceBook) -> None:
    # The data prices fine-tunes of dated snapshots; an undated one is unknown, not the base price.
    assert book.price_call("openai", "ft:gpt-4o-mini:acme::abc123", USAGES["plain"], at=AT) is None


def test_unknown_dated_snapshot_falls_back_to_its_base_model_visibly() -> None:
    usage = USAGES["plain"]
    assert PriceBook().price_call("openai", "gpt-4.1-2099-01-01", usage, at=AT) == reference("gpt-4.1", usage)
    explanation = PriceBook().explain("openai", "gpt-4.1-2099-01-01", at=AT)
    assert "snapshot fallback" in explanation.steps[1]
    assert PriceBook(snapshot_fallback=False).price_call("openai", "gpt-4.1-2099-01-01", usage) is None


@pytest.mark.parametrize(
    "usage",
    [
        TokenUsage(input_tokens=None, output_tokens=10),
        TokenUsage(input_tokens=10, output_tokens=None),
        TokenUsage(),
    ],
)
def test_unknown_usage_gets_no_cost_and_is_not_counted(usage: TokenUsage) -> None:
    book = PriceBook()
    assert book.price_call("openai", "gpt-4o", usage) is None
    assert book.unpriced_counts == {}


@pytest.mark.parametrize(
    "usage",
    [
        TokenUsage(input_tokens=100, output_tokens=10, cached_input_tokens=101),
        TokenUsage(input_tokens=-1, output_tokens=10),
    ],
)
def test_inconsistent_usage_is_unpriced(usage: TokenUsage) -> None:
    book = PriceBook()
    assert book.price_call("openai", "gpt-4o", usage, at=AT) is None
    assert book.unpriced_counts == {("openai", "gpt-4o"): 1}


def test_costs_are_exact_whatever_decimal_context_the_app_sets(book: PriceBook) -> None:
    usage = USAGES["cached+reasoning"]
    expected = reference("gpt-5.2", usage)
    with localcontext() as context:
        context.prec = 3
        assert book.price_call("openai", "gpt-5.2", replace(usage, estimated=True), at=AT) == expected


def test_a_million_prices_sum_exactly(book: PriceBook) -> None:
    models = OPENAI_CHAT[:20] + OPENAI_EMBEDDING
    calls = [
        (models[i % len(models)], TokenUsage(input_tokens=97 * i + 13, output_tokens=31 * i % 4_001))
        for i in range(1_000)
    ]
    costs = [book.price_call("openai", model, usage, at=AT) for model, usage in calls]
    exact = sum((Fraction(reference(model, usage).total) for model, usage in calls), Fraction(0))

    totals = [cost.total for cost in costs if cost is not None] * 1_000
    assert len(totals) == 1_000_000
    assert Fraction(sum(totals, Decimal(0))) == exact * 1_000
    # What float accumulation of the same amounts would lose:
    assert Fraction(sum(float(total) for total in totals)) != exact * 1_000


MODELS_FOR_PROPERTIES = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5",
    "gpt-5.4",
    "o3",
    "gpt-realtime",
    "text-embedding-3-small",
]
token_counts = st.integers(min_value=0, max_value=2_000_000)


@st.composite
def usages(draw: st.DrawFn) -> TokenUsage:
    input_tokens = draw(token_counts)
    output_tokens = draw(token_counts)
    cached = draw(st.integers(0, input_tokens))
    audio = draw(st.integers(0, input_tokens - cached))
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        input_audio_tokens=audio,
        reasoning_tokens=draw(st.integers(0, output_tokens)),
    )


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(MODELS_FOR_PROPERTIES),
    usage=usages(),
    extra_input=st.integers(0, 500_000),
    extra_output=st.integers(0, 500_000),
    tier=st.sampled_from(TIERS),
)
def test_cost_properties(
    book: PriceBook, model: str, usage: TokenUsage, extra_input: int, extra_output: int, tier: str | None
) -> None:
    cost = book.price_call("openai", model, usage, service_tier=tier, at=AT)
    assert cost is not None
    assert type(cost.total) is Decimal
    assert cost.total == cost.input + cost.output
    assert cost == reference(model, usage, service_tier=tier)

    assert usage.input_tokens is not None
    assert usage.output_tokens is not None
    more = replace(
        usage,
        input_tokens=usage.input_tokens + extra_input,
        output_tokens=usage.output_tokens + extra_output,
    )
    bigger = book.price_call("openai", model, more, service_tier=tier, at=AT)
    assert bigger is not None
    assert bigger.total >= cost.total

    uncached = usage.input_tokens - usage.cached_input_tokens - usage.input_audio_tokens
    cached_more = replace(usage, cached_input_tokens=usage.cached_input_tokens + uncached)
    cheaper = book.price_call("openai", model, cached_more, service_tier=tier, at=AT)
    assert cheaper is not None
    assert cheaper.total <= cost.total


def test_explain_says_which_price_applies_and_why(book: PriceBook) -> None:
    explanation = book.explain("openai", "gpt-5.4-2026-03-05", service_tier="priority", at=AT)
    assert explanation.source == "price_table"
    assert explanation.steps == (
        f"genai-prices {genai_prices.__version__} bundled data: provider 'openai', model 'gpt-5.4' (GPT-5.4) "
        "matches 'gpt-5.4-2026-03-05'",
        "price variant service_tier=priority applies",
    )
    assert explanation.valid_from == date(2026, 10, 12)  # when priority got a price of its own
    assert explanation.valid_until is None
    [band] = explanation.bands
    assert (band.input, band.cached_input, band.output) == (Decimal(5), Decimal("0.5"), Decimal(30))
    text = str(explanation)
    assert "source price_table, in effect from 2026-10-12 until further notice" in text
    assert "base: input 5, cached input 0.5, cache write 5, output 30" in text

    standard = book.explain("openai", "gpt-5.4", at=AT)
    assert [(b.input_tokens_above, b.input, b.output) for b in standard.bands] == [
        (0, Decimal("2.5"), Decimal(15)),
        (272_000, Decimal(5), Decimal("22.5")),
    ]

    unknown = book.explain("openai", "gpt-9-imaginary", at=AT)
    assert unknown.source is None
    assert "not priced" in str(unknown)


def test_price_rows_are_the_books_prices_by_every_dimension() -> None:
    book = PriceBook(azure_deployments={"prod-chat": "gpt-4o"})
    rows = list(book.price_rows())
    gpt4o = [row for row in rows if row.provider == "openai" and row.model == "gpt-4o-2024-08-06"]
    by_tier = {(row.service_tier, row.valid_from): row for row in gpt4o}
    standard = by_tier[("", None)]
    assert (standard.rates.input, standard.rates.cached_input, standard.rates.output) == (
        Decimal("2.5"),
        Decimal("1.25"),
        Decimal(10),
    )
    assert (standard.valid_until, standard.day_from, standard.day_until) == (None, 0, 86_400)
    assert by_tier[("priority", date(2026, 10, 12))].rates.input == Decimal("4.25")
    assert by_tier[("priority", None)].valid_until == date(2026, 10, 12)  # standard rates before
    assert by_tier[("batch", date(2026, 10, 14))].rates.output == Decimal(5)
    assert {row.lookup for row in gpt4o} == {"name"}

    # Azure deployments are priced as their model, under both Azure provider names.
    for provider in ("azure.ai.openai", "azure.ai.inference"):
        deployment = [row for row in rows if row.provider == provider and row.model == "prod-chat"]
        standard = next(row for row in deployment if row.service_tier == "" and row.lookup == "name")
        assert standard.rates.input == Decimal("2.5")
    assert any(row.provider == "azure.ai.openai" and row.model == "gpt-4o" for row in rows)  # fallback
    assert any(row.provider == "gcp.gemini" for row in rows)
    assert not any(row.model == "whisper-1" for row in rows)  # not priced per token

    # Long context: a row per input threshold.
    gpt54 = [r for r in rows if (r.provider, r.model, r.service_tier) == ("openai", "gpt-5.4", "")]
    assert [(r.rates.input_tokens_above, r.rates.input) for r in gpt54] == [
        (0, Decimal("2.5")),
        (272_000, Decimal(5)),
    ]
    # Off-peak hours: a row per time-of-day window.
    deepseek = [
        (r.day_from, r.day_until, r.rates.input)
        for r in rows
        if (r.provider, r.model, r.service_tier, r.lookup) == ("deepseek", "deepseek-chat", "", "name")
        and r.valid_from is None
    ]
    assert len(deepseek) == 3
    assert (deepseek[0][0], deepseek[-1][1]) == (0, 86_400)
    assert {price for _, _, price in deepseek} == {Decimal("0.27"), Decimal("0.135")}


def test_every_row_charges_what_price_call_charges() -> None:
    book = PriceBook()
    # Below every long-context threshold: each base row prices it.
    usage = TokenUsage(1_000, 2_000, cached_input_tokens=300, cache_write_tokens=100, reasoning_tokens=500)
    checked = 0
    for row in book.price_rows():
        if row.lookup != "name" or row.rates.input_tokens_above:
            continue
        day = row.valid_from or date(2024, 1, 1)
        at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=row.day_from)
        cost = book.price_call(row.provider, row.model, usage, service_tier=row.service_tier or None, at=at)
        assert cost is not None
        assert cost.total == _at(row.rates, usage), row
        checked += 1
    assert checked > 5_000


def _at(rates: RateBand, usage: TokenUsage) -> Decimal:
    assert usage.input_tokens is not None
    assert usage.output_tokens is not None
    return (
        (usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens) * rates.input
        + usage.cached_input_tokens * rates.cached_input
        + usage.cache_write_tokens * rates.cache_write
        + (usage.output_tokens - usage.reasoning_tokens) * rates.output
        + usage.reasoning_tokens * rates.reasoning
    ) / 1_000_000 + rates.per_call
