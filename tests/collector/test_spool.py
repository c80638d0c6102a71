"""The durable spool: what is appended is read back once, across reopen, torn writes and damage."""

from __future__ import annotations

import errno
import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmledger.exporter._internal.collector.spool import (
    HEADER_SIZE,
    DurableSpool,
    SpoolError,
    SpoolFullError,
    SpoolReader,
    frame_record,
    scan_records,
)
from llmledger.exporter._internal.collector.spool import writer as spool_writer
from llmledger.exporter._internal.collector.spool.format import (
    Checkpoint,
    Claim,
    pack_durable,
    unpack_durable,
    write_checkpoint,
)


class Spool:
    """Both sides of one spool directory, as the collector's two processes hold them."""

    def __init__(self, path: Path, **kwargs: object) -> None:
        options: dict[str, object] = {"max_bytes": 1 << 20, "segment_bytes": 64 << 10, "fsync": "always"}
        options.update(kwargs)
        self.writer = DurableSpool(path, **options)  # type: ignore[arg-type]
        self.reader = SpoolReader(path, wait=0)

    def append(self, payload: bytes, spans: int) -> None:
        self.writer.append(payload, spans)

    def close(self) -> None:
        """Both processes stop (or die: nothing here is flushed that an append has not)."""
        self.writer.close()
        self.reader.close()


def open_spool(path: Path, **kwargs: object) -> Spool:
    return Spool(path, **kwargs)


def drain_all(spool: Spool) -> list[bytes]:
    payloads: list[bytes] = []
    while (batch := spool.reader.claim_batch(max_spans=7, max_bytes=1 << 20)) is not None:
        payloads += [bytes(record.payload) for record in batch.records]
        spool.reader.commit(batch)
    return payloads


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("segment-*.log"))


