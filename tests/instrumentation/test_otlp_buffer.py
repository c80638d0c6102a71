"""The app-side buffer: its reader trusts nothing, its files change hands safely, its bounds hold.

The reader is fuzzed like the collector's spool (tests/collector/test_spool.py): whatever is
torn, truncated or overwritten, it returns only records that were written, whole, and every
record the damage did not touch. Delivery against a real collector is in
tests/collector/test_app_buffer.py; here the collector is absent or answers with a refusal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmledger.instrumentation._internal.otlp_buffer import (
    ACK,
    DATA,
    BufferFile,
    adopt_orphans,
    encode_record,
    pending_records,
    scan_records,
)
from llmledger.instrumentation._internal.otlp_transport import OtlpSettings
from llmledger.instrumentation.export import BufferedOTLPSpanExporter, BufferSettings
from tests.polling import wait_for


def free_port() -> int:
    """A loopback port nobody listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


payloads = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=12)


def _file_bytes(items: list[bytes], acked: set[int]) -> tuple[bytes, list[int]]:
    """The bytes a writer leaves after appending ``items`` and closing those in ``acked``."""
    data = b""
    offsets: list[int] = []
    for index, payload in enumerate(items):
        offsets.append(len(data))
        data += encode_record(DATA, payload, index + 1, 1_700_000_000.0 + index)
        if index in acked:
            data += encode_record(ACK, offsets[index].to_bytes(8, "little"), 0, 0.0)
    return data, offsets


def _payloads(data: bytes, records: list[int]) -> list[bytes]:
    scan, _ = scan_records(data)
    by_offset = {r.offset: r for r in scan.records}
    return [
        data[by_offset[o].payload_offset : by_offset[o].payload_offset + by_offset[o].length] for o in records
    ]


@given(payloads, st.data())
def test_what_is_written_is_read_back_and_closed_records_are_not_pending(
    items: list[bytes], data: st.DataObject
) -> None:
    acked = data.draw(st.sets(st.integers(0, len(items) - 1)))
    raw, offsets = _file_bytes(items, acked)
    scan, acks = scan_records(raw)
    assert scan.end == len(raw)
    assert scan.damaged_bytes == 0
    pending = pending_records(scan, acks)
    assert [r.offset for r in pending] == [o for i, o in enumerate(offsets) if i not in acked]
    assert [r.spans for r in pending] == [i + 1 for i in range(len(items)) if i not in acked]
    assert _payloads(raw, [r.offset for r in pending]) == [p for i, p in enumerate(items) if i not in acked]


@given(payloads, st.data())
def test_a_torn_write_loses_only_the_record_being_written(items: list[bytes], data: st.DataObject) -> None:
    raw, offsets = _file_bytes(items, set())
    cut = data.draw(st.integers(0, len(raw)))
    scan, acks = scan_records(raw[:cut])
    whole = [o for i, o in enumerate(offsets) if o + len(encode_record(DATA, items[i], 0, 0.0)) <= cut]
    assert [r.offset for r in pending_records(scan, acks)] == whole
    assert scan.end == (whole[-1] + len(encode_record(DATA, items[len(whole) - 1], 0, 0.0)) if whole else 0)
    assert scan.damaged_bytes == 0


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.data())
def test_damage_is_stepped_over_and_never_passed_on(items: list[bytes], data: st.DataObject) -> None:
    raw, offsets = _file_bytes(items, set())
    start = data.draw(st.integers(0, len(raw) - 1))
    garbage = data.draw(st.binary(min_size=1, max_size=64))
    damaged = bytearray(raw)
    damaged[start : start + len(garbage)] = garbage
    scan, acks = scan_records(bytes(damaged))
    found = {r.offset: r for r in pending_records(scan, acks)}
    ends = [o + len(encode_record(DATA, items[i], 0, 0.0)) for i, o in enumerate(offsets)]
    for index, offset in enumerate(offsets):
        untouched = ends[index] <= start or offset >= start + len(garbage)
        if untouched and bytes(damaged[offset : ends[index]]) == raw[offset : ends[index]]:
            assert offset in found, f"record {index} was not touched and must be read"
    originals = {offsets[i]: p for i, p in enumerate(items)}
    for offset, record in found.items():
        # Anything returned is a record that was written, byte for byte.
        payload = bytes(damaged[record.payload_offset : record.payload_offset + record.length])
        assert originals.get(offset) == payload


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    scan, acks = scan_records(raw)
    assert 0 <= scan.end <= len(raw)
    assert scan.damaged_bytes <= scan.end
    assert all(r.kind == DATA for r in pending_records(scan, acks))


