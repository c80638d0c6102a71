"""``llmledger prices show``, ``validate`` and ``sync``: what the instrumentation would charge and why,
and the store's copy of its price book."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import run_command
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.exporter.cli import main

# `prices show` for an Azure deployment mapped to gpt-4o by the flag.
SHOW_DEPLOYMENT_AS_4O = [
    "prices",
    "show",
    "prod-4o",
    "--provider",
    "azure.ai.openai",
    "--azure-deployment",
    "prod-4o=gpt-4o",
]


def test_show_a_bundled_price(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "show", "gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("openai / gpt-4o-mini at ")
    assert "source price_table" in out
    assert "input 0.15, cached input 0.075" in out
    assert "output 0.6" in out


def test_show_unknown_model_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "show", "my-self-hosted-llm"]) == 1
    assert "not priced: calls get no cost (never $0)" in capsys.readouterr().out


def test_show_custom_price_and_azure_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "my-self-hosted-llm"\ninput = "0.05"\noutput = "0.10"\n'
    )
    assert main(["prices", "show", "my-self-hosted-llm", "--price-file", str(prices)]) == 0
    out = capsys.readouterr().out
    assert "source custom" in out
    assert "input 0.05" in out
    assert main(SHOW_DEPLOYMENT_AS_4O) == 0
    assert "prod-4o" in capsys.readouterr().out
    assert main(["prices", "show", "x", "--azure-deployment", "nonsense"]) == 2
    assert "is not DEPLOYMENT=MODEL" in capsys.readouterr().err


def test_show_reads_the_apps_azure_deployments_and_price_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The settings `prices sync` and the app read: show explains the price the app applies.
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "house-llm"\ninput = "0.05"\noutput = "0.10"\n'
    )
    monkeypatch.setenv("LLMLEDGER_AZURE_DEPLOYMENTS", "prod-4o=gpt-4o-mini")
    monkeypatch.setenv("LLMLEDGER_PRICE_FILE", str(prices))
    assert main(["prices", "show", "prod-4o", "--provider", "azure.ai.openai"]) == 0
    out = capsys.readouterr().out
    assert "Azure deployment 'prod-4o' is model 'gpt-4o-mini'" in out
    assert "input 0.15" in out
    assert main(["prices", "show", "house-llm"]) == 0
    assert "source custom" in capsys.readouterr().out
    # A flag maps its deployment over the variable's.
    assert main(SHOW_DEPLOYMENT_AS_4O) == 0
    assert "Azure deployment 'prod-4o' is model 'gpt-4o'" in capsys.readouterr().out


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "ft:gpt-4o-mini:acme::*"\ninput = "0.30"\noutput = "1.20"\n'
    )
    assert main(["prices", "validate", str(good)]) == 0
    assert "1 prices, no problems" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[price]]\nprovider = "openai"\nmodel = "x"\ninput = "abc"\n')
    assert main(["prices", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1: [[price]] #1: missing required field 'output'" in err
    assert f"{bad}:4: [[price]] #1: field 'input': expected a non-negative number" in err
    assert main(["prices", "validate", str(tmp_path / "missing.toml")]) in (1, 2)


def test_a_bad_price_file_is_refused_as_a_whole_as_the_app_refuses_it(
    config: StoreConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str], query
) -> None:
    from llmledger.instrumentation.pricing import PriceFileError, load_price_file, refused_price_file

    good = tmp_path / "good.toml"
    good.write_text('[[price]]\nprovider = "openai"\nmodel = "gpt-4.1-mini"\ninput = 0.2\noutput = 0.8\n')
    bad = tmp_path / "prices.toml"
    # One good entry and one typo: nothing of the file is used, by the app or by sync.
    bad.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4.1-mini"\ninput = 0.3\noutput = 1.2\n\n'
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\ninptu = 1\noutput = 4\n'
    )
    with pytest.raises(PriceFileError) as refused:
        load_price_file(bad)
    store = ["--url", config.url, "--database", config.database]
    assert main(["prices", "sync", *store, "--no-genai-prices", "--price-file", str(good)]) == 0
    book = f"SELECT * FROM {config.database}.model_prices ORDER BY provider, model, lookup, service_tier"
    before = query(book)
    capsys.readouterr()
    assert main(["prices", "sync", *store, "--price-file", str(bad)]) == 2
    # The message the app logs for the same file (tests/instrumentation/test_instrumentor.py).
    assert capsys.readouterr().err == refused_price_file(refused.value) + " (nothing was written)\n"
    assert query(book) == before  # the book in force stays, whole


def test_upgrading_keeps_the_prices_synced_before(
    blank_config: StoreConfig, store_client: Client, query, make_recorder
) -> None:
    apply_migrations(store_client, blank_config, target=12)
    db = blank_config.database
    # model_prices as `prices sync` wrote it before migration 0014: flat prices by genai-prices id.
    run_command(
        store_client,
        f"INSERT INTO {db}.model_prices (provider, model, input_per_mtok, cached_input_per_mtok, "
        "output_per_mtok, source, updated_at) VALUES "
        "('google', 'gemini-2.5-flash', 0.3, 0.03, 2.5, 'genai-prices', '2026-11-01 00:00:00'), "
        "('openai', 'gpt-4o-mini', 0.15, 0.075, 0.6, 'genai-prices', '2026-11-01 00:00:00'), "
        "('openai', 'gpt-4o-mini', 0.1, NULL, 0.4, 'custom', '2026-11-01 00:00:00')",
    )
    apply_migrations(store_client, blank_config)
    assert query(
        f"SELECT provider, model, input_per_mtok AS input, cached_input_per_mtok AS cached, source "
        f"FROM {db}.model_prices ORDER BY provider, model"
    ) == [
        {
            "provider": p,
            "model": "gemini-2.5-flash",
            "input": Decimal("0.3"),
            "cached": Decimal("0.03"),
            "source": "genai-prices",
        }
        for p in ("gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai")
    ] + [
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input": Decimal("0.1"),
            "cached": Decimal("0.1"),
            "source": "custom",
        }
    ]

    recorder = make_recorder(scope="opentelemetry.instrumentation.openai")
    usage = {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
    }
    recorder.call(
        "chat", {**usage, "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini-2024-07-18"}
    )
    recorder.call("chat", {**usage, "gen_ai.system": "vertex_ai", "gen_ai.request.model": "gemini-2.5-flash"})
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, db).write(rows)
    assert query(f"SELECT provider, cost_usd, cost_source FROM {db}.llm_calls ORDER BY provider") == [
        {
            "provider": "gcp.vertex_ai",
            "cost_usd": Decimal("0.00055"),
            "cost_source": "model_prices:genai-prices",
        },
        {"provider": "openai", "cost_usd": Decimal("0.00014"), "cost_source": "model_prices:custom"},
    ]