def test_appended_records_come_back_once_in_order(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    payloads = [f"request-{i}".encode() * (i + 1) for i in range(50)]
    for payload in payloads:
        spool.append(payload, 3)
    assert spool.reader.pending_bytes() > 0
    assert drain_all(spool) == payloads
    assert spool.reader.pending_bytes() == 0
    assert spool.reader.claim_batch(10, 1 << 20) is None


def test_batches_respect_span_limit_and_never_split_a_record(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(10):
        spool.append(bytes([i]) * 10, 4)
    batch = spool.reader.claim_batch(max_spans=10, max_bytes=1 << 20)
    assert batch is not None
    assert [r.span_count for r in batch.records] == [4, 4]
    spool.reader.commit(batch)


def test_reopen_keeps_undrained_records_and_rolls_segments(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=4096)
    payloads = [os.urandom(1000) for _ in range(20)]
    for payload in payloads[:10]:
        spool.append(payload, 1)
    first = spool.reader.claim_batch(max_spans=3, max_bytes=1 << 20)
    assert first is not None
    spool.reader.commit(first)
    spool.close()
    assert len(segment_files(tmp_path)) > 1

    reopened = open_spool(tmp_path, segment_bytes=4096)
    for payload in payloads[10:]:
        reopened.append(payload, 1)
    assert drain_all(reopened) == payloads[3:]
    # Fully drained segments are deleted; only the active one may remain.
    assert len(segment_files(tmp_path)) == 1


def test_a_claim_left_by_a_crash_is_replayed_with_the_same_range_and_token(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(6):
        spool.append(bytes([i]) * 100, 2)
    claimed = spool.reader.claim_batch(max_spans=4, max_bytes=1 << 20)
    assert claimed is not None
    # The process dies between the insert and the commit; more data arrives after restart.
    spool.close()
    reopened = open_spool(tmp_path)
    reopened.append(b"later", 1)
    replayed = reopened.reader.claim_batch(max_spans=100, max_bytes=1 << 20)
    assert replayed is not None
    assert (replayed.segment, replayed.start, replayed.end) == (claimed.segment, claimed.start, claimed.end)
    assert replayed.dedup_token == claimed.dedup_token
    assert [r.payload for r in replayed.records] == [r.payload for r in claimed.records]
    reopened.reader.commit(replayed)
    assert drain_all(reopened) == [bytes([i]) * 100 for i in range(2, 6)] + [b"later"]


def test_tokens_differ_between_spools(tmp_path: Path) -> None:
    tokens: list[str] = []
    for name in ("a", "b"):
        spool = open_spool(tmp_path / name)
        spool.append(b"same bytes", 1)
        batch = spool.reader.claim_batch(10, 1 << 20)
        assert batch is not None
        tokens.append(batch.dedup_token)
        spool.close()
    assert tokens[0] != tokens[1]


def test_torn_tail_is_cut_on_open(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(b"whole record", 1)
    spool.close()
    (segment,) = segment_files(tmp_path)
    whole = segment.stat().st_size
    with open(segment, "ab") as file:  # a crash part-way through the next append
        file.write(frame_record(b"never finished", 1, 0)[:-5])
    reopened = open_spool(tmp_path)
    assert segment.stat().st_size == whole
    assert drain_all(reopened) == [b"whole record"]
    assert reopened.reader.skipped_bytes == 0


def test_damage_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for payload in (b"first" * 20, b"second" * 20, b"third" * 20):
        spool.append(payload, 1)
    spool.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    second = HEADER_SIZE + 100
    data[second + HEADER_SIZE + 3] ^= 0xFF  # flip a payload byte of the second record
    segment.write_bytes(bytes(data))
    reopened = open_spool(tmp_path)
    assert drain_all(reopened) == [b"first" * 20, b"third" * 20]
    assert reopened.reader.skipped_bytes == HEADER_SIZE + 120


def test_the_bound_refuses_instead_of_dropping(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=8192, segment_bytes=2048)
    accepted = 0
    while accepted < 100:
        try:
            spool.append(b"x" * 500, 1)
        except SpoolFullError as exc:
            assert "bound" in str(exc)  # noqa: PT017
            break
        accepted += 1
    assert 10 <= accepted < 17
    assert len(drain_all(spool)) == accepted
    spool.append(b"room again", 1)  # draining frees the bound (the reader deleted segments)


def test_a_failed_write_is_reported_and_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = open_spool(tmp_path)
    spool.append(b"before", 1)
    real_write = os.write

    def short_then_full(fd: int, data: bytes | memoryview) -> int:
        monkeypatch.setattr(spool_writer.os, "write", failing)
        return real_write(fd, bytes(data)[:10])

    def failing(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_writer.os, "write", short_then_full)
    with pytest.raises(SpoolError, match="No space left"):
        spool.append(b"during", 1)
    monkeypatch.setattr(spool_writer.os, "write", real_write)
    spool.append(b"after", 1)
    spool.close()
    assert drain_all(open_spool(tmp_path)) == [b"before", b"after"]


def test_one_writer_per_spool_directory(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another collector"):
        DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, fsync="always")
    with pytest.raises(SpoolError, match="in use by another collector"):
        SpoolReader(tmp_path, wait=0.1)
    spool.close()


def test_the_reader_sees_only_what_the_writer_made_durable(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, fsync="always")
    spool.append(b"durable", 1)
    # Bytes written past the published durable position (an append in progress) stay unseen.
    (segment,) = segment_files(tmp_path)
    with open(segment, "ab") as file:
        file.write(frame_record(b"not yet durable", 1, 0))
    assert drain_all(spool) == [b"durable"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=8),
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), max_size=4),
)
def test_scanning_damaged_bytes_yields_only_records_that_were_written(
    payloads: list[bytes], cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(b"".join(frame_record(p, 1, 0) for p in payloads))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    data = data[: cut % (len(data) + 1)]
    records, valid_end, skipped = scan_records(bytes(data))
    read = [record.payload for record in records]
    # Every record read back was written, in the order written (a subsequence).
    remaining = iter(payloads)
    assert all(any(p == q for q in remaining) for p in read)
    assert valid_end <= len(data)
    assert skipped >= 0
    if not flips:
        assert skipped == 0
        assert read == payloads[: len(read)]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2048))
