"""The user's price file: overrides, additions, and every way a file can be wrong."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from genai_prices import Usage

from llmledger.instrumentation._internal.price_file import PriceFileError, load_price_file, parse_price_file
from llmledger.instrumentation._internal.pricing import CallCost, PriceBook
from llmledger.instrumentation._internal.usage import TokenUsage

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)
USAGE = TokenUsage(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=4_000)

PRICES = """\
# Negotiated and in-house prices, USD per million tokens.

[[price]]
provider = "openai"
model = "gpt-4o"
input = 2.00
cached_input = "1.00"
output = 8

[[price]]
provider = "openai"
model = "gpt-4o"
service_tier = "Priority"
input = 3.5
output = 14

[[price]]
provider = "openai"
model = "ft:gpt-4o-mini:acme::*"
input = 0.30
cached_input = 0.15
output = 1.20

[[price]]
provider = "self_hosted"
model = "bge-large"
input = 0.01
output = 0

[[price]]
provider = "openai"
model = "gpt-4.1"
valid_from = 2026-12-01
input = 1.5
output = 6

[[price]]
provider = "openai"
model = "long-context-custom"
input = { base = 2.5, tiers = [{ start = 272000, price = 5 }] }
output = 15

[[price]]
provider = "azure.ai.openai"
model = "prod-chat"
input = 0.1
output = 0.4
"""


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return path


@pytest.fixture
def book(price_file: Path) -> PriceBook:
    return PriceBook.from_config(price_file=price_file, azure_deployments={"prod-chat": "gpt-4o"})


def custom(total: str, input: str, output: str) -> CallCost:
    return CallCost(Decimal(total), Decimal(input), Decimal(output), "custom")


@pytest.mark.parametrize(
    ("provider", "model", "service_tier", "at", "expected"),
    [
        # 6,000 x $2 + 4,000 x $1 (cached) ; 1,000 x $8
        ("openai", "gpt-4o", None, AT, custom("0.024", "0.016", "0.008")),
        ("openai", "GPT-4o", "default", AT, custom("0.024", "0.016", "0.008")),
        # A tier of its own: no cached rate given, so cached input costs what input costs.
        ("openai", "gpt-4o", "priority", AT, custom("0.049", "0.035", "0.014")),
        ("openai", "gpt-4o", "PRIORITY", AT, custom("0.049", "0.035", "0.014")),
        # A tier without a custom price of its own takes the model's custom price, not the data's.
        ("openai", "gpt-4o", "flex", AT, custom("0.024", "0.016", "0.008")),
        ("openai", "ft:gpt-4o-mini:acme::abc123", None, AT, custom("0.0036", "0.0024", "0.0012")),
        ("self_hosted", "bge-large", None, AT, custom("0.0001", "0.0001", "0")),
        ("openai", "gpt-4.1", None, datetime(2026, 12, 1, tzinfo=UTC), custom("0.021", "0.015", "0.006")),
        ("openai", "long-context-custom", None, AT, custom("0.04", "0.025", "0.015")),
        ("azure.ai.openai", "prod-chat", None, AT, custom("0.0014", "0.001", "0.0004")),
    ],
)
def test_custom_prices_override_and_add(
    book: PriceBook, provider: str, model: str, service_tier: str | None, at: datetime, expected: CallCost
) -> None:
    assert book.price_call(provider, model, USAGE, service_tier=service_tier, at=at) == expected


def test_long_context_custom_rate(book: PriceBook) -> None:
    usage = TokenUsage(input_tokens=300_000, output_tokens=0)
    assert book.price_call("openai", "long-context-custom", usage, at=AT) == custom("1.5", "1.5", "0")


def test_custom_price_applies_from_its_date(book: PriceBook) -> None:
    before = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    expected = genai_prices.calc_price(
        Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_000),
        "gpt-4.1",
        provider_id="openai",
        genai_request_timestamp=before,
    )
    cost = book.price_call("openai", "gpt-4.1", USAGE, at=before)
    assert cost == CallCost(expected.total_price, expected.input_price, expected.output_price, "price_table")
    explanation = book.explain("openai", "gpt-4.1", at=before)
    assert explanation.steps[0].endswith("prices.toml:30 starts 2026-12-01, not yet in effect")
    assert explanation.valid_until == date(2026, 12, 1)


def test_unknown_models_stay_unpriced_next_to_custom_prices(book: PriceBook) -> None:
    assert book.price_call("self_hosted", "other-model", USAGE) is None
    assert book.price_call("openai", "ft:gpt-4o-mini:other-org::x", USAGE) is None


def test_explain_names_the_file_and_line(book: PriceBook, price_file: Path) -> None:
    explanation = book.explain("openai", "ft:gpt-4o-mini:acme::abc123", at=AT)
    assert explanation.source == "custom"
    assert explanation.steps == (f"custom price from {price_file}:17 (openai / ft:gpt-4o-mini:acme::*)",)
    azure = book.explain("azure.ai.openai", "prod-chat", at=AT)
    assert azure.steps == (
        "Azure deployment 'prod-chat' is model 'gpt-4o' (azure_deployments)",
        f"custom price from {price_file}:43 (azure.ai.openai / prod-chat)",
    )


def test_custom_prices_are_in_the_rows_as_the_lookup_applies_them(book: PriceBook) -> None:
    rows = [row for row in book.price_rows() if row.source == "custom"]
    key = {(row.provider, row.model, row.lookup, row.service_tier, row.valid_from) for row in rows}
    assert ("openai", "gpt-4o", "name", "", None) in key
    assert ("openai", "gpt-4o", "name", "priority", None) in key
    assert ("openai", "gpt-4.1", "name", "", date(2026, 12, 1)) in key  # genai-prices' rows before it
    assert ("self_hosted", "bge-large", "name", "", None) in key
    assert ("azure.ai.openai", "prod-chat", "name", "", None) in key
    # A prefix entry: rows for its prefix, which the store prices longer unlisted names by.
    fine_tunes = [r for r in rows if r.model == "ft:gpt-4o-mini:acme::"]
    assert {(r.lookup, r.prefix, r.rates.input) for r in fine_tunes} == {
        ("name", True, Decimal("0.3")),
        ("compact", True, Decimal("0.3")),  # a compact-dated name starts with it too
    }
    gpt4o = next(
        r for r in rows if (r.provider, r.model, r.lookup, r.service_tier) == ("openai", "gpt-4o", "name", "")
    )
    assert (gpt4o.rates.input, gpt4o.rates.cached_input, gpt4o.rates.output) == (
        Decimal(2),
        Decimal(1),
        Decimal(8),
    )
    long_context = [r.rates for r in rows if r.model == "long-context-custom" and r.lookup == "name"]
    assert [(r.input_tokens_above, r.input) for r in long_context] == [
        (0, Decimal("2.5")),
        (272_000, Decimal(5)),
    ]
    # An unlisted dated snapshot of gpt-4o is priced by genai-prices' data, not by the file's entry.
    dated = [
        r
        for r in book.price_rows()
        if (r.provider, r.model, r.lookup, r.service_tier) == ("openai", "gpt-4o", "dated", "")
    ]
    assert [(r.source, r.rates.input) for r in dated] == [("price_table", Decimal("2.5"))]


def test_prices_are_read_as_exact_decimals() -> None:
    [entry] = parse_price_file('[[price]]\nprovider = "x"\nmodel = "m"\ninput = 0.1\noutput = 1e-7\n')
    assert entry.prices.input_mtok == Decimal("0.1")
    assert entry.prices.output_mtok == Decimal("1E-7")


def test_an_empty_file_adds_nothing() -> None:
    assert parse_price_file("# nothing yet\n") == ()


# --- bad files: every problem, with file, line and field -------------------------------

FIELDS = (
    "provider, model, service_tier, valid_from, input, cached_input, cache_write, output, "
    "input_audio, cached_audio, output_audio, input_image"
)

MANY_PROBLEMS = '''\
title = "our prices"

[[price]]
provider = "openai"
input = "cheap"
output = -1
colour = "blue"

[[price]]
provider = """azure.ai.openai"""  # a multi-line string with [[price]] and = inside is still one value
model = "gpt-4o"
note_lines = [
  "a = 1",
  "[[price]]",
]
valid_from = "yesterday"
input = 1
output = 2

[[price]]
"provider" = 'openai'
model = "ft:*:acme"
service_tier = 5
input = { base = 1, tiers = [{ start = 100, price = 2 }, { start = 50, price = 1 }] }
output = { tiers = [] }
'''


def test_every_problem_is_reported_at_once_with_line_and_field() -> None:
    with pytest.raises(PriceFileError) as caught:
        parse_price_file(MANY_PROBLEMS, "prices.toml")
    assert caught.value.errors == (
        "prices.toml:1: unknown top-level key 'title': prices go in [[price]] tables",
        "prices.toml:3: [[price]] #1: missing required field 'model'",
        "prices.toml:5: [[price]] #1: field 'input': expected a non-negative number of USD per million "
        "tokens, got 'cheap'",
        "prices.toml:6: [[price]] #1: field 'output': expected a non-negative number of USD per million "
        "tokens, got -1",
        f"prices.toml:7: [[price]] #1: unknown field 'colour' (known fields: {FIELDS})",
        f"prices.toml:12: [[price]] #2: unknown field 'note_lines' (known fields: {FIELDS})",
        "prices.toml:16: [[price]] #2: field 'valid_from': expected a date like 2026-01-01, got 'yesterday'",
        "prices.toml:22: [[price]] #3: field 'model': '*' may only end the name (a prefix match)",
        "prices.toml:23: [[price]] #3: field 'service_tier': expected a non-empty string, got 5",
        "prices.toml:24: [[price]] #3: field 'input': tiers[1].start: tiers must be in increasing order of start",
        "prices.toml:25: [[price]] #3: field 'output': tiered rate needs 'base', expected a non-negative "
        "number of USD per million tokens, got None",
        "prices.toml:25: [[price]] #3: field 'output': tiered rate needs 'tiers', a non-empty list of "
        "{ start, price }",
    )
    assert str(caught.value).startswith("price file prices.toml: 12 problems:\n  prices.toml:1: unknown")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            '[[price]]\nprovider = "openai\nmodel = "m"\n',
            "prices.toml:2: not valid TOML: Illegal character '\\n'",
            id="invalid TOML",
        ),
        pytest.param(
            "price = 3\n",
            "prices.toml:1: 'price' must be an array of tables: write each entry as [[price]]",
            id="price not an array",
        ),
        pytest.param(
            '\n[price]\nprovider = "openai"\n',
            "prices.toml:2: 'price' must be an array of tables: write each entry as [[price]]",
            id="single [price] table",
        ),
        pytest.param(
            '[[price]]\nprovider = "openai"\nmodel = "m"\ninput = 1\n',
            "prices.toml:1: [[price]] #1: missing required field 'output' (write output = 0 for embeddings)",
            id="no output rate",
        ),
        pytest.param(
            '[[price]]\nprovider = "openai"\nmodel = "m"\ninput = 1\noutput = true\n',
            "prices.toml:5: [[price]] #1: field 'output': expected a non-negative number of USD per million "
            "tokens, got true",
            id="boolean rate",
        ),
        pytest.param(
            '[[price]]\nprovider = ""\nmodel = "m"\ninput = 1\noutput = 1\n',
            "prices.toml:2: [[price]] #1: field 'provider': expected a non-empty string, got ''",
            id="empty provider",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "m"\ninput = "NaN"\noutput = 1\n',
            "prices.toml:4: [[price]] #1: field 'input': expected a non-negative number of USD per million "
            "tokens, got 'NaN'",
            id="not a number",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "m"\nvalid_from = 2026-01-01T00:00:00Z\ninput = 1\noutput = 1\n',
            "prices.toml:4: [[price]] #1: field 'valid_from': expected a date like 2026-01-01, got "
            "2026-01-01 00:00:00+00:00",
            id="datetime for a date",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "m"\ninput = 1\ncached_audio = 1\noutput = 1\n',
            "prices.toml:1: [[price]] #1: these rates cannot be combined: Missing ancestor price for "
            "cached_audio: cached_input, input_audio",
            id="cached audio without its parents",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "m"\noutput = 2\n\n[price.input]\nbase = 1\n'
            "tiers = [{ start = -5, price = 1 }]\n",
            "prices.toml:8: [[price]] #1: field 'input': tiers[0].start: expected a non-negative whole number "
            "of input tokens",
            id="sub-table rates",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "m"\ninput = { base = 1, tiers = [{ start = 9 }] }\noutput = 1\n',
            "prices.toml:4: [[price]] #1: field 'input': tiers[0]: expected { start = <input tokens>, "
            "price = <rate> }",
            id="tier without price",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "m"\ninput = { base = 1, tiers = [{ start = 9, price = 2 }], x = 1 }'
            "\noutput = 1\n",
            "prices.toml:4: [[price]] #1: field 'input': unknown key 'x' in tiered rate (expected base, tiers)",
            id="unknown key in tiered rate",
        ),
        pytest.param(
            '[[price]]\nprovider = "p"\nmodel = "M"\ninput = 1\noutput = 1\n\n'
            '[[price]]\nprovider = "p"\nmodel = "m"\ninput = 2\noutput = 2\n',
            "prices.toml:7: [[price]] #2: duplicates [[price]] #1 (same provider, model, service_tier and "
            "valid_from)",
            id="duplicate entry",
        ),
    ],
)
def test_bad_file(text: str, error: str) -> None:
    with pytest.raises(PriceFileError) as caught:
        parse_price_file(text, "prices.toml")
    assert caught.value.errors == (error,)


def test_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PriceFileError) as caught:
        load_price_file(path)
    assert caught.value.errors == (
        f"{path}: cannot read the price file: [Errno 2] No such file or directory: '{path}'",
    )


def test_from_config_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[[price]]\nprovider = "p"\n')
    with pytest.raises(PriceFileError) as caught:
        PriceBook.from_config(price_file=path)
    assert caught.value.errors == (
        f"{path}:1: [[price]] #1: missing required field 'model'",
        f"{path}:1: [[price]] #1: missing required field 'input'",
        f"{path}:1: [[price]] #1: missing required field 'output' (write output = 0 for embeddings)",
    )


TRICKY = """\
# A comment with "quotes", 'apostrophes' and [[price]] in it.
[[price]]
provider = 'openai'  # literal string
model = "gpt-\\"quoted\\""
notes = '''
  input = "not a key"
  [[price]]
'''
input = 1
output = 1

