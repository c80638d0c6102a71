"""The dead-letter file's reader trusts nothing: any bytes read cleanly, written entries come back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmledger.exporter._internal.collector.dead_letters import (
    HEADER_SIZE,
    DeadLetterFile,
    frame_dead_letter,
    read_dead_letters,
)

keys = st.text(alphabet="abcdef0123456789-/", min_size=1, max_size=24)
entries = st.lists(
    st.tuples(keys, st.text(max_size=40), st.integers(0, 10_000), st.binary(max_size=200)),
    max_size=8,
    unique_by=lambda entry: entry[0],
)


def framed(items: list[tuple[str, str, int, bytes]]) -> list[bytes]:
    return [
        frame_dead_letter(
            {"key": key, "signal": "traces", "reason": reason, "items": count, "at": 1}, payload
        )
        for key, reason, count, payload in items
    ]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_any_bytes_read_without_an_error(data: bytes) -> None:
    for entry in read_dead_letters(data):
        assert isinstance(entry.key, str)


@settings(max_examples=200, deadline=None)
@given(items=entries)
def test_written_entries_read_back_exactly(items: list[tuple[str, str, int, bytes]]) -> None:
    read = read_dead_letters(b"".join(framed(items)))
    assert [(e.key, e.reason, e.items, e.payload, e.replayed) for e in read] == [
        (key, reason, count, payload, False) for key, reason, count, payload in items
    ]


@settings(max_examples=200, deadline=None)
@given(items=entries, cut=st.integers(min_value=0))
def test_a_torn_tail_loses_only_the_record_it_cut(items: list[tuple[str, str, int, bytes]], cut: int) -> None:
    records = framed(items)
    data = b"".join(records)
    cut %= len(data) + 1
    whole = 0
    end = 0
    for record in records:
        if end + len(record) > cut:
            break
        end += len(record)
        whole += 1
    assert [e.key for e in read_dead_letters(data[:cut])] == [key for key, *_ in items[:whole]]


@settings(max_examples=300, deadline=None)
@given(items=entries, position=st.integers(min_value=0), value=st.integers(0, 255))
def test_damage_loses_at_most_the_record_it_hit(
    items: list[tuple[str, str, int, bytes]], position: int, value: int
) -> None:
    records = framed(items)
    data = bytearray(b"".join(records))
    if not data:
        return
    position %= len(data)
    data[position] = value
    read = {e.key: e for e in read_dead_letters(bytes(data))}
    start = 0
    for (key, reason, count, payload), record in zip(items, records, strict=True):
        hit = start <= position < start + len(record)
        start += len(record)
        if not hit:
            assert (read[key].reason, read[key].items, read[key].payload) == (reason, count, payload)
    assert len(read) >= len(items) - 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=entries, garbage=st.binary(max_size=64))
def test_garbage_between_records_is_stepped_over(
    items: list[tuple[str, str, int, bytes]], garbage: bytes
) -> None:
    records = framed(items)
    data = garbage.join(records)
    keys_read = [e.key for e in read_dead_letters(data)]
    # Garbage may hold a magic of its own, never a record whose two CRCs match by chance.
    assert keys_read == [key for key, *_ in items]


def test_the_file_keeps_each_key_once_and_marks_replays(tmp_path: Path) -> None:
    dead_letters = DeadLetterFile(tmp_path / "dead-letters")
    assert dead_letters.add("spool-1/d0/1", "Code: 469. constraint", 1, b"\x0a\x00")
    assert not dead_letters.add("spool-1/d0/1", "Code: 469. constraint", 1, b"\x0a\x00")  # a replayed batch
    # Another process (the replaying CLI) sees the same file.
    other = DeadLetterFile(tmp_path / "dead-letters")
    other.mark_replayed("spool-1/d0/1")
    (entry,) = dead_letters.entries()
    assert (entry.key, entry.items, entry.payload, entry.replayed) == ("spool-1/d0/1", 1, b"\x0a\x00", True)
    assert not DeadLetterFile(tmp_path / "dead-letters").add("spool-1/d0/1", "again", 1, b"")


def test_a_torn_append_is_cut_off_by_the_next_one(tmp_path: Path) -> None:
    dead_letters = DeadLetterFile(tmp_path)
    dead_letters.add("a", "why", 1, b"x" * 10)
    with open(dead_letters.path, "ab") as file:
        file.write(frame_dead_letter({"key": "torn", "items": 1}, b"y" * 50)[: HEADER_SIZE + 5])
    dead_letters.add("b", "why", 2, b"z")
    assert [e.key for e in dead_letters.entries()] == ["a", "b"]


@pytest.mark.parametrize("meta", [b"[1]", b"not json", b'{"key": 5}'])
def test_a_record_with_a_meta_that_is_not_an_entry_is_ignored(meta: bytes) -> None:
    import struct
    import zlib

    header = struct.pack("<4sIII", b"LLDL", len(meta), 0, zlib.crc32(b"", zlib.crc32(meta)))
    record = header + struct.pack("<I", zlib.crc32(header)) + meta
    assert read_dead_letters(record + framed([("k", "r", 1, b"p")])[0])[0].key == "k"
    assert len(read_dead_letters(record)) == 0
