"""``llmledger report`` against a seeded store with known totals: every grouping, filters, formats."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.trace import SpanKind

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.money import plain_decimal
from llmledger.exporter._internal.report import DIMENSIONS, ReportQuery, parse_when, run_report
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.exporter.cli import main

from .conftest import Recorder

HOUR = 3_600_000_000_000
DAY0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

# (tenant, user, feature, conversation, model, provider, day, hour, input, output, cost or None, failed, fallback)
CALLS: list[tuple[Any, ...]] = [
    ("acme", "alice", "lead_scoring", "c1", "gpt-4.1", "openai", 0, 9, 1000, 200, "0.0036", False, False),
    (
        "acme",
        "alice",
        "lead_scoring",
        "c1",
        "gpt-4.1-mini",
        "openai",
        0,
        9,
        1000,
        200,
        "0.00072",
        False,
        True,
    ),
    ("acme", "bob", "support_chat", "c2", "gpt-4o", "openai", 0, 10, 500, 900, "0.01025", False, False),
    ("acme", "bob", "support_chat", "c2", "gpt-4o", "openai", 1, 11, 400, 100, "0.002", False, False),
    ("acme", "bob", "support_chat", "c3", "gpt-4o", "openai", 1, 11, 0, 0, None, True, False),
    (
        "globex",
        "hank",
        "search_index",
        "",
        "text-embedding-3-small",
        "openai",
        0,
        12,
        8000,
        0,
        "0.00016",
        False,
        False,
    ),
    ("globex", "marge", "summaries", "c9", "llama-3.3-70b", "groq", 1, 13, 300, 80, None, False, False),
    (
        "initech",
        "peter",
        "lead_scoring",
        "c5",
        "gpt-4.1",
        "azure.ai.openai",
        1,
        14,
        2000,
        10,
        "0.00408",
        False,
        False,
    ),
    # No tenant and no price: "(unattributed)" and "unpriced" in the report, never a blank or $0.
    ("", "", "", "", "llama-3.3-70b", "groq", 1, 15, 50, 5, None, False, False),
]
KEY = {
    "tenant": 0,
    "user": 1,
    "feature": 2,
    "conversation": 3,
    "model": 4,
    "provider": 5,
    "day": 6,
    "hour": 7,
}


def seed_calls(config: StoreConfig, store_client: Client, *, shared_traces: bool = False) -> StoreConfig:
    """Land CALLS as llmledger's spans: each call its own trace (an app without a web-framework
    span), or with ``shared_traces`` the calls of one user's hour under one request span."""
    recorder = Recorder({"service.name": "report-test"}, "llmledger.instrumentation")
    requests: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for call in CALLS:
        requests[(call[0], call[1], call[6], call[7]) if shared_traces else (id(call),)].append(call)
    for calls in requests.values():
        start_ns = DAY0 + calls[0][6] * 24 * HOUR + calls[0][7] * HOUR
        if shared_traces:
            with recorder.tracer.start_as_current_span(
                "POST /score", kind=SpanKind.SERVER, start_time=start_ns
            ):
                _record(recorder, calls)
        else:
            _record(recorder, calls)
    rows = SpanRows()
    rows.add_sdk_spans(recorder.finished())
    SpanWriter(store_client, config.database).write(rows)
    return config


def _record(recorder: Recorder, calls: list[tuple[Any, ...]]) -> None:
    for tenant, user, feature, conv, model, provider, day, hour, inp, out, cost, failed, fallback in calls:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": _operation(model),
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "user.id": user,
            "llmledger.feature": feature,
            "llmledger.fallback": fallback,
            "llmledger.fallback.attempt": 1 if fallback else 0,
        }
        if tenant:
            attrs["tenant.id"] = tenant
        if conv:
            attrs["gen_ai.conversation.id"] = conv
        if fallback:
            # What the instrumentation records on a fallback: the attempt it replaced.
            attrs["llmledger.fallback.from_model"] = "gpt-4.1"
            attrs["llmledger.fallback.from_error"] = "RateLimitError"
        if not failed:
            attrs["gen_ai.usage.input_tokens"] = inp
            attrs["gen_ai.usage.output_tokens"] = out
        if cost is not None:
            attrs["gen_ai.usage.cost"] = float(cost)
            attrs["llmledger.cost.source"] = "price_table"
        if failed:
            attrs["error.type"] = "InternalServerError"
        recorder.call(
            f"chat {model}",
            attrs,
            start_ns=DAY0 + day * 24 * HOUR + hour * HOUR,
            error="boom" if failed else None,
        )


