"""benchmarks/profile_summary.py puts each py-spy sample in the step of the tick path it belongs to."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from profile_summary import OTHER, classify, summarize

ROOT = "main (mdgate/_cli/root.py:170);run (asyncio/runners.py:118)"


def test_each_sample_goes_to_its_step(tmp_path: Path) -> None:
    conn = "Connection._serve (mdgate/_providers/connection.py:250)"
    decode = f"{ROOT};{conn};feed (mdgate_dhan/decoder.py:40)"
    receive = f"{ROOT};_read_ready__data_received (asyncio/selector_events.py:995)"
    parse = f"{ROOT};Protocol.parse (websockets/protocol.py:603)"
    publish = f"{ROOT};Pipeline.run (mdgate/_pipeline.py:90);Fanout.publish (mdgate/_serve/fanout.py:370)"
    writer = "BatchWriter.write (mdgate/plugins/stores/redis_store/_writer.py:180)"
    store = f"{ROOT};Pipeline.run (mdgate/_pipeline.py:86);{writer}"
    numbering = f"{ROOT};Pipeline.run (mdgate/_pipeline.py:80);SeqBook.stamp (mdgate/_seq.py:90)"
    loop = "BaseEventLoop._run_once (asyncio/base_events.py:1906)"
    select = f"{ROOT};{loop};EpollSelector.select (selectors.py:468)"
    assert [classify(s) for s in (decode, receive, parse, publish, store, numbering, select)] == [
        "decode", "receive", "receive", "fan-out", "Redis", "pipeline", "event loop (select, scheduling)"]
    assert classify("main (x.py:1);log (structlog/_base.py:3)") == OTHER
    # uvloop: the loop's own C code shows as the runner's frame, the stack's last
    assert classify("main (x.py:1);Runner.run (asyncio/runners.py:118)") == "event loop (select, scheduling)"
    raw = tmp_path / "profile.txt"
    raw.write_text(f"{decode} 3\n{store} 5\n\n{select} 2\n")
    steps, total = summarize(raw)
    assert total == 10 and steps == {"decode": 3, "Redis": 5, "event loop (select, scheduling)": 2}
