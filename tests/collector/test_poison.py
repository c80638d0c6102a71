"""No input stops the pipeline: wrong clocks, extreme timestamps, refused spans, a frozen drain, a full disk.

Each case holds the collector to the same promise: every acknowledged span ends up in the
store or in the dead-letter file, none twice, and other clients keep being served.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmledger.exporter._internal.collector.dead_letters import DeadLetterFile
from llmledger.exporter._internal.store import open_store, run_command

from .harness import (
    DAY_NS,
    MAX_UINT64,
    CollectorProcess,
    SteadyClient,
    dead_letters,
    drain_held,
    make_request,
    span_ids,
    store_held,
    store_with_check,
    wait_drained,
    wait_for,
)
from .test_faults import assert_each_span_once

pytestmark = pytest.mark.subprocess


def other_client(collector: CollectorProcess, service: str = "other-client") -> SteadyClient:
    """A well-behaved client sending 20-span requests the whole time."""
    return SteadyClient(collector, "/v1/traces", lambda seed: make_request(20, seed=seed, service=service))


def one_batch_with_a_pill(collector: CollectorProcess, first_seed: int) -> tuple[list[str], str]:
    """Six 10-span requests in one batch (the drain held meanwhile), span 4 of the fourth named "pill".

    Returns the acknowledged span ids and the pill's.
    """
    acked: list[str] = []
    pill = ""
    with drain_held(collector):
        for seed in range(6):
            request = make_request(10, seed=first_seed + seed, service="mixed")
            if seed == 3:
                request.resource_spans[0].scope_spans[0].spans[4].name = "pill"
                pill = request.resource_spans[0].scope_spans[0].spans[4].span_id.hex()
            assert collector.post_traces(request.SerializeToString())[0] == 200
            acked += span_ids(request)
    return acked, pill


def spread_over_days(request: ExportTraceServiceRequest, days: int, first_day: int = 0) -> None:
    """Move span ``i`` of the request ``first_day + i % days`` days back (a wrong clock each)."""
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    for index, span in enumerate(spans):
        shift = (first_day + index % days) * DAY_NS
        span.start_time_unix_nano -= shift
        span.end_time_unix_nano -= shift


def test_spans_over_150_days_and_from_120_clocks_are_written(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path / "data", f"chdb://{tmp_path / 'store'}").start()
    acked: list[str] = []
    with other_client(collector) as other:
        wait_for(lambda: len(other.acked) >= 100, 20, "the other client to be served")
        # One batch holding it all: the drain is held still while the requests arrive.
        with drain_held(collector):
            wide = make_request(150, seed=1, service="one-request-150-days")
            spread_over_days(wide, 150)
            assert collector.post_traces(wide.SerializeToString())[0] == 200
            acked += span_ids(wide)
            for clock in range(120):
                request = make_request(1, seed=100 + clock, service="wrong-clocks")
                spread_over_days(request, 1, first_day=200 + clock * 3)
                assert collector.post_traces(request.SerializeToString())[0] == 200
                acked += span_ids(request)
        wait_for(lambda: collector.metric("split_batches_total") >= 1, 30, "the batch to be split")
        served = len(other.acked)
        wait_for(lambda: len(other.acked) >= served + 200, 30, "the other client to be served meanwhile")
    wait_drained(collector, 60)
    assert set(other.statuses) == {200}
    assert collector.metric("split_batches_total") >= 1  # the 100-partition limit was met, and passed
    assert collector.metric("dead_letter_spans_total") == 0
    assert_each_span_once(collector, acked + other.acked)
    days = collector.scalar(
        "SELECT uniqExact(toDate(Timestamp)) FROM otel_traces WHERE ServiceName != 'other-client'"
    )
    assert days == 270
    assert collector.metric("written_spans_total") == collector.scalar("SELECT count() FROM otel_traces")
    assert collector.stop() == 0
    assert "writing it in parts (by day)" in collector.log()


@pytest.mark.parametrize(
    ("path", "args", "kvlist"),
    [
        ("native", [], False),
        ("SpanRows (a kvlist value)", [], True),
        ("SpanRows (--no-native-insert)", ["--no-native-insert"], False),
    ],
)
def test_a_start_time_of_2_64_minus_1_lands_on_every_insert_path(
    tmp_path: Path, path: str, args: list[str], kvlist: bool
) -> None:
    """As the Collector's exporter does: the time taken as a signed 64-bit number (-1 ns)."""
    del path
    collector = CollectorProcess(tmp_path / "data", f"chdb://{tmp_path / 'store'}", args=args).start()
    request = make_request(5, seed=7)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.start_time_unix_nano = MAX_UINT64
    event = span.events.add()
    event.name = "far"
    event.time_unix_nano = MAX_UINT64
    if kvlist:
        value = span.attributes.add()
        value.key = "app.map"
        entry = value.value.kvlist_value.values.add()
        entry.key = "k"
        entry.value.string_value = "v"
    assert collector.post_traces(request.SerializeToString())[0] == 200
    with other_client(collector) as other:
        wait_for(
            lambda: collector.metric("written_spans_total") >= 5 and len(other.acked) >= 40, 30, "writes"
        )
    wait_drained(collector, 30)
    assert_each_span_once(collector, span_ids(request) + other.acked)
    timestamp, events = collector.query(
        "SELECT toString(Timestamp), arrayMap(t -> toString(t), Events.Timestamp) FROM otel_traces "
        "WHERE SpanId = {id:String}",
        {"id": span.span_id.hex()},
    ).result_rows[0]
    assert (timestamp, events) == ("1969-12-31 23:59:59.999999999", ["1969-12-31 23:59:59.999999999"])
    assert collector.metric("dead_letter_spans_total") == 0
    assert collector.stop() == 0