@pytest.fixture
def seeded(config: StoreConfig, store_client: Client) -> StoreConfig:
    return seed_calls(config, store_client)


def _operation(model: str) -> str:
    return "embeddings" if "embedding" in model else "chat"


def _dim(call: tuple[Any, ...], dim: str) -> Any:
    return _operation(call[4]) if dim == "operation" else call[KEY[dim]]


def expected(
    dims: tuple[str, ...], calls: list[tuple[Any, ...]] = CALLS
) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {
            "calls": 0,
            "errors": 0,
            "fallbacks": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": Decimal(0),
            "unpriced_calls": 0,
        }
    )
    for call in calls:
        key = tuple(_dim(call, d) for d in dims)
        acc = out[key]
        acc["calls"] += 1
        acc["errors"] += call[11]
        acc["fallbacks"] += call[12]
        acc["input_tokens"] += 0 if call[11] else call[8]
        acc["output_tokens"] += 0 if call[11] else call[9]
        acc["cost_usd"] += Decimal(call[10] or 0)
        acc["unpriced_calls"] += call[10] is None and not call[11]
    return dict(out)


def normalise(dims: tuple[str, ...], result: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in result.rows:
        record = dict(zip(result.columns, row, strict=True))
        key = tuple(
            (record[d].day - 1) if d == "day" else record[d].hour if d == "hour" else record[d] for d in dims
        )
        got[key] = {
            m: record[m]
            for m in (
                "calls",
                "errors",
                "fallbacks",
                "input_tokens",
                "output_tokens",
                "cost_usd",
                "unpriced_calls",
            )
        }
    return got


@pytest.mark.parametrize(
    "dims", [(d,) for d in DIMENSIONS] + [("tenant", "model"), ("day", "feature"), ("tenant", "conversation")]
)
def test_every_grouping_matches_known_totals(
    seeded: StoreConfig, store_client: Client, dims: tuple[str, ...]
) -> None:
    result = run_report(store_client, seeded.database, ReportQuery(group_by=dims))
    assert result.source == ("llm_calls" if "conversation" in dims else "llm_usage_hourly")
    assert normalise(dims, result) == expected(dims)
    assert result.totals()["cost_usd"] == Decimal("0.02081")


def test_filters_and_window(seeded: StoreConfig, store_client: Client) -> None:
    query = ReportQuery(
        group_by=("user",),
        tenants=("acme",),
        features=("support_chat", "lead_scoring"),
        since=parse_when("2026-01-02"),
        until=parse_when("2026-01-03"),
    )
    got = normalise(("user",), run_report(store_client, seeded.database, query))
    day1_acme = [c for c in CALLS if c[0] == "acme" and c[6] == 1]
    assert got == expected(("user",), day1_acme)


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_cli_formats(seeded: StoreConfig, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code = main(
        ["report", "--by", "tenant", "--format", fmt, "--url", seeded.url, "--database", seeded.database]
    )
    assert code == 0
    out = capsys.readouterr().out
    want = {k[0] or "(unattributed)": v["cost_usd"] for k, v in expected(("tenant",)).items() if k[0]}
    if fmt == "json":
        records = json.loads(out)
        got = {r["tenant"]: Decimal(r["cost_usd"]) for r in records if r["cost_usd"] is not None}
        assert [r["cost_usd"] for r in records if r["tenant"] == "(unattributed)"] == [None]
    elif fmt == "csv":
        records = list(csv.DictReader(io.StringIO(out)))
        got = {r["tenant"]: Decimal(r["cost_usd"]) for r in records if r["cost_usd"]}
        assert [r["cost_usd"] for r in records if r["tenant"] == "(unattributed)"] == [""]
    else:
        lines = [line.split() for line in out.splitlines()[2:-1] if not line.startswith("-")]
        header = out.splitlines()[0].split()
        got = {
            cells[0]: Decimal(cells[header.index("cost_usd")])
            for cells in lines
            if cells[0] not in ("(unattributed)", "total")
        }
        assert [c[header.index("cost_usd")] for c in lines if c[0] == "(unattributed)"] == ["unpriced"]
        assert [c[header.index("cost_usd")] for c in lines if c[0] == "total"] == ["0.02081"]
    assert got == want


# The report as people read it, to the character: plain decimals with every significant
# digit, "unpriced" for a cost nobody knows, "(unattributed)" for calls without a tenant,
# a total row. CSV and JSON say the same with an empty cell / null.
GOLDEN_TABLE = """\
tenant          calls  errors  fallbacks  input_tokens  cached_input_tokens  cache_write_input_tokens  output_tokens  reasoning_tokens  cost_usd  unpriced_calls
--------------  -----  ------  ---------  ------------  -------------------  ------------------------  -------------  ----------------  --------  --------------
acme            5      1       1          2900          0                    0                         1400           0                 0.01657   0
initech         1      0       0          2000          0                    0                         10             0                 0.00408   0
globex          2      0       0          8300          0                    0                         80             0                 0.00016   1
(unattributed)  1      0       0          50            0                    0                         5              0                 unpriced  1
--------------  -----  ------  ---------  ------------  -------------------  ------------------------  -------------  ----------------  --------  --------------
total           9      1       1          13250         0                    0                         1495           0                 0.02081   2
(4 rows)
"""
GOLDEN_CSV = """\
tenant,calls,errors,fallbacks,input_tokens,cached_input_tokens,cache_write_input_tokens,output_tokens,reasoning_tokens,cost_usd,unpriced_calls
acme,5,1,1,2900,0,0,1400,0,0.01657,0
initech,1,0,0,2000,0,0,10,0,0.00408,0
globex,2,0,0,8300,0,0,80,0,0.00016,1
(unattributed),1,0,0,50,0,0,5,0,,1
"""


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_report_golden(seeded: StoreConfig, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    argv = ["report", "--by", "tenant", "--format", fmt, "--url", seeded.url, "--database", seeded.database]
    assert main(argv) == 0
    assert capsys.readouterr().out == (GOLDEN_TABLE if fmt == "table" else GOLDEN_CSV)


def test_report_golden_json(seeded: StoreConfig, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "report",
        "--by",
        "tenant",
        "--format",
        "json",
        "--url",
        seeded.url,
        "--database",
        seeded.database,
    ]
    assert main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["tenant"], r["cost_usd"]) for r in records] == [
        ("acme", "0.01657"),
        ("initech", "0.00408"),
        ("globex", "0.00016"),
        ("(unattributed)", None),
    ]


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("6.00000E-7", "0.0000006"),
        ("1.8E-7", "0.00000018"),
        ("0E-12", "0"),
        ("100.000000000000", "100"),
        ("12345678901234567890.123456789012", "12345678901234567890.123456789012"),
        ("-0.000000", "0"),
        ("1E+3", "1000"),
    ],
)
def test_plain_decimal(amount: str, text: str) -> None:
    assert plain_decimal(Decimal(amount)) == text


def test_cli_reports_every_bad_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--by", "tenant,nope,tenant", "--since", "yesterday-ish", "--limit", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--since: 'yesterday-ish' is not a date" in err
    assert "unknown grouping 'nope'" in err
    assert "--by lists a grouping twice" in err
    assert "--limit must be between 1 and 1000000" in err


def test_parse_when_relative_and_absolute() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_when("7d", now=now) == datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    assert parse_when("24h", now=now) == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_when("2026-11-01T08:30", now=now) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    assert parse_when("2026-11-01T08:30+02:00", now=now) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
