"""The typed messages between the collector's two processes: each reads back as it was sent, anything else is refused."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmledger.exporter._internal.collector import CollectorConfig
from llmledger.exporter._internal.collector.drain_process import (
    _CHILD_MAIN,  # pyright: ignore[reportPrivateUsage]
    DrainProcess,
    _StopListener,  # pyright: ignore[reportPrivateUsage]
)
from llmledger.exporter._internal.collector.messages import (
    Command,
    DrainExited,
    DrainStart,
    DrainStatus,
    MessageError,
    Report,
    StopRequest,
    decode_command,
    decode_report,
    encode,
)
from llmledger.exporter._internal.config import StoreConfig

STATUS = DrainStatus(
    counters={"requests": 12, "store_errors": 0},
    durable_counters={"written_spans": 4096, "dead_letter_spans": 1},
    durable_counters_at_open={"written_spans": 1024},
    insert_seconds=0.25,
    spool_damaged_bytes=28,
    pending_bytes=1 << 20,
    lag_seconds=1.5,
    store_up=True,
    last_error="Code: 252. DB::Exception: Too many parts — «retrying»",
    fatal_error=None,
    query_port=8123,
    query_error=None,
)


def _every_setting_set(tmp_path: Path) -> CollectorConfig:
    """A configuration with no setting at its default (the bearer token aside: it is not sent)."""
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    return CollectorConfig(
        store=StoreConfig(
            url="https://user:pw@ch.internal:8443/ledger",
            database="ledger",
            cluster="main",
            spans_ttl_days=30,
            calls_ttl_days=400,
            rollup_ttl_days=800,
        ),
        grpc_endpoint="0.0.0.0:14317",
        http_endpoint="",
        data_dir=tmp_path / "data",
        spool_max_bytes=3 << 30,
        spool_segment_bytes=1 << 20,
        fsync="never",
        max_request_bytes=1 << 20,
        max_concurrent_requests=3,
        batch_max_spans=5,
        batch_max_bytes=2 << 20,
        batch_linger_seconds=0.0,
        retry_initial_seconds=0.1,
        retry_max_seconds=2.5,
        unexplained_error_seconds=7.0,
        shutdown_timeout_seconds=0.0,
        tls_cert_file=tmp_path / "cert.pem",
        tls_key_file=tmp_path / "key.pem",
        apply_schema=False,
        native_insert=False,
        query_server=False,
        clickhouse_http_endpoint="[::1]:18123",
        clickhouse_http_password="admin-pw",
        clickhouse_http_readonly_password="reader-pw",
        log_format="json",
        log_level="debug",
    )


@pytest.mark.parametrize(
    "report",
    [
        STATUS,
        dataclasses.replace(
            STATUS, counters={}, last_error=None, fatal_error="spool: disk gone", query_port=None
        ),
        DrainExited(drained=True),
        DrainExited(drained=False, error="OSError: [Errno 28] No space left on device"),
    ],
)
def test_reports_read_back_as_sent(report: Report) -> None:
    line = encode(report)
    assert "\n" not in line
    assert decode_report(line) == report
    assert decode_report(line + "\n") == report  # as read from the pipe


@pytest.mark.parametrize("command", [StopRequest(15.0), StopRequest(0.0)])
def test_stop_requests_read_back_as_sent(command: Command) -> None:
    assert decode_command(encode(command)) == command


def test_the_configuration_reads_back_whole_but_the_bearer_token(tmp_path: Path) -> None:
    config = dataclasses.replace(_every_setting_set(tmp_path), auth_token="client-secret")
    line = encode(DrainStart(config))
    assert "client-secret" not in line
    start = decode_command(line)
    assert isinstance(start, DrainStart)
    assert start.config == dataclasses.replace(config, auth_token=None)
    assert isinstance(start.config.data_dir, Path)
    assert isinstance(start.config.tls_cert_file, Path)
    # Every field of the store's configuration goes along (a field added there must be sent too).
    sent = json.loads(line)["store"]
    assert set(sent) == {item.name for item in dataclasses.fields(StoreConfig)}
    with_file = dataclasses.replace(config, auth_token=None, auth_token_file=tmp_path / "token")
    assert "token" not in json.loads(encode(DrainStart(with_file)))["settings"]


def _start_line(tmp_path: Path, **changes: object) -> str:
    document = json.loads(encode(DrainStart(_every_setting_set(tmp_path))))
    document["settings"].update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("", "not JSON"),
        ("status: ok", "not JSON"),
        ('{"type": "status", "counters": {', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"counters": {}}', "without a type"),
        ('{"type": "restart"}', "not a message from the drain process: 'restart'"),
        (encode(StopRequest(1.0)), "not a message from the drain process: 'stop'"),
        ('{"type": "exited"}', "exited message has no 'drained'"),
        ('{"type": "exited", "drained": 1, "error": null}', "drained is 1, not true or false"),
        (json.dumps({"type": "status", **STATUS.fields(), "pending_bytes": "12"}), "pending_bytes is '12'"),
        (json.dumps({"type": "status", **STATUS.fields(), "pending_bytes": 1.5}), "not a whole number"),
        (json.dumps({"type": "status", **STATUS.fields(), "lag_seconds": None}), "not a number"),
        (json.dumps({"type": "status", **STATUS.fields(), "counters": {"requests": True}}), "counters"),
        (json.dumps({"type": "status", **STATUS.fields(), "counters": [1]}), "not an object"),
        (json.dumps({"type": "status", **STATUS.fields(), "last_error": 3}), "not a string"),
    ],
)
def test_garbled_reports_are_refused_with_the_reason(line: str, says: str) -> None:
    with pytest.raises(MessageError, match=re.escape(says)):
        decode_report(line)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"fsync": "sometimes"}, "fsync is 'sometimes', not one of always, never"),
        ({"batch_max_spans": "500"}, "batch_max_spans is '500', not a whole number"),
        ({"apply_schema": "false"}, "apply_schema is 'false', not true or false"),
        ({"data_dir": None}, "data_dir is None, not a string"),
        ({"retry_max_seconds": True}, "not a number"),
        ({"spool_max_byte": 1}, "unknown settings spool_max_byte"),
    ],
)
def test_garbled_configurations_are_refused_with_the_reason(
    tmp_path: Path, changes: dict[str, object], says: str
) -> None:
    with pytest.raises(MessageError, match=re.escape(says)):
        decode_command(_start_line(tmp_path, **changes))
    document = json.loads(_start_line(tmp_path))
    del document["settings"]["log_level"]
    with pytest.raises(MessageError, match="start message's settings has no 'log_level'"):
        decode_command(json.dumps(document))
    with pytest.raises(MessageError, match="not a message for the drain process: 'status'"):
        decode_command(encode(STATUS))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"spans_ttl_days": "30"}, "start message's store: spans_ttl_days is '30', not a whole number"),
        ({"cluster": 7}, "start message's store: cluster is 7, not a string"),
        ({"url": None}, "start message's store: url is None, not a string"),
    ],
)
def test_a_garbled_store_configuration_is_refused_with_the_reason(
    tmp_path: Path, changes: dict[str, object], says: str
) -> None:
    document = json.loads(encode(DrainStart(_every_setting_set(tmp_path))))
    document["store"].update(changes)
    with pytest.raises(MessageError, match=re.escape(says)):
        decode_command(json.dumps(document))
    document = json.loads(encode(DrainStart(_every_setting_set(tmp_path))))
    del document["store"]["rollup_ttl_days"]
    with pytest.raises(MessageError, match="start message's store has no 'rollup_ttl_days'"):
        decode_command(json.dumps(document))


def test_the_receiving_process_goes_past_a_garbled_line_and_keeps_the_last_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later = dataclasses.replace(STATUS, pending_bytes=0, durable_counters={"written_spans": 5000})
    lines = [encode(STATUS), "Traceback (most recent call last):", encode(later), '{"type": "status"}']
    lines.append(encode(DrainExited(drained=True)))
    script = f"import sys; sys.stdout.write({json.dumps(''.join(line + chr(10) for line in lines))})"
    drain = DrainProcess(_every_setting_set(tmp_path))
    with (
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as process,
        caplog.at_level(logging.WARNING, "llmledger.collector.drain"),
    ):
        drain._read_reports(process)  # pyright: ignore[reportPrivateUsage]
    assert drain.status == later
    assert drain.exited == DrainExited(drained=True)
    assert drain.counters()["written_spans"] == 5000 - 1024  # since the spool was first opened
    unreadable = [record.getMessage() for record in caplog.records]
    assert len(unreadable) == 2
    assert "not JSON" in unreadable[0]
    assert "Traceback" in unreadable[0]
    assert "status message has no 'counters'" in unreadable[1]


def test_the_drain_process_goes_past_a_garbled_command_and_stops_on_the_stop_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    commands = io.StringIO(f"garbage\n{encode(STATUS)}\n{encode(StopRequest(4.5))}\n")
    with caplog.at_level(logging.ERROR, "llmledger.collector.drain"):
        listener = _StopListener(commands)
        assert listener.requested.wait(10)
    assert listener.seconds == 4.5
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2
    assert "unreadable command" in said[0]
    assert "'garbage" in said[0]
    assert "not a message for the drain process: 'status'" in said[1]
    gone = _StopListener(io.StringIO(""))  # end of stdin: the parent is gone, stop without draining
    assert gone.requested.wait(10)
    assert gone.seconds == 0.0


def test_a_drain_process_without_a_readable_configuration_says_why_and_exits() -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_MAIN, str(os.getpid())],
        input='{"type": "start", "settings": {}}\n',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 2, child.stderr
    exited = decode_report(child.stdout)
    assert isinstance(exited, DrainExited)
    assert exited.drained is False
    assert exited.error is not None
    assert exited.error.startswith(
        "no configuration from the collector process: start message's settings has no 'grpc_endpoint'"
    )
