"""
``mdgate export --from-recording DIR``: the ticks a recording decodes to,
through the real plugin decoder (the example provider) and the pipeline.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from mdgate._cli.context import CommandContext
from mdgate._cli.root import build_cli, invoke
from mdgate._model import Tick
from mdgate._recording.format import Record, RecordingWriter

BASE = 1_700_000_040_000
ENV = {"MDGATE_LOAD_PLUGINS": "example"}


def frame(symbol: str, price: float, t: int, q: int) -> dict[str, Any]:
    return {"s": symbol, "p": price, "t": t, "q": q, "v": 1000 + q}


def connection_opens(w: RecordingWriter, t: int) -> None:
    w.add(Record(t, "open", "example", 0, "ws://127.0.0.1:9999"))
    w.add(Record(t, "track", "example", 0, "ACME", "EXAMPLE:ACME"))
    w.add(Record(t, "track", "example", 0, "BOLT", "EXAMPLE:BOLT"))
    w.add(Record(t + 1, "send", "example", 0, '{"action": "subscribe", "symbols": ["ACME", "BOLT"]}'))


def make_recording(directory: Path, clean_end: bool = False) -> list[Tick]:
    """
    An example-provider session carrying ACME and BOLT, reconnecting once, ended by a
    clean stop (a ``close`` record) or cut short; returns the ticks its frames mean.
    """
    w = RecordingWriter(directory)
    connection_opens(w, BASE)
    expected = []
    for i in range(40):
        t = BASE + 100 + i * 250
        if i == 25:  # the provider dropped the connection; the session reconnected
            w.add(Record(t - 100, "close", "example", 0, "connection lost", 1006))
            connection_opens(w, t - 50)
        items = [frame("ACME", 12.5 + i * 0.125, t - 7, i + 1)]
        if i % 3 == 0:
            items.append(frame("BOLT", 80.0 - i * 0.5, t - 5, 2 * i + 1))
        w.add(Record(t, "frame", "example", 0, json.dumps(items if len(items) > 1 else items[0])))
        expected += [Tick(f"EXAMPLE:{x['s']}", x["p"], x["t"], t, "EX", size=x["q"], volume=x["v"])
                     for x in items]
        if i % 10 == 9:
            w.flush()
    if clean_end:
        w.add(Record(BASE + 20_000, "close", "example", 0, "stopped", 1000))
    w.close()
    seqs: dict[str, int] = {}  # as the gateway replaying it numbers them
    for i, t in enumerate(expected):
        seqs[t.instrument] = seqs.get(t.instrument, 0) + 1
        expected[i] = msgspec.structs.replace(t, seq=seqs[t.instrument])
    return expected


def run_export(tmp_path: Path, argv: list[str]) -> int:
    config = tmp_path / "mdgate.toml"
    # a store and a recording configured: an export uses neither
    config.write_text(f'[redis]\nurl = "redis://127.0.0.1:1"\n[record]\ndir = "{tmp_path / "recorded"}"\n')
    obj = CommandContext(ENV)
    obj._logging = "test"  # the test process keeps its logging (no handler on a capture stream)
    with capture_logs():  # not on standard output, where the export may be written
        return invoke(build_cli(), ["export", *argv, "--config", str(config)], obj)


def csv_ticks(text: str) -> list[Tick]:
    reader = csv.DictReader(io.StringIO(text))
    return [msgspec.convert({k: v for k, v in row.items() if v}, Tick, strict=False) for row in reader]


def test_export_from_recording_writes_the_decoded_ticks(tmp_path: Path) -> None:
    expected = make_recording(tmp_path / "rec")
    out = tmp_path / "acme.csv"
    argv = ["example:acme", "--from-recording", str(tmp_path / "rec"), "-o", str(out)]
    assert run_export(tmp_path, argv) == 0
    assert csv_ticks(out.read_text()) == [t for t in expected if t.instrument == "EXAMPLE:ACME"]
    both = tmp_path / "both.csv"
    argv = ["EXAMPLE:ACME", "EXAMPLE:BOLT", "--from-recording", str(tmp_path / "rec"), "-o", str(both)]
    assert run_export(tmp_path, argv) == 0
    assert csv_ticks(both.read_text()) == expected  # in replay order
    assert not (tmp_path / "recorded").exists()  # the replay is not recorded again


def test_export_from_recording_filters_by_tick_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = make_recording(tmp_path / "rec")
    since, until = BASE + 1_093, BASE + 5_343  # ACME tick times of frames 4 and 21
    argv = ["EXAMPLE:ACME", "EXAMPLE:BOLT", "--from-recording", str(tmp_path / "rec"),
            "--since", str(since), "--until", str(until)]
    assert run_export(tmp_path, argv) == 0
    captured = capsys.readouterr()
    rows = csv_ticks(captured.out)
    assert rows == [t for t in expected if since <= t.ts <= until]
    assert rows[0].ts == since and rows[-1].ts == until and len(rows) == 18 + 5
    assert f"exported {len(rows)} ticks of 2 instrument(s)" in captured.err


def test_export_from_recording_as_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    expected = make_recording(tmp_path / "rec")
    out = tmp_path / "bolt.parquet"
    argv = ["EXAMPLE:BOLT", "--from-recording", str(tmp_path / "rec"), "--format", "parquet", "-o", str(out)]
    assert run_export(tmp_path, argv) == 0
    rows = [Tick(**{k: v for k, v in r.items() if v is not None}) for r in pq.read_table(out).to_pylist()]
    assert rows == [t for t in expected if t.instrument == "EXAMPLE:BOLT"]


def test_export_from_recording_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_export(tmp_path, ["EXAMPLE:ACME", "--from-recording", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"mdgate: error: --from-recording: {tmp_path / 'nope'}: no such recording directory")
    make_recording(tmp_path / "rec")
    argv = ["EXAMPLE:ACME", "--bars", "1m", "--from-recording", str(tmp_path / "rec")]
    assert run_export(tmp_path, argv) == 2
    assert "--bars" in capsys.readouterr().err


def test_export_from_a_cleanly_stopped_recording_ends(tmp_path: Path) -> None:
    expected = make_recording(tmp_path / "rec", clean_end=True)  # ends with the session's `close`
    out = tmp_path / "all.csv"
    argv = ["EXAMPLE:ACME", "EXAMPLE:BOLT", "--from-recording", str(tmp_path / "rec"), "-o", str(out)]
    assert run_export(tmp_path, argv) == 0
    assert csv_ticks(out.read_text()) == expected