[[price]]
"provider" = "openai"
model.name = "x"
input = [
  1,  # ] not the end
  "]",
]
output = \"\"\"
not a number\"\"\"
cached_input = { base = 1, tiers = [{ start = 10, price = "x" }] }
"""


def line_of(text: str, marker: str) -> int:
    return text[: text.index(marker)].count("\n") + 1


def test_lines_are_found_past_strings_comments_and_multi_line_values() -> None:
    with pytest.raises(PriceFileError) as caught:
        parse_price_file(TRICKY, "p.toml")
    number = "expected a non-negative number of USD per million tokens"
    assert caught.value.errors == (
        f"p.toml:{line_of(TRICKY, 'notes')}: [[price]] #1: unknown field 'notes' (known fields: {FIELDS})",
        f"p.toml:{line_of(TRICKY, 'model.name')}: [[price]] #2: field 'model': expected a non-empty string, "
        "got a table",
        f"p.toml:{line_of(TRICKY, 'input = [')}: [[price]] #2: field 'input': {number}, got an array",
        f"p.toml:{line_of(TRICKY, 'output = ' + chr(34))}: [[price]] #2: field 'output': {number}, "
        "got 'not a number'",
        f"p.toml:{line_of(TRICKY, 'cached_input')}: [[price]] #2: field 'cached_input': tiers[0].price: "
        f"{number}, got 'x'",
    )
