"""The recording format: chunks, rotation by size and by time, cut-short segments, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdgate._recording.format import (
    FORMAT,
    Record,
    RecordingError,
    RecordingWriter,
    read_index,
    read_records,
)


def frames(n: int, start: int = 0) -> list[Record]:
    return [Record(1000 + i, "frame", "yahoo", 0, b"\x00\x01" * 20 if i % 2 else f"text {i}")
            for i in range(start, start + n)]


def test_records_come_back_in_order_with_their_types(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "r")
    w.add(Record(999, "open", "yahoo", 0, "wss://example/?version=***"))
    w.add(Record(999, "track", "yahoo", 0, "AAPL", "NASDAQ:AAPL"))
    for r in frames(10):
        w.add(r)
    w.append((2000, "frame", "dhan", 1, b"\xff"))  # the hot path's tuple spells a Record
    w.add(Record(2001, "close", "dhan", 1, "connection dropped", 1006))
    w.close()
    got = list(read_records(tmp_path / "r"))
    assert got[:2] == [Record(999, "open", "yahoo", 0, "wss://example/?version=***"),
                       Record(999, "track", "yahoo", 0, "AAPL", "NASDAQ:AAPL")]
    assert got[2:12] == frames(10)
    assert got[12] == Record(2000, "frame", "dhan", 1, b"\xff")
    assert got[13] == Record(2001, "close", "dhan", 1, "connection dropped", 1006)
    index = read_index(tmp_path / "r")
    assert index["format"] == FORMAT and index["records"] == 14 and index["frames"] == 11
    assert (index["first_t"], index["last_t"]) == (999, 2001)


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "r", max_bytes=300)
    for k in range(10):
        for r in frames(20, k * 20):
            w.add(r)
        w.flush()
    w.close()
    index = read_index(tmp_path / "r")
    assert len(index["segments"]) > 1
    assert all(s["bytes"] < 300 + 200 for s in index["segments"])  # a chunk never splits
    assert list(read_records(tmp_path / "r")) == frames(200)


def test_segments_rotate_by_time(tmp_path: Path) -> None:
    now = [0.0]
    w = RecordingWriter(tmp_path / "r", max_seconds=60, clock=lambda: now[0])
    for k in range(5):
        for r in frames(3, k * 3):
            w.add(r)
        w.flush()
        now[0] += 30  # a new segment every other flush
    w.close()
    names = [s["name"] for s in read_index(tmp_path / "r")["segments"]]
    assert names == ["000001.mdrec", "000002.mdrec", "000003.mdrec"]
    assert list(read_records(tmp_path / "r")) == frames(15)


def test_a_segment_cut_short_reads_up_to_its_last_whole_chunk(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "r")
    for k in range(3):
        for r in frames(5, k * 5):
            w.add(r)
        w.flush()
    w.close()
    seg = tmp_path / "r" / "000001.mdrec"
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # killed mid-write
    assert list(read_records(tmp_path / "r")) == frames(10)
    (tmp_path / "r" / "index.json").unlink()  # the index is rebuilt from the segments' names
    assert list(read_records(tmp_path / "r")) == frames(10)


def test_refusals(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "r")
    w.add(frames(1)[0])
    w.close()
    with pytest.raises(RecordingError, match="already holds a recording"):
        RecordingWriter(tmp_path / "r")
    with pytest.raises(RecordingError, match="no such recording directory"):
        read_index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="not a recording"):
        read_index(tmp_path / "empty")
    index = json.loads((tmp_path / "r" / "index.json").read_text())
    (tmp_path / "r" / "index.json").write_text(json.dumps({**index, "format": "mdgate-recording/2"}))
    with pytest.raises(RecordingError, match="expected mdgate-recording/1"):
        read_index(tmp_path / "r")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "000001.mdrec").write_bytes(b"\x00\x00\x00\x05hello")
    with pytest.raises(RecordingError, match="corrupt chunk"):
        list(read_records(tmp_path / "bad"))
