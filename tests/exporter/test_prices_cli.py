"""``llmledger prices show`` and ``prices validate``: what the instrumentation would charge, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmledger.exporter import StoreConfig
from llmledger.exporter.cli import main


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
    assert (
        main(
            [
                "prices",
                "show",
                "prod-4o",
                "--provider",
                "azure.ai.openai",
                "--azure-deployment",
                "prod-4o=gpt-4o",
            ]
        )
        == 0
    )
    assert "prod-4o" in capsys.readouterr().out
    assert main(["prices", "show", "x", "--azure-deployment", "nonsense"]) == 2
    assert "is not DEPLOYMENT=MODEL" in capsys.readouterr().err


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

    bad = tmp_path / "prices.toml"
    # One good entry and one typo: nothing of the file is used, by the app or by sync.
    bad.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4.1-mini"\ninput = 0.3\noutput = 1.2\n\n'
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\ninptu = 1\noutput = 4\n'
    )
    with pytest.raises(PriceFileError) as refused:
        load_price_file(bad)
    argv = ["prices", "sync", "--price-file", str(bad), "--url", config.url, "--database", config.database]
    assert main(argv) == 2
    assert refused_price_file(refused.value) in capsys.readouterr().err
    assert query(f"SELECT count() AS n FROM {config.database}.model_prices") == [{"n": 0}]
