"""
The writer's time rules against a clock the test moves: a socket undrained for
``drain_timeout`` closes the client with 1008, the closing handshake gets its
grace, then the socket is aborted. Real time only paces the polling.
"""

from __future__ import annotations

from types import SimpleNamespace

import anyio
import pytest
from websockets.protocol import State

from mdgate._config import ServerSettings, Settings
from mdgate._model import Tick
from mdgate._serve.fanout import ClientOutbox, _frames
from mdgate._serve.server import ClientServer
from mdgate._serve.writer import HIGH_WATER as _HIGH_WATER

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTransport:
    """A socket whose peer stopped reading: everything written stays buffered."""

    def __init__(self) -> None:
        self.buffered = 0
        self.aborted = False
        self.closing = False

    def writelines(self, frames: list[bytes]) -> None:
        self.buffered += sum(map(len, frames))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True


class FakeWs:
    def __init__(self, *, answers_close: bool) -> None:
        self.transport = FakeTransport()
        self.protocol = SimpleNamespace(state=State.OPEN)
        self.remote_address = ("127.0.0.1", 5555)
        self.close_timeout: float | None = 1.0
        self.closes: list[tuple[int, str]] = []
        self.answers_close = answers_close

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        if not self.answers_close:
            await anyio.sleep_forever()
        self.protocol.state = State.CLOSED


def _server(clock: FakeClock, drain_timeout: float = 30.0) -> ClientServer:
    settings = Settings(server=ServerSettings(drain_timeout=drain_timeout))
    return ClientServer(settings.server, clock=clock)


def _outbox_with_ticks(n: int) -> ClientOutbox:
    o = ClientOutbox(1_000_000, 1000, framed=True, budget=1 << 30)
    for i in range(n):
        ticks = [Tick(f"X:I{i % 7}", 1.0, i, i, "EX")]
        frames = _frames(ticks, 1000, True)
        o.push(frames, ticks, sum(map(len, frames)))
    return o


async def _until(predicate) -> None:
    with anyio.fail_after(3):
        while not predicate():
            await anyio.sleep(0.005)


def _start_writer(tg, server: ClientServer, ws: FakeWs, outbox: ClientOutbox) -> anyio.Event:
    """Run the writer in its own scope (it cancels that scope when it ends); the event is set then."""
    finished = anyio.Event()

    async def run() -> None:
        scope = anyio.CancelScope()
        with scope:
            await server._writer(ws, outbox, scope)
        finished.set()

    tg.start_soon(run)
    return finished


async def test_undrained_socket_closed_1008_after_drain_timeout_then_aborted_after_grace():
    clock = FakeClock()
    server = _server(clock, drain_timeout=30.0)
    server.close_grace = 5.0
    ws = FakeWs(answers_close=False)
    outbox = _outbox_with_ticks(1)
    ws.transport.buffered = 2 * _HIGH_WATER  # the peer stopped reading
    async with anyio.create_task_group() as tg:
        finished = _start_writer(tg, server, ws, outbox)
        await anyio.sleep(0.1)  # real time passes, the clock does not: nothing happens
        for i in range(5000):  # ticks keep coming while it lags; the outbox stays conflated
            ticks = [Tick(f"X:I{i % 7}", 1.0, i, i, "EX")]
            frames = _frames(ticks, 1000, True)
            outbox.push(frames, ticks, sum(map(len, frames)))
        clock.now = 29.9
        await anyio.sleep(0.05)
        assert ws.closes == [] and server.stats.closed["slow"] == 0
        clock.now = 30.0
        await _until(lambda: ws.closes)
        assert ws.closes[0][0] == 1008 and "too slow" in ws.closes[0][1]
        assert server.stats.closed == {"slow": 1, "over_budget": 0}
        assert outbox.nbytes == 0 and not outbox.queue and outbox.dropped > 0  # user space dropped
        assert ws.close_timeout == 5.0
        await anyio.sleep(0.1)
        assert not ws.transport.aborted  # the handshake has its grace...
        clock.now = 34.9
        await anyio.sleep(0.1)
        assert not ws.transport.aborted
        clock.now = 35.0
        await _until(lambda: ws.transport.aborted)  # ...then the socket goes
        await _until(finished.is_set)


async def test_socket_that_drains_in_time_is_not_closed():
    clock = FakeClock()
    server = _server(clock, drain_timeout=30.0)
    ws = FakeWs(answers_close=True)
    outbox = _outbox_with_ticks(1)
    ws.transport.buffered = 2 * _HIGH_WATER
    async with anyio.create_task_group() as tg:
        finished = _start_writer(tg, server, ws, outbox)
        clock.now = 29.0
        await anyio.sleep(0.05)
        ws.transport.buffered = 0  # the peer read it all
        await anyio.sleep(0.05)
        clock.now = 100.0
        ws.transport.buffered = 2 * _HIGH_WATER
        outbox.control(b'{"type":"snapshot","ticks":[]}')  # a new stall starts now, at 100
        await anyio.sleep(0.05)
        clock.now = 129.0
        await anyio.sleep(0.05)
        assert ws.closes == []
        clock.now = 130.0
        await _until(lambda: ws.closes)
        await _until(finished.is_set)
    # the client answered the close: no abort needed
    assert ws.closes == [(1008, "client too slow: socket not drained for 30 s")]
    assert not ws.transport.aborted


async def test_over_budget_client_closed_1008_at_once():
    clock = FakeClock()
    server = _server(clock)
    ws = FakeWs(answers_close=True)
    outbox = ClientOutbox(1000, 1000, framed=True, budget=64 * 1024)
    async with anyio.create_task_group() as tg:
        finished = _start_writer(tg, server, ws, outbox)
        ws.transport.buffered = 2 * _HIGH_WATER
        outbox.control(b"x" * 1000)
        await anyio.sleep(0.05)
        while not outbox.over_budget:
            outbox.control(b"y" * 4000)
        await _until(lambda: ws.closes)
        await _until(finished.is_set)
    assert ws.closes[0][0] == 1008 and "over budget" in ws.closes[0][1]
    assert server.stats.closed == {"slow": 0, "over_budget": 1}


def test_default_grace_is_a_few_seconds_or_drain_timeout():
    clock = FakeClock()
    assert _server(clock, drain_timeout=60.0).grace() == 5.0
    assert _server(clock, drain_timeout=2.0).grace() == 2.0
    assert _server(clock, drain_timeout=0.1).grace() == 1.0
