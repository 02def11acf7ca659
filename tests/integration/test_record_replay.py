"""
Record a fake-fed session (drops and malformed frames included), replay it:
the same ticks in the same order, byte for byte, and the same decode errors.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from mdgate._model import Tick
from mdgate._recording.format import Record, RecordingWriter, read_index, read_records
from mdgate._recording.replay import Replayer, recorded_instruments
from mdgate._recording.run import run_replay
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000


async def record_session(feed: Any, settings: Any) -> list[dict[str, Any]]:
    """Run a recorded session; return the ticks a client received."""
    ticks: list[dict[str, Any]] = []
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME", "EXAMPLE:BOLT")
        await feed.wait_subscribed("ACME", "BOLT")
        for i in range(30):
            await feed.send_tick("ACME" if i % 3 else "BOLT", 100 + i / 4, ts=T0 + i * 100, q=i, v=1000 + i)
            if i % 10 == 4:
                await feed.send_malformed()
        ticks += await c.ticks(30)
        feed.drop()  # the provider drops us: reconnect and resubscribe
        await feed.wait_until(lambda f: f.accepted == 2 and {"ACME", "BOLT"} <= f.subscribed)
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")
        for i in range(30, 45):
            await feed.send_tick("BOLT", 200 + i, ts=T0 + i * 100, v=2000 + i)
        await feed.send(json.dumps({"s": "NOPE", "p": 1.0, "t": T0}))  # a code nobody tracks
        ticks += await c.ticks(15)
        errors = gw.status()["providers"]["example"]["decode_errors_by_kind"]
    assert sum(errors.values()) >= 3
    return ticks


def on_free_port(settings: Any) -> Any:
    """The settings, serving on a free port."""
    return dataclasses.replace(settings, server=dataclasses.replace(settings.server, port=0))


def encoded(ticks: list[Tick]) -> bytes:
    return msgspec.json.encode(ticks)


async def test_replay_gives_the_recorded_ticks_byte_for_byte(feed, make_settings, tmp_path):
    rec = tmp_path / "rec"
    base = on_free_port(make_settings(feed.url))
    live = await record_session(feed, dataclasses.replace(
        base, record=dataclasses.replace(base.record, dir=str(rec))))
    assert len(live) == 45
    index = read_index(rec)
    kinds = [r.kind for r in read_records(rec)]
    assert index["frames"] == kinds.count("frame") >= 45 + 3
    assert kinds.count("open") == 2 and "close" in kinds and kinds.count("track") >= 4
    assert recorded_instruments(rec) == {"example": ["EXAMPLE:ACME", "EXAMPLE:BOLT"]}

    summaries, replays = [], []
    for _ in range(2):
        got: list[Tick] = []
        summaries.append(await run_replay(base, rec, speed=None, sink=got.extend))
        replays.append(got)
    assert msgspec.to_builtins(replays[0]) == live  # same ticks, same order, same recv_ts
    assert encoded(replays[0]) == encoded(replays[1])  # and byte for byte, every time
    first = summaries[0]
    assert first == {**summaries[1], "seconds": first["seconds"]}
    assert first["frames"]["example"] == index["frames"]
    assert first["ticks"]["example"] == 45
    assert first["skipped"] == 0
    assert first["reconnects"] == {"example": 1}  # the recorded drop, replayed
    # the decode errors of the recorded session, kind by kind
    assert first["decode_errors"]["example"] == {"bad_json": 3, "unknown_symbol": 1}


def example_frames(path: Path, n: int, step_ms: int) -> None:
    """A recording of one example connection: ``n`` ACME ticks ``step_ms`` apart."""
    w = RecordingWriter(path)
    w.add(Record(T0, "open", "example", 0, "ws://127.0.0.1:1/"))
    w.add(Record(T0, "track", "example", 0, "ACME", "EXAMPLE:ACME"))
    for i in range(n):
        frame = json.dumps({"s": "ACME", "p": 10 + i, "t": T0 + i * step_ms})
        w.add(Record(T0 + i * step_ms, "frame", "example", 0, frame))
    w.close()


async def test_replay_at_ten_times_takes_a_tenth_of_the_recorded_time(make_settings, tmp_path):
    rec = tmp_path / "rec"
    example_frames(rec, 61, 50)  # 3 s recorded
    arrivals: list[float] = []

    def sink(batch: list[Tick]) -> None:
        arrivals.extend(time.monotonic() for _ in batch)

    summary = await run_replay(on_free_port(make_settings("ws://127.0.0.1:1/")), rec, speed=10, sink=sink)
    assert summary["ticks"]["example"] == 61
    span = arrivals[-1] - arrivals[0]
    assert 0.27 <= span <= 0.33, span  # 3 s / 10, within 10 %


async def test_loop_starts_again_with_later_receive_times(make_settings, tmp_path):
    rec = tmp_path / "rec"
    example_frames(rec, 5, 10)
    got: list[Tick] = []
    replayer_passes = 3

    async def collect() -> None:
        with anyio.fail_after(20):
            while len(got) < 5 * replayer_passes:
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        settings = on_free_port(make_settings("ws://127.0.0.1:1/"))
        tg.start_soon(lambda: run_replay(settings, rec, speed=None, loop=True, sink=got.extend))
        await collect()
        tg.cancel_scope.cancel()
    recv = [t.recv_ts for t in got[:15]]
    assert recv == sorted(recv) and len(set(recv)) == 15  # every pass after the previous one
    ts = [t.ts for t in got[:15]]
    assert ts == sorted(ts) and len(set(ts)) == 15  # exchange times too: the newest tick stays the newest
    assert [t.price for t in got[:15]] == [10, 11, 12, 13, 14] * 3
    assert recv[5] - recv[4] == 1000 + 0  # the gap between passes (LOOP_GAP_MS after the last frame)


def test_pacing_is_absolute_on_the_replay_clock(tmp_path):
    rec = tmp_path / "rec"
    example_frames(rec, 3, 1000)
    now = [100.0]
    r = Replayer(rec, speed=4, clock=lambda: now[0])
    assert r._due(T0) == 100.0  # the first frame is due at once
    now[0] = 250.0  # late: the schedule does not move
    assert r._due(T0 + 1000) == 100.25 and r._due(T0 + 2000) == 100.5
    fast = Replayer(rec, speed=None, clock=lambda: now[0])
    assert fast._due(T0 + 2000) == 0.0
    shifted = Replayer(rec, now=True, wall_ms=lambda: T0 + 86_400_000)
    assert shifted.recv_ts(T0 + 5) == T0 + 86_400_000  # received now
    assert shifted.shift(T0 + 5) == 86_400_000 - 5
    with pytest.raises(ValueError, match="speed must be positive"):
        Replayer(rec, speed=0)


async def test_two_connections_replay_in_the_recorded_order(feed, make_settings, tmp_path):
    """Seven instruments take two connections (five per connection): one cursor keeps their order."""
    rec = tmp_path / "rec"
    base = on_free_port(make_settings(feed.url))
    symbols = ["ACME", "BOLT", "CRUX", "DYNE", "EPIC", "FLUX", "GRIT"]
    live: list[dict[str, Any]] = []
    settings = dataclasses.replace(base, record=dataclasses.replace(base.record, dir=str(rec)))
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe(*(f"EXAMPLE:{s}" for s in symbols))
        await feed.wait_subscribed(*symbols)
        assert len(feed.connections) == 2
        for i in range(40):
            await feed.send_tick(symbols[i % 7], 10 + i, ts=T0 + i)  # to both connections: one decodes it
        live += await c.ticks(40)
    assert sorted(t["price"] for t in live) == [10 + i for i in range(40)]
    replays = []
    for _ in range(2):
        got: list[Tick] = []
        summary = await run_replay(base, rec, speed=None, sink=got.extend)
        replays.append(got)
    assert msgspec.to_builtins(replays[0]) == live  # the order the two sockets delivered in, kept
    assert encoded(replays[0]) == encoded(replays[1])
    assert summary["skipped"] == 0