def test_scanning_arbitrary_bytes_never_fails(data: bytes) -> None:
    records, valid_end, _ = scan_records(data)
    assert valid_end <= len(data)
    assert all(record.end <= len(data) for record in records)


def test_a_batch_runs_across_segment_ends_up_to_its_limits(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=4096)
    payloads = [bytes([i]) * 1000 for i in range(30)]
    for payload in payloads:
        spool.append(payload, 2)
    assert len(segment_files(tmp_path)) > 5
    batch = spool.reader.claim_batch(max_spans=40, max_bytes=1 << 20)
    assert batch is not None
    assert batch.span_count == 40
    assert batch.last_segment > batch.segment
    assert [r.payload for r in batch.records] == payloads[:20]
    spool.reader.commit(batch)
    # Segments wholly before the cursor are gone; the rest comes back once, in order.
    assert all(int(path.name[8:28]) >= batch.last_segment for path in segment_files(tmp_path))
    assert drain_all(spool) == payloads[20:]


def test_the_byte_limit_holds_except_for_a_single_larger_record(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=4096)
    for i in range(12):
        spool.append(bytes([i]) * 1000, 1)
    spool.append(b"L" * 10_000, 1)  # larger than the limit below, in a segment of its own
    spool.append(b"after", 1)
    sizes: list[list[int]] = []
    while (batch := spool.reader.claim_batch(max_spans=1000, max_bytes=3100)) is not None:
        sizes.append([len(record.payload) for record in batch.records])
        spool.reader.commit(batch)
    assert sizes == [[1000] * 3] * 4 + [[10_000], [5]]


def test_a_claim_across_segments_is_replayed_with_the_same_range_and_token(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=4096)
    payloads = [os.urandom(900) for _ in range(20)]
    for payload in payloads:
        spool.append(payload, 1)
    claimed = spool.reader.claim_batch(max_spans=12, max_bytes=1 << 20)
    assert claimed is not None
    assert claimed.last_segment > claimed.segment
    spool.close()  # the process dies between the insert and the commit
    reopened = open_spool(tmp_path, segment_bytes=4096)
    replayed = reopened.reader.claim_batch(max_spans=1, max_bytes=1)
    assert replayed is not None
    assert (replayed.segment, replayed.start, replayed.last_segment, replayed.end) == (
        claimed.segment,
        claimed.start,
        claimed.last_segment,
        claimed.end,
    )
    assert replayed.dedup_token == claimed.dedup_token
    assert [r.payload for r in replayed.records] == payloads[:12]
    reopened.reader.commit(replayed)
    assert drain_all(reopened) == payloads[12:]


