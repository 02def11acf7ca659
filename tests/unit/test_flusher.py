"""
Pre-framed clients are written by the flusher: once per event-loop iteration,
one ``writelines`` per client with everything it got, in order, no writer task
woken while its socket keeps up; the task takes over for what needs waiting.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.protocol import State

from mdgate._config import ServerSettings
from mdgate._model import Tick
from mdgate._serve.fanout import ClientOutbox, Fanout
from mdgate._serve.server import ClientServer
from mdgate._serve.writer import HIGH_WATER, TAKE_BYTES, Flusher

pytestmark = pytest.mark.anyio


class Transport:
    """Records every ``writelines``; ``buffered`` is what the socket did not take."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.buffered = 0
        self.closing = False

    def writelines(self, frames: list[bytes]) -> None:
        self.writes.append(list(frames))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


class Ws:
    def __init__(self) -> None:
        self.transport = Transport()
        self.protocol = SimpleNamespace(state=State.OPEN)
        self.remote_address = ("127.0.0.1", 5555)
        self.close_timeout: float | None = 1.0
        self.closes: list[tuple[int, str]] = []

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.protocol.state = State.CLOSED


def _seqs(writes: list[list[bytes]]) -> list[int]:
    out = []
    for frames in writes:
        for frame in frames:
            doc = json.loads(frame[frame.index(b"{"):])
            out += [t["seq"] for t in doc.get("ticks", [])]
    return out


def _tick(inst: str, i: int, pad: int = 0) -> Tick:
    return Tick(inst, 1.0, i, i, "X" * (pad or 2), seq=i)


async def _idle(server: ClientServer, ws: Ws, outbox: ClientOutbox, tg: Any) -> anyio.Event:
    """Start the client's writer task; return once it sleeps (the flusher writes for it)."""
    done = anyio.Event()

    async def run() -> None:
        scope = anyio.CancelScope()
        with scope:
            await server._writer(ws, outbox, scope)  # type: ignore[arg-type]
        done.set()

    tg.start_soon(run)
    with anyio.fail_after(2):
        while outbox.direct is None:
            await anyio.sleep(0.001)
    return done


async def _settle() -> None:
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


async def test_one_write_per_client_per_loop_iteration_for_every_batch_published_in_it():
    server = ClientServer(ServerSettings())
    fanout = Fanout(framed=True)
    clients = [(Ws(), ClientOutbox(10_000, 1000, framed=True)) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for ws, outbox in clients:
            fanout.set_instruments(outbox, frozenset({"X:A", "X:B"}))
            await _idle(server, ws, outbox, tg)
        fanout.publish([_tick("X:A", 1)])
        fanout.publish([_tick("X:B", 2), _tick("X:A", 3)])  # same iteration: the same write
        for _, outbox in clients:
            outbox.control(b'{"type":"gap"}')
        fanout.publish([_tick("X:A", 4)])
        await _settle()
        for ws, outbox in clients:
            assert len(ws.transport.writes) == 1 and _seqs(ws.transport.writes) == [1, 2, 3, 4]
            assert outbox.direct is not None and outbox.nbytes == 0  # its task still asleep
        assert clients[0][0].transport.writes[0][0] is clients[1][0].transport.writes[0][0]  # shared bytes
        assert server.flusher.writes == 3 and server.flusher.handed_back == 0
        fanout.publish([_tick("X:A", 5)])  # a later iteration: one more write each
        await _settle()
        assert [len(ws.transport.writes) for ws, _ in clients] == [2, 2, 2]
        tg.cancel_scope.cancel()


async def test_a_hold_makes_no_loop_call_and_the_flush_that_ends_it_writes_everything():
    server = ClientServer(ServerSettings())
    fanout = Fanout(framed=True)
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True)
    async with anyio.create_task_group() as tg:
        fanout.set_instruments(outbox, frozenset({"X:A"}))
        await _idle(server, ws, outbox, tg)
        server.flusher.hold()
        fanout.publish([_tick("X:A", 1)])
        await _settle()
        assert ws.transport.writes == []  # held: the loop did not write it (its holder flushes)
        server.flusher.flush()
        assert _seqs(ws.transport.writes) == [1]
        fanout.publish([_tick("X:A", 2)])  # the flush ended the hold: the loop writes again
        await _settle()
        assert _seqs(ws.transport.writes) == [1, 2]
        tg.cancel_scope.cancel()


