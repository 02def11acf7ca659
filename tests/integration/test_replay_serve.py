"""
A recording served as provider endpoints (``mdgate replay PATH --serve``): a
second gateway pointed at ``ws://.../yahoo`` gets the recorded frames
through the real Yahoo decoder, and any WebSocket client gets them verbatim.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from mdgate._recording import serve as serve_module
from mdgate._recording.format import Record, RecordingError, RecordingWriter
from mdgate._recording.serve import recorded_providers, run_serve, serve_lines, serve_recording
from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate.testing.redis import free_port
from mdgate_yahoo.testing import encode_pricing

pytestmark = pytest.mark.anyio


@contextmanager
def recording(directory: Path) -> Iterator[RecordingWriter]:
    writer = RecordingWriter(directory, max_bytes=2_000)  # small segments: several files
    try:
        yield writer
    finally:
        writer.close()


def yahoo_recording(directory: Path, prices: list[float]) -> list[int]:
    """A Yahoo session recorded for NASDAQ:AAPL (frames 100 ms apart, near now); the frames' times."""
    t0 = int(time.time() * 1000) - 60_000
    times = [t0 + 1000 + i * 100 for i in range(len(prices))]
    with recording(directory) as w:
        w.add(Record(t0, "open", "yahoo", 0, "wss://streamer.finance.yahoo.com/?version=2"))
        w.add(Record(t0, "track", "yahoo", 0, "AAPL", "NASDAQ:AAPL"))
        w.add(Record(t0 + 5, "send", "yahoo", 0, '{"subscribe": ["AAPL"]}'))
        for i, (price, t) in enumerate(zip(prices, times, strict=True)):
            frame = encode_pricing(id="AAPL", price=price, time=t - 20, day_volume=1000 + i, last_size=1,
                                   quote_type=8, market_hours=1, price_hint=2)
            w.add(Record(t, "frame", "yahoo", 0, frame))
            if i % 7 == 6:
                w.flush()  # several chunks
        w.add(Record(times[-1] + 1, "close", "yahoo", 0, "stopped", 1000))
    return times


async def test_a_gateway_pointed_at_the_served_recording_gets_the_recorded_prices_in_order(
    tmp_path: Path,
) -> None:
    prices = [227.5 + i * 0.25 - (i % 3) * 0.5 for i in range(30)]
    yahoo_recording(tmp_path / "rec", prices)
    port = free_port()
    settings = settings_from_toml(
        f"""
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
[subscriptions]
always = ["NASDAQ:AAPL"]
[providers.yahoo]
url = "ws://127.0.0.1:{port}/yahoo?version=2"
""",
        {"MDGATE_LOAD_PLUGINS": "yahoo"},
        tmp_path,
    )
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
        await client.subscribe("NASDAQ:AAPL")  # before the endpoint exists: no frame can be missed
        async with anyio.create_task_group() as tg:
            served = await tg.start(lambda task_status: serve_recording(
                tmp_path / "rec", port=port, speed=None, task_status=task_status))
            assert served == port
            ticks = await client.ticks(len(prices), timeout=20)
            tg.cancel_scope.cancel()
        status = gw.status()["providers"]["yahoo"]
    got = ticks[: len(prices)]
    assert [t["price"] for t in got] == prices
    assert {(t["instrument"], t["provider"]) for t in got} == {("NASDAQ:AAPL", "YF")}
    assert status["decode_errors"] == 0


def mixed_recording(directory: Path) -> list[str | bytes]:
    """Two providers; ``p1`` sent one frame before its first frame and has text and binary frames."""
    frames: list[str | bytes] = ["hello", b"\x00\x01binary\xff", '{"s": "ACME", "p": 1.5}', b"", "last"]
    with recording(directory) as w:
        w.add(Record(1000, "open", "p1", 0, "ws://example/p1"))
        w.add(Record(1001, "send", "p1", 0, "subscribe"))
        w.add(Record(1002, "open", "p2", 0, "ws://example/p2"))
        for i, frame in enumerate(frames):
            w.add(Record(1010 + i * 10, "frame", "p1", 0, frame))
            w.add(Record(1011 + i * 10, "frame", "p2", 0, f"p2-{i}"))
            w.add(Record(1012 + i * 10, "send", "p1", 0, "heartbeat"))
    return frames