def test_a_one_segment_claim_written_by_an_earlier_version_is_replayed(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(4):
        spool.append(bytes([i]) * 100, 1)
    spool.close()
    (segment,) = segment_files(tmp_path)
    number = int(segment.name[8:28])
    checkpoint = tmp_path / "checkpoint.json"
    state = json.loads(checkpoint.read_text())
    second_end = 2 * (HEADER_SIZE + 100)
    state["claim"] = [number, 0, second_end]  # the three-number form
    checkpoint.write_text(json.dumps(state))
    reopened = open_spool(tmp_path)
    replayed = reopened.reader.claim_batch(max_spans=100, max_bytes=1 << 20)
    assert replayed is not None
    assert replayed.dedup_token == f"llmledger-spool-{state['spool_id']}-{number}-0-{second_end}"
    assert [r.payload for r in replayed.records] == [bytes([0]) * 100, bytes([1]) * 100]
    reopened.reader.commit(replayed)
    assert drain_all(reopened) == [bytes([2]) * 100, bytes([3]) * 100]


def test_damage_is_counted_once_when_a_batch_stops_short_of_it(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for payload in (b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 100):
        spool.append(payload, 1)
    spool.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[2 * (HEADER_SIZE + 100) + HEADER_SIZE + 5] ^= 0xFF  # the third record's payload
    segment.write_bytes(bytes(data))
    reopened = open_spool(tmp_path)
    batches: list[list[bytes]] = []
    while (batch := reopened.reader.claim_batch(max_spans=2, max_bytes=1 << 20)) is not None:
        batches.append([bytes(record.payload) for record in batch.records])
        reopened.reader.commit(batch)
    assert batches == [[b"a" * 100, b"b" * 100], [b"d" * 100]]
    assert reopened.reader.skipped_bytes == HEADER_SIZE + 100


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
    segment_bytes=st.integers(min_value=1024, max_value=8192),
    max_spans=st.integers(min_value=1, max_value=12),
    max_bytes=st.integers(min_value=1, max_value=12_000),
    crashes=st.lists(st.booleans(), max_size=40),
)
def test_batches_return_every_record_once_in_order_across_segments_and_crashes(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    segment_bytes: int,
    max_spans: int,
    max_bytes: int,
    crashes: list[bool],
) -> None:
    path = tmp_path_factory.mktemp("spool")
    spool = open_spool(path, segment_bytes=segment_bytes, max_bytes=1 << 24)
    payloads = [os.urandom(size) for size in sizes]
    for payload in payloads:
        spool.append(payload, 1 + len(payload) % 3)
    read: list[bytes] = []
    shapes: list[list[tuple[int, int]]] = []  # (spans, bytes) of each batch's records
    crash = iter(crashes)
    while (batch := spool.reader.claim_batch(max_spans, max_bytes)) is not None:
        records = [bytes(record.payload) for record in batch.records]
        assert records, "a batch makes progress"
        # The limits hold, except that a batch always takes its first record.
        spans = sum(record.span_count for record in batch.records)
        assert len(records) == 1 or spans <= max_spans
        assert len(records) == 1 or sum(r.end - r.offset for r in batch.records) <= max_bytes
        if next(crash, False):  # died after the insert, before the commit
            spool.close()
            spool = open_spool(path, segment_bytes=segment_bytes, max_bytes=1 << 24)
            replayed = spool.reader.claim_batch(1, 1)
            assert replayed is not None
            assert replayed.dedup_token == batch.dedup_token
            assert [bytes(record.payload) for record in replayed.records] == records
            batch = replayed
        read += records
        shapes.append([(record.span_count, record.end - record.offset) for record in batch.records])
        spool.reader.commit(batch)
    assert read == payloads
    # A batch ends only where the next record would pass a limit, not where a segment ends.
    for taken, following in itertools.pairwise(shapes):
        spans, size = following[0]
        assert sum(s for s, _ in taken) + spans > max_spans or sum(b for _, b in taken) + size > max_bytes
    assert spool.reader.skipped_bytes == 0
    spool.close()


def test_a_batch_gathers_until_enough_waits_or_the_oldest_record_has_waited_long_enough(
    tmp_path: Path,
) -> None:
    spool = open_spool(tmp_path)
    stop = threading.Event()
    spool.append(b"x" * 100, 1)
    began = time.monotonic()
    spool.reader.wait_to_gather(1 << 20, 0.3, stop)  # little waits: until the record is 0.3 s old
    assert 0.2 <= time.monotonic() - began < 1.0
    began = time.monotonic()
    spool.reader.wait_to_gather(1 << 20, 0.3, stop)  # it is that old already
    assert time.monotonic() - began < 0.1
    spool.append(b"y" * 5000, 1)
    spool.reader.wait_to_gather(100, 60, stop)  # enough waits
    assert time.monotonic() - began < 0.2
    fresh = open_spool(tmp_path / "fresh")
    fresh.append(b"z", 1)
    stop.set()
    fresh.reader.wait_to_gather(1 << 20, 60, stop)  # stopping
    assert time.monotonic() - began < 0.3
    assert drain_all(spool) == [b"x" * 100, b"y" * 5000]


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=60, unique=True), st.integers(0, 15))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
def test_request_digests_survive_a_restart_bounded_and_a_torn_tail(
    tmp_path: Path, payloads: list[bytes], torn: int
) -> None:
    from llmledger.exporter._internal.collector.repeats import RecentRequests

    path = tmp_path / f"recent-{len(payloads)}-{torn}.bin"
    path.unlink(missing_ok=True)
    recent = RecentRequests(capacity=8, path=path)
    digests = [RecentRequests.digest(p) for p in payloads]
    for digest in digests:
        recent.add(digest)
    recent.close()
    with open(path, "ab") as handle:  # a crash mid-append leaves part of a digest
        handle.write(b"\xff" * torn)
    again = RecentRequests(capacity=8, path=path)
    # Only requests that were stored are added, so each digest once; the newest 8 are kept.
    assert all(d in again for d in digests[-8:])
    assert len(again) == min(8, len(digests))
    assert path.stat().st_size == 16 * len(again)


