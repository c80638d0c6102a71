"""Faults: the store away, SIGKILL mid-load, a full spool, a failing disk — nothing acknowledged is lost or doubled."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from tests.polling import SLOW_MACHINE_SECONDS

from .conftest import free_port
from .harness import (
    CollectorProcess,
    make_logs_request,
    make_metrics_request,
    make_request,
    sequence_numbers,
    span_ids,
    store_held,
    wait_for,
)
from .test_collector import send_llm_spans

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]


def assert_each_span_once(collector: CollectorProcess, acked: list[str]) -> None:
    total, unique = collector.query("SELECT count(), uniqExact(SpanId) FROM otel_traces").result_rows[0]
    assert total == unique, "a span was written twice"
    present = 0
    for start in range(0, len(acked), 10_000):
        present += collector.scalar(
            "SELECT count() FROM otel_traces WHERE SpanId IN {ids:Array(String)}",
            {"ids": acked[start : start + 10_000]},
        )
    assert present == len(acked), "an acknowledged span is missing"
    assert collector.scalar("SELECT count() FROM llm_calls") == total


def test_store_unavailable_then_available(tmp_path: Path) -> None:
    """The embedded store is held by another process; spans keep arriving; then it is released."""
    store = tmp_path / "store"
    with store_held(store):
        collector = CollectorProcess(tmp_path / "data", f"chdb://{store}").start()
        endpoint = f"http://127.0.0.1:{collector.http_port}/v1/traces"
        send_llm_spans(HttpSpanExporter(endpoint=endpoint), "while-locked", 200)
        send_llm_spans(
            GrpcSpanExporter(endpoint=f"http://127.0.0.1:{collector.grpc_port}"), "while-locked", 100
        )
        wait_for(lambda: collector.metric("store_errors_total") >= 1, 10, "a failed store open")
        wait_for(lambda: collector.metric("retried_spans_total") > 0, 10, "a failed insert")
        assert collector.metric("spooled_spans_total") == 300
        assert collector.metric("written_spans_total") == 0
        assert collector.metric("spool_pending_bytes") > 0
        assert collector.get("/readyz")[0] == 200  # still accepting: the spool holds the spans
    send_llm_spans(HttpSpanExporter(endpoint=endpoint), "after-release", 200)
    wait_for(
        lambda: collector.metric("written_spans_total") >= 500, SLOW_MACHINE_SECONDS, "500 spans written"
    )
    assert collector.metric("retried_spans_total") > 0
    rows = collector.query(
        "SELECT ServiceName, count(), uniqExact(SpanId) FROM otel_traces GROUP BY 1 ORDER BY 1"
    ).result_rows
    assert rows == [("after-release", 200, 200), ("while-locked", 300, 300)]
    assert collector.stop() == 0
    assert "store writes recovered" in collector.log()


def test_sigkill_mid_load_then_restart_delivers_every_acked_span_once(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    collector = CollectorProcess(tmp_path / "data", store, args=["--batch-max-spans", "1000"]).start()
    acked: list[str] = []
    acked_lock = threading.Lock()
    stop = threading.Event()

    def send(worker: int) -> None:
        seed = worker * 1_000_000
        while not stop.is_set():
            request = make_request(100, seed=seed)
            seed += 1
            try:
                status, _, _ = collector.post_traces(request.SerializeToString())
            except OSError:
                return
            if status == 200:
                with acked_lock:
                    acked.extend(span_ids(request))

    senders = [threading.Thread(target=send, args=(worker,)) for worker in range(3)]
    for sender in senders:
        sender.start()
    try:
        wait_for(
            lambda: collector.metric("written_spans_total") >= 3000,
            SLOW_MACHINE_SECONDS,
            "the drain to be busy",
        )
        collector.kill()
    finally:
        stop.set()
        for sender in senders:
            sender.join(15)
    assert len(acked) >= 3000

    restarted = CollectorProcess(tmp_path / "data", store).start()
    wait_for(lambda: restarted.metric("spool_pending_bytes") == 0, SLOW_MACHINE_SECONDS, "the spool to drain")
    assert_each_span_once(restarted, acked)

    # The drain process dies on its own (an OOM kill, say): it is restarted, nothing is lost.
    (drain_pid,) = Path(f"/proc/{restarted.pid}/task/{restarted.pid}/children").read_text().split()
    os.kill(int(drain_pid), signal.SIGKILL)
    for seed in range(5):
        request = make_request(100, seed=10_000_000 + seed)
        assert restarted.post_traces(request.SerializeToString())[0] == 200
        acked += span_ids(request)
    wait_for(
        lambda: restarted.metric("drain_restarts") == 1,
        SLOW_MACHINE_SECONDS,
        "the drain process to be restarted",
    )
    written_before = restarted.metric("written_spans_total")
    wait_for(
        lambda: restarted.metric("spool_pending_bytes") == 0,
        SLOW_MACHINE_SECONDS,
        "the new spans to be written",
    )
    assert restarted.metric("written_spans_total") >= written_before  # counters survive the restart
    assert_each_span_once(restarted, acked)
    assert restarted.stop() == 0


def assert_each_record_once(collector: CollectorProcess, table: str, acked: list[str]) -> None:
    column = "LogAttributes" if table == "otel_logs" else "Attributes"
    total, unique = collector.query(f"SELECT count(), uniqExact({column}['seq']) FROM {table}").result_rows[0]
    assert total == unique, f"a row was written twice in {table}"
    present = 0
    for start in range(0, len(acked), 10_000):
        present += collector.scalar(
            f"SELECT count() FROM {table} WHERE {column}['seq'] IN {{seqs:Array(String)}}",
            {"seqs": acked[start : start + 10_000]},
        )
    assert present == len(acked), f"an acknowledged row is missing from {table}"


def test_sigkill_with_metrics_and_logs_in_flight_delivers_every_acked_record_once(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    collector = CollectorProcess(tmp_path / "data", store, args=["--batch-max-spans", "1000"]).start()
    acked: dict[str, list[str]] = {"/v1/metrics": [], "/v1/logs": []}
    acked_lock = threading.Lock()
    stop = threading.Event()

    def send(path: str, worker: int) -> None:
        seed = worker * 1_000_000
        make = make_metrics_request if path == "/v1/metrics" else make_logs_request
        while not stop.is_set():
            request = make(100, seed=seed)
            seed += 1
            try:
                status, _, _ = collector.post(path, request.SerializeToString())
            except OSError:
                return
            if status == 200:
                with acked_lock:
                    acked[path].extend(sequence_numbers(request))

    senders = [
        threading.Thread(target=send, args=(path, worker))
        for worker, path in enumerate(["/v1/metrics", "/v1/logs", "/v1/metrics", "/v1/logs"], start=1)
    ]
    for sender in senders:
        sender.start()
    try:
        wait_for(
            lambda: (
                collector.metric("written_data_points_total") >= 2000
                and collector.metric("written_log_records_total") >= 2000
            ),
            SLOW_MACHINE_SECONDS,
            "both drains to be busy",
        )
        collector.kill()
    finally:
        stop.set()
        for sender in senders:
            sender.join(15)
    assert min(map(len, acked.values())) >= 2000

    restarted = CollectorProcess(tmp_path / "data", store).start()
    wait_for(
        lambda: restarted.metric("spool_pending_bytes") == 0, SLOW_MACHINE_SECONDS, "the spools to drain"
    )
    assert_each_record_once(restarted, "otel_metrics_histogram", acked["/v1/metrics"])
    assert_each_record_once(restarted, "otel_logs", acked["/v1/logs"])
    assert restarted.stop() == 0


def test_spool_full_refuses_retryably_and_keeps_what_it_accepted(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/"
    data = tmp_path / "data"
    collector = CollectorProcess(
        data,
        unreachable,
        args=[
            "--spool-max-bytes", "1MiB", "--spool-segment-bytes", "128KiB", "--max-request-bytes", "256KiB",
            "--shutdown-timeout-seconds", "1",
        ],
    ).start()  # fmt: skip
    accepted: list[str] = []
    refusal: tuple[int, dict[str, str], bytes] | None = None
    for seed in range(60):
        request = make_request(60, seed=seed)
        status, headers, body = collector.post_traces(request.SerializeToString())
        if status != 200:
            refusal = (status, headers, body)
            break
        accepted += span_ids(request)
    assert refusal is not None, "the spool never filled"
    status, headers, body = refusal
    assert (status, headers["retry-after"]) == (429, "2")
    assert Status.FromString(body).code == 8  # RESOURCE_EXHAUSTED
    assert "bound" in Status.FromString(body).message

    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as raised:
            export(make_request(60, seed=999).SerializeToString(), timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # pyright: ignore[reportAttributeAccessIssue]
    trailers: dict[str, bytes] = dict(error.trailing_metadata())  # pyright: ignore
    details = Status.FromString(trailers["grpc-status-details-bin"]).details[0]
    retry = RetryInfo()
    assert details.Unpack(retry)
    assert retry.retry_delay.seconds == 2
    # The Python SDK's exporter reads this one (a bare RetryInfo), not the Status above.
    assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 2

    assert collector.get("/readyz")[0] == 503
    assert collector.metric("spool_full_refusals_total") >= 2
    assert collector.metric("written_spans_total") == 0
    assert collector.metric("store_up") == 0
    assert collector.metric("spooled_spans_total") == len(accepted)
    assert collector.stop(timeout=20) == 0  # SIGTERM: stops receiving, keeps the spool
    assert "kept for the next start" in collector.log()

    # The store comes back (here: an embedded one); everything accepted is delivered once.
    restarted = CollectorProcess(data, f"chdb://{tmp_path / 'store'}").start()
    wait_for(lambda: restarted.metric("spool_pending_bytes") == 0, SLOW_MACHINE_SECONDS, "the spool to drain")
    assert_each_span_once(restarted, accepted)
    assert restarted.scalar("SELECT count() FROM otel_traces") == len(accepted)
    assert restarted.stop() == 0


def limit_file_size() -> None:
    """A per-file size limit: writes past 300 kB fail with EFBIG, as a full disk fails with ENOSPC."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_disk_errors_are_reported_not_swallowed(tmp_path: Path) -> None:
    collector = CollectorProcess(
        tmp_path / "data",
        f"http://127.0.0.1:{free_port()}/",
        args=[
            "--spool-segment-bytes",
            "8MiB",
            "--spool-max-bytes",
            "64MiB",
            "--shutdown-timeout-seconds",
            "1",
        ],
        env={"LLMLEDGER_COLLECTOR_LOG_LEVEL": "info"},
        preexec_fn=limit_file_size,
    ).start()
    accepted = 0
    for seed in range(40):
        status, headers, body = collector.post_traces(make_request(60, seed=seed).SerializeToString())
        if status != 200:
            break
        accepted += 1
    else:
        pytest.fail("the spool never hit the file size limit")
    assert 0 < accepted < 40
    assert (status, headers["retry-after"]) == (503, "2")
    message = Status.FromString(body).message
    assert "cannot store spans right now" in message
    assert "File too large" in message
    assert collector.metric("spool_errors_total") >= 1
    assert collector.get("/healthz")[0] == 200
    assert collector.stop(timeout=20) == 0
    assert "spool write failed" in collector.log()


def test_a_batch_inserted_before_a_crash_is_not_written_twice(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.collector.replay_worker", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "otel_traces": 120,
        "llm_calls": 120,
        "llm_usage_hourly": 120,
    }
