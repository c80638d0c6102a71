"""Micro-benchmark of the pricing hot path: PriceBook.price_call on a warm cache.

    python bench/bench_pricing.py [--number 200000] [--repeat 5]

Prints the best-of-repeats time per call for typical calls, next to genai-prices'
``calc_price`` for the same call (which PriceBook must not run per request).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

import genai_prices
from genai_prices import Usage

from llmledger.instrumentation._internal.pricing import PriceBook
from llmledger.instrumentation._internal.usage import TokenUsage

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)


def scenarios(book: PriceBook) -> dict[str, Callable[[], object]]:
    chat = TokenUsage(input_tokens=1_200, output_tokens=350)
    cached = TokenUsage(
        input_tokens=20_000, output_tokens=3_000, cached_input_tokens=12_288, reasoning_tokens=2_048
    )
    long_context = TokenUsage(input_tokens=300_000, output_tokens=8_000, cached_input_tokens=100_000)
    embedding = TokenUsage(input_tokens=8_191, output_tokens=0)
    return {
        "gpt-4o-mini chat, now": lambda: book.price_call("openai", "gpt-4o-mini-2024-07-18", chat),
        "gpt-4o-mini chat, at=": lambda: book.price_call("openai", "gpt-4o-mini-2024-07-18", chat, at=AT),
        "gpt-5 cached+reasoning, priority": lambda: book.price_call(
            "openai", "gpt-5", cached, service_tier="priority"
        ),
        "gpt-5.4 long context (tiered)": lambda: book.price_call("openai", "gpt-5.4", long_context),
        "text-embedding-3-small": lambda: book.price_call("openai", "text-embedding-3-small", embedding),
        "deepseek-chat (time-of-day prices)": lambda: book.price_call("deepseek", "deepseek-chat", cached),
        "unknown model (counted)": lambda: book.price_call("openai", "gpt-9-imaginary", chat),
    }


def measure(call: Callable[[], object], number: int, repeat: int) -> float:
    call()  # resolve and cache outside the timing
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    book = PriceBook()
    book.on_unpriced = lambda provider, model: None
    print(f"{'scenario':40} {'us/call':>8}")
    for name, call in scenarios(book).items():
        print(f"{name:40} {measure(call, args.number, args.repeat):8.2f}")

    usage = Usage(input_tokens=1_200, output_tokens=350)
    baseline = measure(
        lambda: genai_prices.calc_price(usage, "gpt-4o-mini-2024-07-18", provider_id="openai"),
        max(args.number // 50, 100),
        args.repeat,
    )
    print(f"{'genai_prices.calc_price (reference)':40} {baseline:8.2f}")


if __name__ == "__main__":
    main()