def test_a_live_owners_file_is_never_adopted_a_dead_ones_is(tmp_path: Path) -> None:
    live = BufferFile.create(tmp_path)
    live.append(DATA, b"live", 1, 1.0)
    dead = BufferFile.create(tmp_path)
    dead.append(DATA, b"one", 1, 1.0)
    second = dead.append(DATA, b"two", 2, 2.0)
    dead.append(DATA, b"three", 3, 3.0)
    dead.ack(second)
    dead.close(delete=False)  # its process is gone: the kernel released the lock
    (adopted,) = list(adopt_orphans(tmp_path, max_file_bytes=1 << 20))
    assert adopted.file.path == dead.path
    assert [r.read() for r in adopted.pending] == [b"one", b"three"]
    # Held by its adopter now: a third process takes nothing.
    assert list(adopt_orphans(tmp_path, max_file_bytes=1 << 20)) == []
    adopted.file.close(delete=False)
    live.close(delete=True)


def test_an_adopter_cuts_a_torn_tail_before_appending(tmp_path: Path) -> None:
    dead = BufferFile.create(tmp_path)
    dead.append(DATA, b"whole", 1, 1.0)
    dead.close(delete=False)
    with open(dead.path, "ab") as handle:
        handle.write(encode_record(DATA, b"torn mid-write", 1, 2.0)[:-3])
    (adopted,) = list(adopt_orphans(tmp_path, max_file_bytes=1 << 20))
    (record,) = adopted.pending
    adopted.file.ack(record.offset)
    adopted.file.close(delete=False)
    scan, acks = scan_records(dead.path.read_bytes())
    assert scan.end == dead.path.stat().st_size
    assert pending_records(scan, acks) == []


# -- the exporter without a collector ---------------------------------------------------------


def _spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for index in range(count):
        with tracer.start_as_current_span("chat m", attributes={"gen_ai.operation.name": "chat", "i": index}):
            pass
    return list(memory.get_finished_spans())


@pytest.fixture
def absent_collector() -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}


def test_spans_the_collector_cannot_take_wait_on_disk_for_the_next_process(
    tmp_path: Path, absent_collector: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    exporter = BufferedOTLPSpanExporter(buffer_dir=tmp_path, environ=absent_collector)
    caplog.set_level(logging.WARNING, "llmledger.instrumentation.otlp_buffer")
    for _ in range(3):
        assert exporter.export(_spans(5)).name == "SUCCESS"
    stats = exporter.stats()
    assert (stats.pending_batches, stats.pending_spans, stats.buffered_spans) == (3, 15, 15)
    assert not stats.collector_reachable
    assert len([r for r in caplog.records if "cannot take spans" in r.getMessage()]) == 1
    exporter.shutdown(timeout_millis=100)
    (left,) = list(tmp_path.glob("*.otlpbuf"))
    successor = BufferedOTLPSpanExporter(buffer_dir=tmp_path, environ=absent_collector)
    stats = successor.stats()
    assert (stats.adopted_files, stats.pending_spans) == (1, 15)
    successor.shutdown(timeout_millis=100)
    # Still undelivered: still there, for whoever comes next.
    assert left.exists()


def test_the_size_bound_drops_new_spans_counted_and_logged_once(
    tmp_path: Path, absent_collector: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "llmledger.instrumentation.otlp_buffer")
    batch = _spans(5)
    exporter = BufferedOTLPSpanExporter(buffer_dir=tmp_path, max_bytes=3000, environ=absent_collector)
    results = [exporter.export(batch).name for _ in range(20)]
    stats = exporter.stats()
    assert "FAILURE" in results
    assert stats.disk_bytes <= 3000
    assert stats.dropped_spans["full"] == 5 * results.count("FAILURE")
    assert stats.pending_spans == 5 * results.count("SUCCESS")
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1
    exporter.shutdown(timeout_millis=100)


def test_the_age_bound_drops_what_waited_too_long(tmp_path: Path, absent_collector: dict[str, str]) -> None:
    exporter = BufferedOTLPSpanExporter(buffer_dir=tmp_path, max_age_seconds=0.01, environ=absent_collector)
    exporter.export(_spans(4))
    wait_for(
        lambda: exporter.stats().dropped_spans.get("expired") == 4, 10, "the expired batch dropped", 0.05
    )
    assert exporter.stats().pending_batches == 0
    exporter.shutdown(timeout_millis=100)
    assert list(tmp_path.glob("*.otlpbuf")) == []


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"bad request"
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_endpoint() -> Iterator[dict[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}/v1/traces"}
    server.shutdown()
    server.server_close()


def test_a_request_refused_for_good_is_dropped_not_kept(
    tmp_path: Path, refusing_endpoint: dict[str, str]
) -> None:
    exporter = BufferedOTLPSpanExporter(buffer_dir=tmp_path, environ=refusing_endpoint)
    assert exporter.export(_spans(3)).name == "FAILURE"
    stats = exporter.stats()
    assert stats.dropped_spans == {"rejected": 3}
    assert stats.pending_batches == 0
    exporter.shutdown(timeout_millis=100)
    assert list(tmp_path.glob("*.otlpbuf")) == []


def test_an_unusable_directory_still_exports(tmp_path: Path, absent_collector: dict[str, str]) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    exporter = BufferedOTLPSpanExporter(buffer_dir=blocked / "buffer", environ=absent_collector)
    assert exporter.export(_spans(2)).name == "FAILURE"
    assert exporter.stats().dropped_spans == {"no_buffer": 2}
    exporter.shutdown(timeout_millis=100)


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "protocol", "endpoint"),
    [
        ({}, "http/protobuf", "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http/protobuf", "http://c:4318/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t/x",
            },
            "http/protobuf",
            "https://t/x",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", "http://localhost:4317"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "grpc",
            "http://localhost:4317",
        ),
    ],
)
def test_the_standard_variables_choose_protocol_and_endpoint(
    env: dict[str, str], protocol: str, endpoint: str
) -> None:
    settings_ = OtlpSettings.from_env(env)
    assert (settings_.protocol, settings_.endpoint) == (protocol, endpoint)