def test_a_span_the_store_refuses_is_dead_lettered_the_rest_written_and_replayed_after_a_fix(
    tmp_path: Path,
) -> None:
    """The store refuses one span for its content (an operator's CHECK constraint); nothing else is held up."""
    store = store_with_check(tmp_path, "no_pills", "SpanName != 'pill'")
    data = tmp_path / "data"
    collector = CollectorProcess(data, store.url).start()
    with other_client(collector) as other:
        wait_for(lambda: len(other.acked) >= 40, 20, "the other client to be served")
        acked, pill = one_batch_with_a_pill(collector, 200)  # the poisoned request among good ones
        wait_for(lambda: collector.metric("dead_letter_spans_total") >= 1, 60, "the refused span set aside")
        # The pipeline goes on: later requests land too.
        later = make_request(10, seed=300, service="later")
        assert collector.post_traces(later.SerializeToString())[0] == 200
    wait_drained(collector, 30)
    assert set(other.statuses) == {200}
    assert collector.metric("dead_letter_spans_total") == 1
    assert collector.metric("dead_letter_records_total") == 1
    written = [span for span in acked if span != pill] + span_ids(later) + other.acked
    assert_each_span_once(collector, written)
    assert collector.scalar("SELECT count() FROM otel_traces WHERE SpanId = {id:String}", {"id": pill}) == 0
    (entry,) = DeadLetterFile(data / "dead-letters").entries()
    assert entry.items == 1
    assert "VIOLATED_CONSTRAINT" in entry.reason or "no_pills" in entry.reason
    assert span_ids(ExportTraceServiceRequest.FromString(entry.payload)) == [pill]
    assert collector.stop() == 0
    log = collector.log()
    assert log.count("moved 1 span(s) the store refuses") == 1

    listed = dead_letters(data, "list")
    assert listed.returncode == 0, listed.stderr
    assert entry.key in listed.stdout
    assert "pending" in listed.stdout
    shown = dead_letters(data, "show", entry.key)
    assert '"name": "pill"' in shown.stdout, shown.stderr
    refused = dead_letters(data, "replay", "--url", store.url)
    assert refused.returncode == 1
    assert "still refused" in refused.stderr

    client = open_store(store, write=True)  # the fix
    run_command(client, "ALTER TABLE otel_traces DROP CONSTRAINT no_pills")
    client.close()
    replayed = dead_letters(data, "replay", "--url", store.url)
    assert replayed.returncode == 0, replayed.stderr
    again = dead_letters(data, "replay", "--url", store.url, entry.key)
    assert again.returncode == 0, again.stderr  # named explicitly: written again, dropped as a duplicate
    client = open_store(store)
    try:
        counts = client.query(
            "SELECT count(), uniqExact(SpanId), countIf(SpanId = {id:String}) FROM otel_traces",
            parameters={"id": pill},
        ).result_rows[0]
    finally:
        client.close()
    assert counts == (len(written) + 1, len(written) + 1, 1)
    assert DeadLetterFile(data / "dead-letters").entries()[0].replayed


