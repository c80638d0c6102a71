"""Chunked request bodies: the decoder on its own (fuzzed), then over the wire as Node's exporters send them."""

from __future__ import annotations

import gzip
import io
import socket
import ssl

import pytest
from google.rpc.status_pb2 import Status
from hypothesis import given, settings
from hypothesis import strategies as st

from llmledger.exporter._internal.collector.chunked import (
    ChunkedBodyError,
    ChunkedTooLargeError,
    read_chunked,
)

from .conftest import TOKEN
from .harness import CollectorProcess, make_request, span_ids, wait_for

LIMIT = 1 << 16


def chunked(chunks: list[bytes], *, extension: bytes = b"", trailers: bytes = b"") -> bytes:
    """The chunked framing of ``chunks`` (lowercase hex sizes, as Node writes them)."""
    out = bytearray()
    for chunk in chunks:
        out += b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk)
    return bytes(out + b"0\r\n" + trailers + b"\r\n")


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks: list[bytes] = []
    position = 0
    for size in sizes:
        if position >= len(data):
            break
        chunks.append(data[position : position + size])
        position += size
    if position < len(data):
        chunks.append(data[position:])
    return chunks


# -- the decoder ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=4096),
    sizes=st.lists(st.integers(1, 700), max_size=12),
    extension=st.sampled_from([b"", b";name=value", b"; ext"]),
    trailers=st.sampled_from([b"", b"X-Checksum: abc\r\n", b"A: 1\r\nB: 2\r\n"]),
)
def test_any_chunking_decodes_to_the_body(
    data: bytes, sizes: list[int], extension: bytes, trailers: bytes
) -> None:
    stream = io.BytesIO(chunked(split(data, sizes), extension=extension, trailers=trailers) + b"NEXT")
    assert read_chunked(stream, LIMIT) == data
    assert stream.read() == b"NEXT"  # the next request on the connection is left untouched


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=2048), sizes=st.lists(st.integers(1, 300), max_size=8), cut=st.data()
)
def test_a_body_cut_off_anywhere_is_refused(data: bytes, sizes: list[int], cut: st.DataObject) -> None:
    wire = chunked(split(data, sizes))
    end = cut.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(ChunkedBodyError) as raised:
        read_chunked(io.BytesIO(wire[:end]), LIMIT)
    assert not isinstance(raised.value, ChunkedTooLargeError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_refused_cleanly(wire: bytes) -> None:
    try:
        body = read_chunked(io.BytesIO(wire), LIMIT)
    except ChunkedBodyError as exc:
        assert str(exc)  # noqa: PT017  (hypothesis drives both outcomes)
    else:
        assert len(body) <= LIMIT


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=6),
    mutation=st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
)
def test_mutated_framing_decodes_or_is_refused_cleanly(
    chunks: list[bytes], mutation: tuple[int, int]
) -> None:
    wire = bytearray(chunked(chunks))
    position, value = mutation
    wire[position % len(wire)] = value
    try:
        body = read_chunked(io.BytesIO(bytes(wire)), LIMIT)
    except ChunkedBodyError as exc:
        assert str(exc)  # noqa: PT017  (hypothesis drives both outcomes)
    else:
        assert len(body) < len(wire)


def test_the_limit_is_counted_while_reading() -> None:
    class Endless(io.RawIOBase):
        """A sender that never stops: 1 KiB chunks forever."""

        read_bytes = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            frame = b"400\r\n" + b"x" * 1024 + b"\r\n"
            start = self.read_bytes % len(frame)
            data = (frame * (len(buffer) // len(frame) + 2))[start : start + len(buffer)]
            buffer[: len(data)] = data
            self.read_bytes += len(data)
            return len(data)

    source = Endless()
    with pytest.raises(ChunkedTooLargeError, match="over the 65536-byte limit"):
        read_chunked(io.BufferedReader(source, 8192), LIMIT)
    assert source.read_bytes < 2 * LIMIT  # stopped at the limit, not at the end of the stream


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "invalid chunk size line"),
        (b"3\r\nabcdef\r\n0\r\n\r\n", "longer than its size line"),
        (b"ffffffffffffffffff\r\n", "larger than any body"),
        (b"1" + b"0" * 5000 + b"\r\n", "longer than 4096 bytes"),
        (b"0\r\n" + b"X: 1\r\n" * 65 + b"\r\n", "trailer fields"),
        (b"", "cut off"),
    ],
)
def test_broken_framing_says_what_is_wrong(wire: bytes, message: str) -> None:
    with pytest.raises(ChunkedBodyError, match=message):
        read_chunked(io.BytesIO(wire), LIMIT)


def test_a_huge_single_chunk_size_is_over_the_limit_before_any_data() -> None:
    with pytest.raises(ChunkedTooLargeError):
        read_chunked(io.BytesIO(b"100000\r\n"), LIMIT)


# -- over the wire ---------------------------------------------------------------------------


