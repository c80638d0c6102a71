"""The direct span exporter: in process, under opentelemetry-instrument, and when the store is unusable."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from llmledger.exporter import ClickHouseSpanExporter, StoreConfig
from llmledger.exporter._internal import errors
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import run_command
from llmledger.exporter._internal.writer import ATTRIBUTE_INDEXES, SpanWriter
from tests.store_checks import OTEL_TRACES_INDEXES, built_skip_indexes

BIN = Path(sys.executable).parent
EMBEDDED_ONLY = pytest.mark.skipif(
    bool(os.environ.get("LLMLEDGER_TEST_CLICKHOUSE_URL")), reason="about the embedded store's lock"
)


def child_env(store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMLEDGER_"))}
    env.update(LLMLEDGER_CLICKHOUSE_URL=f"chdb://{store}", **extra)
    return env


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "tenant.id": "acme",
    "gen_ai.usage.input_tokens": 7,
    "gen_ai.usage.output_tokens": 3,
}


def record(recorder, count: int) -> list[ReadableSpan]:
    """``count`` new spans (the recorder keeps every span it finished; start afresh)."""
    recorder.memory.clear()
    for _ in range(count):
        recorder.call("chat gpt-4o-mini", CHAT)
    return recorder.finished()


def parts_and_spans(query, database: str) -> tuple[int, int]:
    (row,) = query(f"SELECT uniqExact(_part) AS parts, count() AS spans FROM {database}.otel_traces")
    return row["parts"], row["spans"]


def test_exports_spans_and_applies_the_schema_itself(
    blank_config: StoreConfig, recorder, query, store_client
) -> None:
    exporter = ClickHouseSpanExporter(blank_config)
    assert exporter.export(record(recorder, 1)) is SpanExportResult.SUCCESS
    exporter.shutdown()  # writes what is pending, as the SDK's shutdown at exit does
    assert query(f"SELECT tenant_id, input_tokens, output_tokens FROM {blank_config.database}.llm_calls") == [
        {"tenant_id": "acme", "input_tokens": 7, "output_tokens": 3}
    ]
    assert exporter.export(record(recorder, 1)) is SpanExportResult.FAILURE  # after shutdown
    # On the embedded store the attribute bloom filters are left to the first merge.
    assert built_skip_indexes(store_client, blank_config.database) == {
        **dict.fromkeys(OTEL_TRACES_INDEXES, True),
        **dict.fromkeys(ATTRIBUTE_INDEXES, False),
    }


@pytest.fixture
def unmerged(config: StoreConfig, store_client) -> StoreConfig:
    """A migrated database whose otel_traces keeps every insert as its own part."""
    run_command(store_client, f"SYSTEM STOP MERGES `{config.database}`.`otel_traces`")
    return config


def test_the_sdks_small_batches_are_written_as_one_insert(unmerged: StoreConfig, recorder, query) -> None:
    exporter = ClickHouseSpanExporter(unmerged, max_delay_s=60)
    results = [exporter.export(record(recorder, 3)) for _ in range(5)]
    assert results == [SpanExportResult.SUCCESS] * 5
    assert exporter.force_flush() is True
    assert parts_and_spans(query, unmerged.database) == (1, 15)
    exporter.shutdown()


def test_without_a_delay_every_export_is_its_own_insert(unmerged: StoreConfig, recorder, query) -> None:
    exporter = ClickHouseSpanExporter(unmerged, max_delay_s=0)
    for _ in range(3):
        assert exporter.export(record(recorder, 2)) is SpanExportResult.SUCCESS
        # Written before export returned: no flush needed.
    assert parts_and_spans(query, unmerged.database) == (3, 6)
    exporter.shutdown()


def test_a_full_batch_is_written_by_the_exporting_thread(unmerged: StoreConfig, recorder, query) -> None:
    exporter = ClickHouseSpanExporter(unmerged, max_batch_spans=4, max_delay_s=60)
    exporter.export(record(recorder, 3))
    assert parts_and_spans(query, unmerged.database) == (0, 0)
    exporter.export(record(recorder, 1))  # reaches 4: written before export returns
    assert parts_and_spans(query, unmerged.database) == (1, 4)
    exporter.shutdown()


def test_a_batch_is_written_when_it_is_max_delay_old(config: StoreConfig, recorder, query) -> None:
    exporter = ClickHouseSpanExporter(config, max_delay_s=0.2)
    exporter.export(record(recorder, 2))
    deadline = time.monotonic() + 10
    while parts_and_spans(query, config.database)[1] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parts_and_spans(query, config.database)[1] == 2  # no flush, no shutdown: the timer wrote it
    exporter.shutdown()


def test_a_failed_batch_is_kept_and_lands_once_when_the_store_recovers(
    blank_config: StoreConfig, store_client, recorder, query, caplog
) -> None:
    # The store opens but the database does not exist yet: every write fails for real.
    exporter = ClickHouseSpanExporter(blank_config, apply_schema=False, max_delay_s=60)
    with caplog.at_level(logging.DEBUG, logger="llmledger.exporter"):
        assert exporter.export(record(recorder, 2)) is SpanExportResult.SUCCESS
        assert exporter.force_flush() is False
        assert exporter.export(record(recorder, 1)) is SpanExportResult.SUCCESS
        assert exporter.force_flush() is False
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors  # logged once per outage
        assert "could not write 2 span(s)" in errors[0]
        assert "kept, retried later" in errors[0]

        apply_migrations(store_client, blank_config)
        assert exporter.force_flush() is True
        assert exporter.force_flush() is True  # nothing left: nothing written twice
    assert any("recovered" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert parts_and_spans(query, blank_config.database)[1] == 3
    exporter.shutdown()


def test_an_unreachable_store_bounds_what_waits_and_says_so(recorder, caplog) -> None:
    exporter = ClickHouseSpanExporter(
        StoreConfig(url="http://127.0.0.1:9/nowhere"), max_batch_spans=2, max_delay_s=60
    )
    with caplog.at_level(logging.DEBUG, logger="llmledger.exporter"):
        # Each full batch tries the store; the first failure is logged, later ones fail
        # fast without reopening. Up to 10 batches' worth (20 spans) waits, then refusal.
        results = [exporter.export(record(recorder, 1)) for _ in range(25)]
        assert results == [SpanExportResult.SUCCESS] * 20 + [SpanExportResult.FAILURE] * 5
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2, errors  # the write failure once, the refusal once
        assert "could not write 2 span(s)" in errors[0]
        assert "20 span(s) waiting for the store" in errors[1]
        causes = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
        assert causes
        assert all("not retrying the store" in cause for cause in causes)
        exporter.shutdown()
    assert "shut down with 20 span(s) it could not write" in caplog.records[-1].getMessage()


NOWHERE = StoreConfig(url="http://127.0.0.1:9/nowhere")


def a_bug(*args: object, **kwargs: object) -> Any:
    """Stands in for a bug of llmledger's own at one of the exporter's steps."""
    raise TypeError("a bug of ours")


def contained_since(before: dict[str, int], site: str) -> int:
    return errors.internal_error_counts().get(site, 0) - before.get(site, 0)


def logged_once_per_process(records: list[logging.LogRecord], site: str, before: dict[str, int]) -> bool:
    """A contained bug is logged the first time its site meets one in this process, never again."""
    logged = [r for r in records if site in r.getMessage() and r.exc_info is not None]
    return len(logged) == (0 if before.get(site) else 1)


TAKING = "the span exporter taking spans (they are dropped)"
WRITING = "the span exporter writing a batch"
FLUSHING = "the span exporter flushing"
FLUSHER = "the span exporter's flusher"


def test_a_span_it_cannot_convert_fails_the_test() -> None:
    exporter = ClickHouseSpanExporter(NOWHERE, max_delay_s=60)
    not_spans: Any = [object()]
    with pytest.raises(AttributeError):
        exporter.export(not_spans)
    exporter.shutdown()


def test_in_the_app_spans_it_cannot_convert_are_refused_counted_and_said_once(
    internal_errors_contained: None, recorder, caplog
) -> None:
    exporter = ClickHouseSpanExporter(NOWHERE, max_delay_s=60)
    not_spans: Any = [object()]
    before = errors.internal_error_counts()
    with caplog.at_level(logging.ERROR, logger="llmledger.exporter"):
        assert exporter.export(not_spans) is SpanExportResult.FAILURE
        assert exporter.export(not_spans) is SpanExportResult.FAILURE
    assert contained_since(before, TAKING) == 2
    assert logged_once_per_process(caplog.records, TAKING, before)
    assert exporter.export(record(recorder, 2)) is SpanExportResult.SUCCESS  # real spans still go
    assert exporter.pending_spans == 2
    exporter.shutdown()


def test_a_bug_in_writing_a_batch_fails_the_test(config: StoreConfig, recorder, monkeypatch, query) -> None:
    exporter = ClickHouseSpanExporter(config, max_delay_s=0)
    monkeypatch.setattr(SpanWriter, "write", a_bug)
    with pytest.raises(TypeError, match="a bug of ours"):
        exporter.export(record(recorder, 2))
    monkeypatch.undo()
    exporter.shutdown()


def test_in_the_app_a_bug_in_writing_a_batch_keeps_it_and_is_counted(
    internal_errors_contained: None, config: StoreConfig, recorder, monkeypatch, query, caplog
) -> None:
    exporter = ClickHouseSpanExporter(config, max_delay_s=0)
    before = errors.internal_error_counts()
    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, logger="llmledger.exporter"):
        patched.setattr(SpanWriter, "write", a_bug)
        assert exporter.export(record(recorder, 2)) is SpanExportResult.SUCCESS  # the app sees nothing
        assert exporter.force_flush() is False
    assert contained_since(before, WRITING) == 2
    assert logged_once_per_process(caplog.records, WRITING, before)
    assert exporter.pending_spans == 2  # kept, as after a failed write, not lost
    assert exporter.force_flush() is True
    assert parts_and_spans(query, config.database)[1] == 2
    exporter.shutdown()


def test_a_bug_in_flushing_fails_the_test(recorder, monkeypatch) -> None:
    exporter = ClickHouseSpanExporter(NOWHERE, max_delay_s=60)
    exporter.export(record(recorder, 1))
    monkeypatch.setattr(SpanRows, "dedup_token", a_bug)
    with pytest.raises(TypeError, match="a bug of ours"):
        exporter.force_flush()
    monkeypatch.undo()
    exporter.shutdown()


def test_in_the_app_a_bug_in_flushing_is_counted_and_the_flusher_survives_it(
    internal_errors_contained: None, config: StoreConfig, recorder, monkeypatch, query
) -> None:
    exporter = ClickHouseSpanExporter(config, max_delay_s=0.05)
    before = errors.internal_error_counts()
    with monkeypatch.context() as patched:
        patched.setattr(SpanRows, "dedup_token", a_bug)
        assert exporter.export(record(recorder, 2)) is SpanExportResult.SUCCESS  # wakes the flusher
        assert exporter.force_flush() is False
        deadline = time.monotonic() + 10
        while contained_since(before, FLUSHER) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert contained_since(before, FLUSHING) == 1
    assert contained_since(before, FLUSHER) >= 1  # the flusher met the bug too (it retries each second)
    # The thread lived through it: once the bug is gone it writes the spans, unasked.
    deadline = time.monotonic() + 10
    while parts_and_spans(query, config.database)[1] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parts_and_spans(query, config.database)[1] == 2
    exporter.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_inherit_pending_spans(recorder) -> None:
    exporter = ClickHouseSpanExporter(StoreConfig(url="http://127.0.0.1:9/nowhere"), max_delay_s=60)
    exporter.export(record(recorder, 3))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it would write, without touching any store
        os.write(write, str(exporter.pending_spans).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"0"
    os.close(read)
    assert exporter.pending_spans == 3
    exporter.shutdown()


APP = textwrap.dedent(
    """
    from opentelemetry import trace

    tracer = trace.get_tracer("child.app")
    for i in range(3):
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT) as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 10, "gen_ai.usage.cost": 0.25, "tenant.id": "acme",
            })
    print("app done")
    """
)


@pytest.mark.subprocess
def test_opentelemetry_instrument_writes_straight_to_the_store(tmp_path: Path, tmp_store_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = child_env(
        tmp_store_path,
        OTEL_TRACES_EXPORTER="llmledger",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="child-app",
    )
    run = subprocess.run(
        [BIN / "opentelemetry-instrument", sys.executable, app],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "app done" in run.stdout

    # The child owned the store while it ran; read it back once it has exited (on shutdown it flushed).
    read = subprocess.run(
        [
            BIN / "llmledger",
            "sql",
            "--format",
            "json",
            "SELECT ServiceName, tenant_id, input_tokens, cost_usd FROM llm_calls ORDER BY input_tokens",
        ],
        env=child_env(tmp_store_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == [
        {
            "ServiceName": "child-app",
            "tenant_id": "acme",
            "input_tokens": 100 + i,
            "cost_usd": "0.25",  # plain decimal (llmledger sql --format json)
        }
        for i in range(3)
    ]


@EMBEDDED_ONLY
@pytest.mark.subprocess
def test_a_locked_embedded_store_gets_a_clear_error(store_client, store_url: str) -> None:
    # This test process owns the session store; another process cannot open it.
    path = store_url.removeprefix("chdb://")
    run = subprocess.run(
        [BIN / "llmledger", "schema", "status", "--url", store_url],
        env=child_env(Path(path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    assert (
        f"the embedded llmledger store at {path} is open in another process (PID {os.getpid()}) "
        "that does not serve it" in run.stderr
    )
    assert "LLMLEDGER_CLICKHOUSE_URL" in run.stderr