def test_an_unwritable_store_location_is_reported_and_counted_not_a_crash_loop(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's parent directory should be")
    data = tmp_path / "data"
    collector = CollectorProcess(data, f"chdb://{blocker / 'store'}").start()
    acked: list[str] = []
    for seed in range(3):
        request = make_request(20, seed=400 + seed)
        assert collector.post_traces(request.SerializeToString())[0] == 200  # spooled
        acked += span_ids(request)
    wait_for(lambda: collector.metric("store_errors_total") >= 2, 20, "the store errors to be counted")
    status, detail = collector.get("/readyz")
    assert status == 200  # the spool still takes spans
    assert b"Not a directory" in detail
    assert collector.get("/healthz")[0] == 200
    assert collector.metric("drain_restarts") == 0
    assert collector.stop() == 0
    log = collector.log()
    assert "no error reported" not in log
    assert "cannot start" in log or "cannot write to the store" in log

    # Pointed at a store it can write, the same data directory delivers what was acknowledged.
    fixed = CollectorProcess(data, f"chdb://{tmp_path / 'store'}").start()
    wait_for(lambda: fixed.metric("written_spans_total") == len(acked), 30, "the spool to drain")
    assert_each_span_once(fixed, acked)
    assert fixed.stop() == 0


def test_a_drain_that_cannot_start_says_why_and_recovers_when_it_can(tmp_path: Path) -> None:
    """The spool's reader lock held by a stray process: the drain's exit line names the cause."""
    import fcntl

    data = tmp_path / "data"
    (data / "spool").mkdir(parents=True)
    stray = os.open(data / "spool" / "reader.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(stray, fcntl.LOCK_EX)
    collector = CollectorProcess(data, f"chdb://{tmp_path / 'store'}").start(wait_ready=False)
    try:
        request = make_request(10, seed=800)
        wait_for(lambda: collector.get("/readyz")[0] == 200, 30, "the receiver")
        assert collector.post_traces(request.SerializeToString())[0] == 200  # spooled meanwhile
        # The reader waits 30 s for a process being replaced to let go, then gives up.
        wait_for(lambda: "the drain process exited" in collector.log(), 60, "the drain to give up")
    finally:
        os.close(stray)  # the stray process goes away
    log = collector.log()
    assert "no error reported" not in log
    line = next(line for line in log.splitlines() if "the drain process exited" in line)
    assert "SpoolError" in line, line
    assert "reader.lock is locked" in line, line
    wait_for(lambda: collector.metric("written_spans_total") == 10, 90, "the restarted drain to deliver")
    assert_each_span_once(collector, span_ids(request))
    assert collector.stop() == 0


def test_a_frozen_drain_is_not_live_and_recovers(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path / "data", f"chdb://{tmp_path / 'store'}").start()
    with other_client(collector) as other:
        wait_for(lambda: len(other.acked) >= 40, 20, "the other client to be served")
        with drain_held(collector):
            # Documented: not live once the drain process has not reported for 10 s.
            wait_for(lambda: collector.get("/healthz")[0] == 500, 14, "/healthz to say the drain is frozen")
            assert b"has not reported" in collector.get("/healthz")[1]
            assert collector.get("/readyz")[0] == 200  # the spool keeps taking spans meanwhile
        wait_for(lambda: collector.get("/healthz")[0] == 200, 10, "/healthz to recover")
    wait_drained(collector, 30)
    assert set(other.statuses) == {200}
    assert_each_span_once(collector, other.acked)
    assert collector.metric("written_spans_total") == len(other.acked)
    assert collector.stop() == 0


def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /tmp",
        ],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _tmpfs_available(), reason="needs unprivileged user and mount namespaces for a tmpfs")
def test_a_full_disk_makes_the_collector_not_ready_until_there_is_room(tmp_path: Path) -> None:
    """The spool on a 20 MB tmpfs (its own mount namespace); the store held elsewhere, then released."""
    store = tmp_path / "store"
    data = tmp_path / "data"
    (data / "spool").mkdir(parents=True)
    collector = CollectorProcess(
        data,
        f"chdb://{store}",
        args=["--spool-max-bytes", "256MiB", "--spool-segment-bytes", "2MiB", "--max-request-bytes", "1MiB"],
        command_prefix=[
            "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            'mount -t tmpfs -o size=20m tmpfs "$0" && exec "$@"', str(data / "spool"),
        ],
    )  # fmt: skip
    acked: list[str] = []
    with store_held(store):
        collector.start(wait_ready=False)
        wait_for(lambda: collector.get("/readyz")[0] == 200, 30, "readiness")
        refused = None
        for seed in range(400):
            request = make_request(200, seed=1000 + seed)
            status, headers, _ = collector.post_traces(request.SerializeToString())
            if status != 200:
                refused = (status, headers)
                break
            acked += span_ids(request)
        assert refused is not None, "the tmpfs never filled"
        assert refused[0] == 503
        assert refused[1]["retry-after"] == "2"
        status, detail = collector.get("/readyz")
        assert status == 503, detail
        assert collector.get("/healthz")[0] == 200  # alive: restarting it would not free the disk
    # The store is back: the drain empties the spool, the disk has room, requests are taken again.
    wait_for(lambda: collector.get("/readyz")[0] == 200, 60, "readiness after the spool drained")
    later = make_request(20, seed=5000)
    assert collector.post_traces(later.SerializeToString())[0] == 200
    acked += span_ids(later)
    wait_drained(collector, 60)
    assert_each_span_once(collector, acked)
    assert collector.stop() == 0