async def test_a_lagging_socket_or_a_long_queue_goes_back_to_the_writer_task_and_nothing_is_lost():
    server = ClientServer(ServerSettings())
    fanout = Fanout(framed=True)
    ws, outbox = Ws(), ClientOutbox(1_000_000, 1000, framed=True, budget=1 << 30)
    fanout.set_instruments(outbox, frozenset({"X:A"}))
    async with anyio.create_task_group() as tg:
        await _idle(server, ws, outbox, tg)
        pad = 30_000
        for i in range(1, 6):  # ~150 KB in one iteration: more than one take
            fanout.publish([_tick("X:A", i, pad)])
        await _settle()
        assert server.flusher.handed_back == 1  # the task writes the rest
        with anyio.fail_after(2):
            while outbox.direct is None:
                await anyio.sleep(0.001)
        assert _seqs(ws.transport.writes) == [1, 2, 3, 4, 5]
        assert sum(map(len, ws.transport.writes[0])) <= TAKE_BYTES + 40_000
        ws.transport.buffered = HIGH_WATER + 1  # the socket lags: the task waits for it to drain
        fanout.publish([_tick("X:A", 6)])
        await _settle()
        assert outbox.direct is None and server.flusher.handed_back == 2
        fanout.publish([_tick("X:A", 7)])  # queued while it waits
        await _settle()
        writes = len(ws.transport.writes)
        ws.transport.buffered = 0
        with anyio.fail_after(2):
            while outbox.direct is None:
                await anyio.sleep(0.001)
        assert len(ws.transport.writes) == writes + 1 and _seqs(ws.transport.writes)[-2:] == [6, 7]
        tg.cancel_scope.cancel()


async def test_a_barrier_holds_the_flusher_back_until_released():
    server = ClientServer(ServerSettings())
    fanout = Fanout(framed=True)
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True)
    fanout.set_instruments(outbox, frozenset({"X:A"}))
    async with anyio.create_task_group() as tg:
        await _idle(server, ws, outbox, tg)
        barrier = outbox.hold()
        fanout.publish([_tick("X:A", 2)])
        await _settle()
        assert ws.transport.writes == []
        outbox.pass_through(barrier, [b'{"type":"ticks","ticks":[{"seq":1}]}'])
        outbox.release(barrier)
        await _settle()
        assert _seqs(ws.transport.writes) == [1, 2] and len(ws.transport.writes) == 1
        tg.cancel_scope.cancel()


async def test_over_budget_while_asleep_wakes_the_task_which_closes_the_client():
    server = ClientServer(ServerSettings())
    server.close_grace = 1.0
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True, budget=64 * 1024)
    async with anyio.create_task_group() as tg:
        done = await _idle(server, ws, outbox, tg)
        ws.transport.buffered = 64 * 1024  # the socket holds the whole budget
        outbox.in_flight = ws.transport.buffered
        outbox.control(b'{"type":"error"}')  # replies alone over budget
        with anyio.fail_after(2):
            await done.wait()
    assert ws.closes and ws.closes[0][0] == 1008 and server.stats.closed["over_budget"] == 1
    assert ws.transport.writes == []


async def test_a_closing_connection_is_not_written_by_the_flusher():
    flusher = Flusher(lambda ms: None)
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True)
    flusher.attach(ws, outbox)  # type: ignore[arg-type]
    ws.transport.closing = True
    outbox.control(b'{"type":"gap"}')
    await _settle()
    assert ws.transport.writes == [] and outbox.direct is None and flusher.handed_back == 1


async def test_a_client_whose_writer_went_away_is_not_written():
    flusher = Flusher(lambda ms: None)
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True)
    flusher.attach(ws, outbox)  # type: ignore[arg-type]
    outbox.control(b'{"type":"gap"}')  # marked for the next flush...
    outbox.direct = None  # ...but its writer task ended (what its finally does)
    await _settle()
    assert ws.transport.writes == [] and flusher.writes == 0


async def test_a_cancelled_writer_leaves_its_client_to_nobody():
    server = ClientServer(ServerSettings())
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True)
    async with anyio.create_task_group() as tg:
        await _idle(server, ws, outbox, tg)
        tg.cancel_scope.cancel()  # the client's handler ends
    outbox.control(b'{"type":"gap"}')
    await _settle()
    assert ws.transport.writes == [] and outbox.direct is None
