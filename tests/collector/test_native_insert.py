"""The engine-side insert writes exactly the rows SpanRows writes, and refuses what it cannot render."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmledger.exporter._internal.collector.native_insert import _UNSUPPORTED, insert_statement
from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS
from llmledger.exporter._internal.writer import ATTRIBUTE_INDEXES
from tests.store_checks import OTEL_TRACES_INDEXES

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]


def test_native_insert_rows_equal_span_rows(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.collector.native_equivalence_worker", str(tmp_path), "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["differences"] == []
    # A batch is refused exactly when it holds what the SQL does not render: no batch that
    # could have been written natively is sent the slow way.
    assert summary["wrong_path"] == []
    # Decoded a request at a time, a batch is still one part (or nothing) with one token.
    blocks = summary["read_in_blocks"]
    assert {key: blocks[key] for key in ("written", "replay_dropped", "refused_wrote_nothing")} == {
        "written": True,
        "replay_dropped": True,
        "refused_wrote_nothing": True,
    }
    # The attribute bloom filters are left to the first merge; the trace-id one is built
    # on insert. Queries find the same rows before and after.
    assert blocks["indexes_on_insert"] == {
        **dict.fromkeys(OTEL_TRACES_INDEXES, True),
        **dict.fromkeys(ATTRIBUTE_INDEXES, False),
    }
    assert blocks["indexes_after_merge"] == dict.fromkeys(OTEL_TRACES_INDEXES, True)
    assert blocks["same_rows_found_after_merge"] is True
    assert summary["rows"] == summary["native_rows"] > 300
    # Both paths were taken: most batches natively, those with map values or nested arrays by SpanRows.
    assert summary["native_batches"] >= 15
    assert summary["refused_batches"] >= 5
    # Encodings no serializer writes but every protobuf parser reads: the same rows as
    # SpanRows. Those the engine's stricter reader rejects are refused (for SpanRows), not
    # raised as a failure of the native path, which three failures would turn off.
    odd = summary["odd_encodings"]
    assert {name: result["same"] for name, result in odd.items()} == dict.fromkeys(odd, True)
    assert {name: result["statement"] for name, result in odd.items()} == {
        "value field twice, merged": "refused",
        "value field twice, same member": "refused",
        "two members in one value": "refused",
        "unknown field after the member": "native",
        "non-minimal varint int": "native",
        "non-minimal varint length": "native",
        "bool 2": "refused",
        "negative int": "native",
        "empty value": "native",
        "array element with two members": "refused",
    }


def test_the_statement_writes_the_columns_span_rows_writes() -> None:
    # The SQL file lists its columns itself: a column SpanRows gained and the file did not
    # would be left to its default by every native insert.
    statement = insert_statement("llm-ledger")
    header = re.search(r"INSERT INTO `llm-ledger`\.`otel_traces` \((.*?)\)\nWITH", statement, re.S)
    assert header is not None
    assert re.findall(r"`([^`]+)`", header.group(1)) == [name for name, _ in OTEL_TRACES_COLUMNS]
    # The refusal the drain recognises is the one the statement raises.
    assert f"throwIf(NOT ok, '{_UNSUPPORTED}')" in statement