def test_a_split_batch_replayed_after_a_crash_and_a_fix_is_written_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.collector.split_replay_worker", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "counts": [119, 119, 119, 119],  # otel_traces rows, distinct spans, llm_calls, hourly calls
        "totals": {"written_spans": 119, "dead_letter_spans": 1},
        "dead_letters": [1],
    }


def _divides_by(divisor: str) -> str:
    """A CHECK that fails with ILLEGAL_DIVISION (code 153) for a row whose ``divisor`` is 0.

    An error that names neither the data nor the store's state: the drain cannot tell which.
    (A CHECK fails before anything is written; a materialized view failing after the table
    took the block is another matter, see docs/collector.md.)
    """
    return f"intDiv(1, {divisor}) = 1"


def test_an_unexplained_error_is_split_out_and_only_its_span_set_aside(tmp_path: Path) -> None:
    """A span the store keeps failing with an unlisted error while it takes the rest: dead-lettered, no stall."""
    store = store_with_check(
        tmp_path, "operator_check", _divides_by("toUInt8(CAST(SpanName AS String) != 'pill')")
    )
    data = tmp_path / "data"
    collector = CollectorProcess(data, store.url).start()
    with other_client(collector) as other:
        wait_for(lambda: len(other.acked) >= 40, 20, "the other client to be served")
        acked, pill = one_batch_with_a_pill(collector, 400)
        wait_for(lambda: collector.metric("dead_letter_spans_total") >= 1, 90, "the failing span set aside")
        later = make_request(10, seed=500, service="later")
        assert collector.post_traces(later.SerializeToString())[0] == 200
    wait_drained(collector, 30)
    assert set(other.statuses) == {200}
    assert collector.metric("dead_letter_spans_total") == 1
    written = [span for span in acked if span != pill] + span_ids(later) + other.acked
    assert_each_span_once(collector, written)
    (entry,) = DeadLetterFile(data / "dead-letters").entries()
    assert "ILLEGAL_DIVISION" in entry.reason or "Code: 153" in entry.reason
    assert span_ids(ExportTraceServiceRequest.FromString(entry.payload)) == [pill]
    assert collector.stop() == 0


def test_an_unexplained_error_on_every_insert_sets_nothing_aside(tmp_path: Path) -> None:
    """The same error for every row is the store's, not the data's: retried until fixed, nothing set aside."""
    store = store_with_check(tmp_path, "operator_check", _divides_by("0"))
    collector = CollectorProcess(tmp_path / "data", store.url).start()
    request = make_request(4, seed=600)
    assert collector.post_traces(request.SerializeToString())[0] == 200
    # Enough attempts to split the request down to single spans and try each of them.
    wait_for(lambda: collector.metric("store_errors_total") >= 40, 120, "the inserts to keep failing")
    assert collector.metric("dead_letter_spans_total") == 0
    assert collector.metric("written_spans_total") == 0
    client = open_store(store, write=True)  # the fix, through the collector that owns the store
    try:
        run_command(client, "ALTER TABLE otel_traces DROP CONSTRAINT operator_check")
    finally:
        client.close()
    wait_drained(collector, 30)
    assert collector.metric("dead_letter_spans_total") == 0
    assert_each_span_once(collector, span_ids(request))
    assert collector.stop() == 0


def test_a_lone_span_failing_unexplained_is_set_aside_after_the_configured_time(tmp_path: Path) -> None:
    """A batch of one failing span cannot be compared with anything: it waits unexplained_error_seconds."""
    store = store_with_check(
        tmp_path, "operator_check", _divides_by("toUInt8(CAST(SpanName AS String) != 'pill')")
    )
    data = tmp_path / "data"
    collector = CollectorProcess(data, store.url, args=["--unexplained-error-seconds", "3"]).start()
    request = make_request(1, seed=700)
    request.resource_spans[0].scope_spans[0].spans[0].name = "pill"
    assert collector.post_traces(request.SerializeToString())[0] == 200
    wait_for(lambda: collector.metric("dead_letter_spans_total") == 1, 60, "the lone span set aside")
    later = make_request(10, seed=701)
    assert collector.post_traces(later.SerializeToString())[0] == 200
    wait_drained(collector, 30)
    assert_each_span_once(collector, span_ids(later))
    (entry,) = DeadLetterFile(data / "dead-letters").entries()
    assert span_ids(ExportTraceServiceRequest.FromString(entry.payload)) == span_ids(request)
    assert collector.stop() == 0