# The bytes earlier versions wrote (computed with the spool module before it was split into
# format, writer and reader): spools left on disk by them must read back unchanged.
_RECORD_BEFORE = bytes.fromhex(
    "4c4c535012000000030000007bf4ceeb9a0100008fb0c62d0c5cc6df6f746c702072657175657374206279746573"
)
_DURABLE_1_92_BEFORE = bytes.fromhex("01000000000000005c000000000000004d3c5a40")


def test_the_bytes_on_disk_are_those_earlier_versions_wrote(tmp_path: Path) -> None:
    assert frame_record(b"otlp request bytes", 3, 1_764_892_800_123) == _RECORD_BEFORE
    assert pack_durable(1, 92) == _DURABLE_1_92_BEFORE
    assert unpack_durable(_DURABLE_1_92_BEFORE) == (1, 92)
    assert unpack_durable(_DURABLE_1_92_BEFORE[:-1] + b"\0") is None  # torn
    claim = Claim(2, 56, 4, 28)
    write_checkpoint(
        tmp_path, Checkpoint("0123abcd", (2, 56), claim, (("dead_letter_spans", 1), ("written_spans", 40)))
    )
    assert (tmp_path / "checkpoint.json").read_text() == (
        '{"spool_id": "0123abcd", "segment": 2, "offset": 56, "claim": [2, 56, 4, 28], '
        '"totals": {"dead_letter_spans": 1, "written_spans": 40}}'
    )
    assert claim.token("0123abcd") == "llmledger-spool-0123abcd-2-56-4-28"
    assert Claim(2, 56, 2, 128).token("0123abcd") == "llmledger-spool-0123abcd-2-56-128"


def test_a_spool_left_by_an_earlier_version_is_drained_from_where_it_stopped(tmp_path: Path) -> None:
    """A crash left a claim pending (three-number form) over the first of two records."""
    (tmp_path / "segment-00000000000000000001.log").write_bytes(_RECORD_BEFORE * 2)
    (tmp_path / "durable").write_bytes(_DURABLE_1_92_BEFORE)
    (tmp_path / "checkpoint.json").write_text(
        '{"spool_id": "0123abcd", "segment": 1, "offset": 0, "claim": [1, 0, 46], "totals": {"written_spans": 40}}'
    )
    writer = DurableSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, fsync="always")
    reader = SpoolReader(tmp_path, wait=0)
    try:
        replayed = reader.claim_batch(max_spans=100, max_bytes=1 << 20)
        assert replayed is not None
        assert replayed.dedup_token == "llmledger-spool-0123abcd-1-0-46"  # the token it was inserted with
        assert [(bytes(r.payload), r.span_count, r.appended_ms) for r in replayed.records] == [
            (b"otlp request bytes", 3, 1_764_892_800_123)
        ]
        reader.commit(replayed, {"written_spans": 3})
        rest = reader.claim_batch(max_spans=100, max_bytes=1 << 20)
        assert rest is not None
        assert (rest.segment, rest.start, rest.span_count) == (1, 46, 3)
        reader.commit(rest, {"written_spans": 3})
        writer.append(b"after the upgrade", 1)
        new = reader.claim_batch(max_spans=100, max_bytes=1 << 20)
        assert new is not None
        assert [bytes(r.payload) for r in new.records] == [b"after the upgrade"]
        assert new.segment == 2  # the writer went on in a segment of its own
        reader.commit(new)
        assert reader.totals == {"written_spans": 46}
        assert not (tmp_path / "segment-00000000000000000001.log").exists()
    finally:
        writer.close()
        reader.close()