def test_headers_timeout_and_compression_come_from_the_standard_variables() -> None:
    settings_ = OtlpSettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20secret,x-team=billing",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2.5",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        }
    )
    assert settings_.headers == {"authorization": "Bearer secret", "x-team": "billing"}
    assert settings_.timeout == 2.5
    assert settings_.gzip


def test_every_invalid_standard_variable_is_named_at_once() -> None:
    with pytest.raises(ValueError, match="http/json") as raised:
        OtlpSettings.from_env(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd",
            }
        )
    assert "soon" in str(raised.value)
    assert "zstd" in str(raised.value)


def test_buffer_settings_default_to_one_directory_per_service_under_the_data_home() -> None:
    settings_ = BufferSettings.from_env({"XDG_DATA_HOME": "/data", "OTEL_SERVICE_NAME": "billing api"})
    assert settings_.directory == Path("/data/llmledger/otlp-buffer/billing_api")
    sized = BufferSettings.from_env(
        {"LLMLEDGER_OTLP_BUFFER_MAX_BYTES": "16MiB", "LLMLEDGER_OTLP_BUFFER_DIR": "/b"}
    )
    assert (sized.directory, sized.max_bytes) == (Path("/b"), 16 * 1024 * 1024)


def test_buffer_settings_given_in_code_win_over_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"LLMLEDGER_OTLP_BUFFER_MAX_BYTES": "lots", "LLMLEDGER_OTLP_BUFFER_MAX_AGE_SECONDS": "60"}
    with caplog.at_level(logging.WARNING, logger="llmledger.instrumentation"):
        settings_ = BufferSettings.from_env(env, directory=tmp_path, max_bytes=4096)
    assert (settings_.directory, settings_.max_bytes, settings_.max_age_seconds) == (tmp_path, 4096, 60.0)
    # The invalid variable is still named, once, though the argument replaced it.
    assert caplog.text.count("LLMLEDGER_OTLP_BUFFER_MAX_BYTES='lots' is not a size") == 1
    exporter = BufferedOTLPSpanExporter(buffer_dir=str(tmp_path / "b"), max_bytes=8192, environ=env)
    try:
        assert exporter.buffer_directory == tmp_path / "b"
    finally:
        exporter.shutdown()


def test_the_entry_point_names_the_exporter() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="opentelemetry_traces_exporter") if e.name == "llmledger_otlp"]
    assert entry.load() is BufferedOTLPSpanExporter


def test_files_are_private_to_the_user(tmp_path: Path) -> None:
    file = BufferFile.create(tmp_path / "new")
    assert os.stat(file.path).st_mode & 0o777 == 0o600
    file.close(delete=True)