def node_request(
    collector: CollectorProcess, body: bytes, *, gzipped: bool = False, path: str = "/v1/traces"
) -> bytes:
    """The request head Node's OTLP/HTTP exporters send: chunked, no Content-Length."""
    head = [
        f"POST {path} HTTP/1.1",
        "Content-Type: application/x-protobuf",
        "User-Agent: OTel-OTLP-Exporter-JavaScript/0.301.0",
        f"Authorization: Bearer {TOKEN}",
        f"Host: 127.0.0.1:{collector.http_port}",
        "Connection: keep-alive",
        "Transfer-Encoding: chunked",
    ]
    if gzipped:
        head.append("Content-Encoding: gzip")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def exchange(collector: CollectorProcess, wire: bytes, *, close_write: bool = False) -> tuple[int, bytes]:
    """Send raw bytes over TLS; the status and body of the first response."""
    assert collector.ssl_context is not None
    raw = socket.create_connection(("127.0.0.1", collector.http_port), timeout=10)
    with collector.ssl_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(wire)
        if close_write:
            # A sender dying mid-body: the TCP stream ends (no TLS close_notify, as in a crash).
            # (shut down through a duplicate: SSLSocket.shutdown would drop the TLS session)
            with socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_STREAM) as duplicate:
                duplicate.shutdown(socket.SHUT_WR)
        response = sock.makefile("rb")
        status_line = response.readline()
        if not status_line:
            raise ConnectionError("the collector closed the connection without an answer")
        headers: dict[str, str] = {}
        while (line := response.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = response.read(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), body


def test_chunked_protobuf_with_and_without_gzip_lands(secure_collector: CollectorProcess) -> None:
    collector = secure_collector
    plain = make_request(40, seed=301, service="node-plain")
    zipped = make_request(40, seed=302, service="node-gzip")
    status, _ = exchange(
        collector, node_request(collector, chunked(split(plain.SerializeToString(), [16, 900, 3])))
    )
    assert status == 200
    compressed = gzip.compress(zipped.SerializeToString())
    status, _ = exchange(
        collector, node_request(collector, chunked(split(compressed, [10, 10, 4000])), gzipped=True)
    )
    assert status == 200
    expected = sorted(span_ids(plain) + span_ids(zipped))

    def landed() -> list[str]:
        return sorted(
            row[0]
            for row in collector.query(
                "SELECT SpanId FROM otel_traces WHERE ServiceName IN ('node-plain', 'node-gzip')"
            ).result_rows
        )

    wait_for(lambda: landed() == expected, 30, "the chunked requests in otel_traces")


def test_chunked_bodies_over_the_limit_or_cut_off_are_refused_and_not_spooled(
    secure_collector: CollectorProcess,
) -> None:
    collector = secure_collector
    spooled = collector.metric("spooled_spans_total")
    big = make_request(2, seed=303).SerializeToString() + b"\0" * (1 << 20)
    status, body = exchange(collector, node_request(collector, chunked(split(big, [1 << 16] * 20))))
    assert status == 413
    assert "over the 1048576-byte limit" in Status.FromString(body).message

    # Gzip inside: the limit applies after decompression too.
    bomb = gzip.compress(b"\0" * (4 << 20))
    status, _ = exchange(collector, node_request(collector, chunked([bomb]), gzipped=True))
    assert status == 413

    # Cut off mid-chunk by a sender that dies: over TLS nothing can be answered after the
    # ragged end (test_signals.py checks the 400 over plain HTTP); the request is refused.
    rejected = collector.metric("rejected_requests_total")
    request = make_request(5, seed=304, service="node-cut-off")
    wire = chunked(split(request.SerializeToString(), [100, 100, 100, 100]))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        exchange(collector, node_request(collector, wire[: len(wire) // 2]), close_write=True)
    wait_for(lambda: collector.metric("rejected_requests_total") == rejected + 1, 10, "the refusal")
    assert collector.metric("spooled_spans_total") == spooled
    assert collector.scalar("SELECT count() FROM otel_traces WHERE ServiceName = 'node-cut-off'") == 0


def test_a_chunked_request_keeps_the_connection_for_the_next_one(secure_collector: CollectorProcess) -> None:
    collector = secure_collector
    first = make_request(3, seed=305, service="node-keepalive")
    second = make_request(3, seed=306, service="node-keepalive")
    wire = node_request(collector, chunked([first.SerializeToString()])) + node_request(
        collector, chunked([second.SerializeToString()])
    )
    assert collector.ssl_context is not None
    raw = socket.create_connection(("127.0.0.1", collector.http_port), timeout=10)
    with collector.ssl_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(wire)
        response = sock.makefile("rb")
        statuses: list[int] = []
        for _ in range(2):
            statuses.append(int(response.readline().split()[1]))
            length = 0
            while (line := response.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            response.read(length)
    assert statuses == [200, 200]
    wait_for(
        lambda: collector.scalar("SELECT count() FROM otel_traces WHERE ServiceName = 'node-keepalive'") == 6,
        30,
        "both requests in otel_traces",
    )