async def receive_all(url: str, send_first: bool = True) -> tuple[list[str | bytes], int | None]:
    async with connect(url, open_timeout=5) as ws:
        if send_first:
            await ws.send("subscribe, ignored")
        got: list[str | bytes] = []
        with anyio.fail_after(10):
            try:
                while True:
                    got.append(await ws.recv())
            except ConnectionClosedOK as exc:
                return got, exc.rcvd.code if exc.rcvd else None


async def test_served_frames_are_verbatim_by_provider_path_and_end_with_1000(tmp_path: Path) -> None:
    frames = mixed_recording(tmp_path / "rec")
    assert recorded_providers(tmp_path / "rec") == {"p1": 1, "p2": 0}
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: serve_recording(
            tmp_path / "rec", speed=None, task_status=task_status))
        base = f"ws://127.0.0.1:{port}"
        got, code = await receive_all(f"{base}/p1?token=secret&x=1")
        assert (got, code) == (frames, 1000)  # text as text, binary as binary, in order
        # every client gets the whole recording from the start (two at once too)
        async with anyio.create_task_group() as clients:
            results: dict[str, Any] = {}

            async def one(path: str) -> None:
                results[path] = await receive_all(base + path)

            clients.start_soon(one, "/p1")
            clients.start_soon(one, "/p2/")
        assert results == {"/p1": (frames, 1000), "/p2/": ([f"p2-{i}" for i in range(5)], 1000)}
        with pytest.raises(InvalidStatus) as refused:
            await receive_all(f"{base}/p3")
        assert refused.value.response.status_code == 404
        assert b"/p1, /p2" in refused.value.response.body
        tg.cancel_scope.cancel()


async def test_loop_starts_again_instead_of_closing(tmp_path: Path) -> None:
    frames = mixed_recording(tmp_path / "rec")
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: serve_recording(
            tmp_path / "rec", speed=None, loop=True, task_status=task_status))
        async with connect(f"ws://127.0.0.1:{port}/p1", open_timeout=5) as ws:
            await ws.send("subscribe")
            with anyio.fail_after(10):
                got = [await ws.recv() for _ in range(3 * len(frames))]
        assert got == frames * 3
        tg.cancel_scope.cancel()


async def test_frames_are_paced_by_recorded_time_over_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed_recording(tmp_path / "rec")
    now = [100.0]
    delays: list[float] = []

    async def sleep(seconds: float) -> None:  # the test's clock: a sleep advances it exactly
        delays.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr(serve_module, "_clock", lambda: now[0])
    monkeypatch.setattr(serve_module, "_sleep", sleep)
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: serve_recording(
            tmp_path / "rec", speed=4.0, task_status=task_status))
        got, code = await receive_all(f"ws://127.0.0.1:{port}/p1")
        tg.cancel_scope.cancel()
    assert len(got) == 5 and code == 1000
    # p1's frames are 10 ms apart: 2.5 ms at 4x (the first is due at once)
    assert delays == [0.0025] * 4


async def test_bad_recording_and_speed_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no such recording"):
        await serve_recording(tmp_path / "missing")
    mixed_recording(tmp_path / "rec")
    with pytest.raises(ValueError, match="speed must be positive"):
        await serve_recording(tmp_path / "rec", speed=0)


async def test_run_serve_prints_the_provider_urls(tmp_path: Path) -> None:
    mixed_recording(tmp_path / "rec")
    lines: list[str] = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: run_serve(
            tmp_path / "rec", speed=None, echo=lines.append, task_status=task_status))
        assert lines == serve_lines("127.0.0.1", port, {"p1": 1, "p2": 0})
        assert f'  url = "ws://127.0.0.1:{port}/p2"' in lines and "  [providers.p1]" in lines
        got, _ = await receive_all(f"ws://127.0.0.1:{port}/p2")
        assert got == [f"p2-{i}" for i in range(5)]
        tg.cancel_scope.cancel()
