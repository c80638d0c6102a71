"""``llmledger demo`` end to end (collector, app and server in real processes); its printed report checked against the store."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

LLMLEDGER = str(Path(sys.executable).parent / "llmledger")
ROOT = Path(__file__).resolve().parents[2]


def _table(out: str) -> dict[str, dict[str, str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tenant "))
    header = lines[start].split()
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


@pytest.mark.subprocess
def test_demo_report_matches_the_store(tmp_path: Path, tiktoken_offline: Path) -> None:
    demo_dir = tmp_path / "demo"
    store = demo_dir / "store"
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "TIKTOKEN_CACHE_DIR": str(tiktoken_offline),
    }
    demo = subprocess.run(
        [LLMLEDGER, "demo", "--dir", str(demo_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "Next:"):
        assert step in demo.stdout
    printed = _table(demo.stdout)
    assert set(printed) == {"acme", "globex", "initech", "TOTAL"}

    sql = (
        "SELECT tenant_id AS tenant, count() AS calls, countIf(NOT success) AS errors, countIf(is_fallback) AS fallbacks, "
        "sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
        "sum(ifNull(cost_usd, toDecimal128(0, 12))) AS cost, countIf(cost_usd IS NULL AND success) AS unpriced "
        "FROM llm_calls GROUP BY tenant_id ORDER BY tenant_id"
    )
    check = subprocess.run(
        [LLMLEDGER, "sql", sql, "--url", f"chdb://{store}", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    stored = {row["tenant"]: row for row in json.loads(check.stdout)}
    assert set(stored) == {"acme", "globex", "initech"}
    for tenant, row in stored.items():
        shown = printed[tenant]
        for column in ("calls", "errors", "fallbacks", "input_tokens", "output_tokens"):
            assert int(shown[column]) == int(row[column]), (tenant, column)
        assert Decimal(shown["cost_usd"]) == Decimal(row["cost"])
        assert row["unpriced"] == 0  # every demo model has a price
    assert Decimal(printed["TOTAL"]["cost_usd"]) == sum(Decimal(r["cost"]) for r in stored.values())
    # The sample app's fallbacks happened and were flagged: every failure was followed by a fallback.
    assert (
        sum(int(r["errors"]) for r in stored.values())
        == sum(int(r["fallbacks"]) for r in stored.values())
        > 0
    )
    _check_summary_against_store(demo.stdout, store, env)
    # "Next" installs the instrumentation from where it is (not on a package index): this checkout.
    (source,) = re.findall(r"pip install (\S+) opentelemetry-distro", demo.stdout)
    assert Path(source) == ROOT / "instrumentation"
    assert 'name = "llmledger-instrumentation"' in (Path(source) / "pyproject.toml").read_text()
    assert "llmledger demo --serve-api" in demo.stdout
    # The commands "Next" suggests run as printed, against the demo's store.
    suggested = [
        line.strip()
        for line in demo.stdout.splitlines()
        if line.strip().startswith("LLMLEDGER_CLICKHOUSE_URL=")
    ]
    assert len(suggested) == 2
    for command in suggested:
        ran = subprocess.run(
            command, shell=True, capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert ran.returncode == 0, (command, ran.stderr)
        assert "acme" in ran.stdout


FEATURE_WORDS = {
    "lead scorings": "lead_scoring",
    "contact extractions": "contact_extraction",
    "support-chat turns (streamed)": "support_chat",
    "search indexings (embeddings)": "search_index",
    "summaries (Responses API)": "summaries",
}


def _number(pattern: str, text: str) -> list[int]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the demo's output:\n{text}"
    return [int(g) for g in match.groups()]


def _check_summary_against_store(out: str, store: Path, env: dict[str, str]) -> None:
    """Every number the demo's summary states, recounted from the store."""
    (operations,) = _number(r"the app ran (\d+) operations in", out)
    by_feature = {
        FEATURE_WORDS[words]: int(count)
        for count, words in re.findall(
            r"(\d+) ([^,\d]+?)(?:,|$)", out.split("operations in", 1)[1].split(": ", 1)[1].splitlines()[0]
        )
    }
    api_calls, failed = _number(
        r"they made (\d+) OpenAI API calls: one per operation, plus a fallback call on \S+ for each of the (\d+) lead scorings",
        out,
    )
    written, llm_spans, app_spans = _number(
        r"the collector wrote (\d+) spans: (\d+) LLM call spans .* and (\d+) of the app's own", out
    )
    legend_operations, legend_fallbacks = _number(
        r"one span each: (\d+) operations \+ (\d+) fallback calls", out
    )
    (legend_errors,) = _number(r"calls that failed \((\d+) here", out)
    sql = (
        "SELECT (SELECT count() FROM otel_traces) AS spans,"
        " (SELECT countIf(ScopeName = 'llmledger.instrumentation') FROM otel_traces) AS llm_spans,"
        " (SELECT countIf(ScopeName = 'llmledger.demo.app' AND SpanName = 'score_lead') FROM otel_traces) AS app_spans,"
        " (SELECT count() FROM llm_calls) AS calls,"
        " (SELECT countIf(NOT is_fallback) FROM llm_calls) AS first_attempts,"
        " (SELECT countIf(is_fallback) FROM llm_calls) AS fallbacks,"
        " (SELECT countIf(NOT success) FROM llm_calls) AS errors,"
        " (SELECT toJSONString(CAST(sumMap(map(feature, toUInt64(NOT is_fallback))), 'Map(String, UInt64)')) FROM llm_calls) AS by_feature"
    )  # fmt: skip
    check = subprocess.run(
        [LLMLEDGER, "sql", sql, "--url", f"chdb://{store}", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    (row,) = json.loads(check.stdout)
    assert written == row["spans"] == llm_spans + app_spans
    assert llm_spans == row["llm_spans"] == row["calls"] == api_calls
    assert app_spans == row["app_spans"] == by_feature["lead_scoring"]
    assert operations == legend_operations == row["first_attempts"] == sum(by_feature.values())
    assert failed == legend_fallbacks == legend_errors == row["fallbacks"] == row["errors"] > 0
    assert api_calls == operations + failed
    assert by_feature == {k: int(v) for k, v in json.loads(row["by_feature"]).items()}


@pytest.mark.subprocess
def test_demo_refuses_to_wipe_a_non_demo_directory(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    done = subprocess.run(
        [LLMLEDGER, "demo", "--dir", str(precious)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "is not a demo directory" in done.stdout + done.stderr
    assert (precious / "data.txt").read_text() == "keep me"


def test_the_compose_example_app_uses_only_the_public_demo_module(monkeypatch, capsys) -> None:
    example = ROOT / "deploy" / "example-app" / "example_app.py"
    imported = {
        node.module
        for node in ast.walk(ast.parse(example.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "llmledger.exporter.demo" in imported
    assert not [name for name in imported if "_internal" in name]

    from llmledger.exporter.demo import FAILING_MODELS, DemoOpenAIServer, run_sample_app

    # One round of what the example app loops over, through the real SDK and server.
    server = DemoOpenAIServer(failing_models=FAILING_MODELS).start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local-stand-in")
        assert run_sample_app() == 0
    finally:
        server.stop()
    assert "sample app finished" in capsys.readouterr().err


def test_demo_names_the_missing_extras_and_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from llmledger.exporter._internal.demo.run import run_demo

    monkeypatch.setitem(sys.modules, "openai", None)  # as if the demo extra were not installed
    out = io.StringIO()
    code, result = run_demo(tmp_path / "demo", out)
    assert (code, result) == (2, None)
    assert out.getvalue() == (
        "llmledger demo: the openai SDK is missing; install the demo's extras (from the checkout): "
        f"pip install {ROOT / 'instrumentation'} '{ROOT / 'exporter'}[embedded,demo]'\n"
    )


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), children of children included."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not ours to be, e.g. a container's init, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_every_child_and_says_what_was_written(
    tmp_path: Path, tiktoken_offline: Path, sig: signal.Signals
) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "TIKTOKEN_CACHE_DIR": str(tiktoken_offline),
    }
    # A session of its own, so the signal goes to the demo's whole foreground group as a
    # terminal's Ctrl-C does.
    demo = subprocess.Popen(
        [LLMLEDGER, "demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    while not any(line.startswith("[3/5]") for line in lines):
        line = demo.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    children = _descendants(demo.pid)
    assert len(children) >= 2  # the collector (and its drain process) and the app
    os.killpg(demo.pid, sig)
    rest, _ = demo.communicate(timeout=120)
    assert demo.returncode == 130, "".join(lines) + rest
    last = rest.strip().splitlines()[-1]
    assert re.fullmatch(
        r"llmledger demo: interrupted; stopped the app and the collector in [0-9.]+s; "
        r"(\d+ spans|no spans) written to chdb://.+",
        last,
    ), last
    alive = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if _alive(pid)}
    assert not alive
