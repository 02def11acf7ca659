"""
The provider WebSocket on picows (``mdgate._providers.upstream``) against a real
WebSocket server on loopback: messages in order both ways (pulled, pushed),
fragments, limits, back-pressure, and every way a connection ends told as one
typed error.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from mdgate._clock import ManualClock
from mdgate._errors import AuthenticationError, ProviderConnectionError, RateLimitedError
from mdgate._model import Tick
from mdgate._provider import Endpoint
from mdgate._providers.states import ProviderState
from mdgate._providers.transport import open_websocket
from mdgate._providers.upstream import PULL_HIGH, UpstreamWebSocket
from mdgate._queue import TickQueue
from tests.unit._scripted import Script, make_session, running

pytestmark = pytest.mark.anyio

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler, status: int | None = None) -> AsyncIterator[dict[str, Any]]:
    """A WebSocket server on a free loopback port running ``handler`` (or refusing with ``status``)."""
    seen: dict[str, Any] = {"closes": []}

    def refuse(ws: ServerConnection, request: Request) -> Response | None:
        if status is None:
            return None
        return Response(status, "refused", Headers([("Content-Length", "0")]), b"")

    async def run(ws: ServerConnection) -> None:
        try:
            await handler(ws)
        finally:
            await ws.wait_closed()
            seen["closes"].append(ws.close_code)

    async with serve(run, "127.0.0.1", 0, process_request=refuse, max_size=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        seen["url"] = f"ws://127.0.0.1:{port}/"
        yield seen


async def connect(url: str, **kw: Any) -> UpstreamWebSocket:
    return await open_websocket("fake", Endpoint(url, **kw))


async def test_messages_arrive_in_order_text_as_str_binary_as_bytes_and_sends_reach_the_server() -> None:
    got: list[object] = []

    async def handler(ws: ServerConnection) -> None:
        got.append(await ws.recv())
        got.append(await ws.recv())
        for i in range(50):
            await ws.send(f"t{i}" if i % 2 else f"b{i}".encode())
        await ws.send(["frag", "mented"])  # one text message in three frames
        await ws.send([b"\x00\x01", b"\x02"])
        await ws.close()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        await ws.send("hello")
        await ws.send(b"\xff\x00")
        out = [await ws.recv() for _ in range(52)]
        with pytest.raises(ProviderConnectionError, match=r"server closed the connection \(code 1000\)"):
            await ws.recv()
    assert got == ["hello", b"\xff\x00"]
    assert out[:50] == [f"t{i}" if i % 2 else f"b{i}".encode() for i in range(50)]
    assert out[50:] == ["fragmented", b"\x00\x01\x02"]
    assert srv["closes"] == [1000]  # the close was answered


async def test_pushed_messages_go_to_the_sink_in_order_the_early_ones_first() -> None:
    async def handler(ws: ServerConnection) -> None:
        for i in range(20):
            await ws.send(f"m{i}")
        await ws.recv()  # then wait for the client's word
        for i in range(20, 40):
            await ws.send(f"m{i}")
        await ws.close(4001, "bye")

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        while len(ws._pending) < 20:  # received before the sink was set
            await anyio.sleep(0.01)
        got: list[object] = []
        ended = anyio.Event()
        ws.set_sink(got.append, ended.set)
        assert got == [f"m{i}" for i in range(20)]
        await ws.send("more")
        with anyio.fail_after(5):
            await ended.wait()
    assert got == [f"m{i}" for i in range(40)]
    assert str(ws.end_error()) == "fake: connection closed (code 4001, bye)"
    assert srv["closes"] == [4001]


async def test_burst_is_called_once_after_the_last_message_of_each_socket_read() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for text in ("a", "b", "c"):  # three frames in one write: one read on the other side
            ws.protocol.send_text(text.encode())
        ws.send_data()
        await ws.recv()
        ws.protocol.send_text(b"d")
        ws.send_data()
        await ws.wait_closed()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        events: list[object] = []
        ws.set_sink(events.append, lambda: None, lambda: events.append("BURST"))
        await ws.send("go")
        with anyio.fail_after(5):
            while "BURST" not in events:
                await anyio.sleep(0.005)
            await ws.send("again")
            while events.count("BURST") < 2:
                await anyio.sleep(0.005)
        got = list(events)
        await ws.aclose()
    assert got == ["a", "b", "c", "BURST", "d", "BURST"]


async def test_a_message_over_max_size_closes_with_1009_even_in_fragments() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("small")
        await ws.send(["x" * 600, "x" * 600])  # 1,200 bytes in two frames of 600
        await ws.wait_closed()

    async with server(handler) as srv:
        ws = await connect(srv["url"], max_size=1000)
        assert await ws.recv() == "small"
        with pytest.raises(ProviderConnectionError, match=r"protocol error: message over max_size \(1000"):
            await ws.recv()
    assert srv["closes"] == [1009]


async def test_invalid_utf8_text_closes_with_1007() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.protocol.send_text(b"\xff\xfe")  # no check on this side
        ws.send_data()
        await ws.wait_closed()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        with pytest.raises(ProviderConnectionError, match="invalid UTF-8"):
            await ws.recv()
    assert srv["closes"] == [1007]


async def test_a_dropped_connection_is_told_apart_from_a_close() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        ws.transport.abort()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        assert await ws.recv() == "one"
        with pytest.raises(ProviderConnectionError, match=r"connection dropped \(no close frame\)"):
            await ws.recv()
        with pytest.raises(ProviderConnectionError):
            await ws.send("late")


@pytest.mark.parametrize(("status", "error", "text"), [
    (401, AuthenticationError, "handshake refused with HTTP 401"),
    (403, AuthenticationError, "handshake refused with HTTP 403"),
    (429, RateLimitedError, "handshake refused with HTTP 429"),
    (503, ProviderConnectionError, "handshake refused with HTTP 503"),
])
async def test_a_refused_handshake_is_a_typed_error(status: int, error: type[Exception], text: str) -> None:
    async def handler(ws: ServerConnection) -> None:  # never reached
        raise AssertionError

    async with server(handler, status) as srv:
        with pytest.raises(error, match=text) as info:
            await connect(srv["url"])
    assert type(info.value) is error


async def test_nobody_listening_and_a_silent_server_are_typed_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ProviderConnectionError, match="cannot connect to"):
            await connect(f"ws://127.0.0.1:{port}/")
        s.listen()  # accepts TCP, never answers the HTTP upgrade
        with pytest.raises(ProviderConnectionError, match="timed out connecting"):
            await connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)


async def test_pulled_messages_pause_reading_above_the_high_mark_and_nothing_is_lost() -> None:
    count = PULL_HIGH * 8

    async def handler(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(json.dumps({"i": i, "pad": "p" * 1000}))
        await ws.close()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        with anyio.fail_after(10):
            while not ws._paused:
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)  # paused: what is read stays bounded while nobody takes it
            assert len(ws._pending) < count
            got = [json.loads(await ws.recv())["i"] for _ in range(count)]
    assert got == list(range(count))


async def test_a_pause_the_sink_asks_for_while_taking_the_pending_messages_stands() -> None:
    count = PULL_HIGH * 4

    async def handler(ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(f"m{i}")
        await ws.wait_closed()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        with anyio.fail_after(10):
            while not ws._paused:  # paused by the pull side's high mark
                await anyio.sleep(0.01)
        got: list[object] = []

        def full(message: object) -> None:  # a consumer whose queue is full from the start
            got.append(message)
            ws.pause_reading()

        ws.set_sink(full, lambda: None)
        assert got and ws._paused  # still paused: the sink's word stands
        await ws.aclose()


async def test_aclose_sends_1000_and_waits_for_the_server() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with server(handler) as srv:
        ws = await connect(srv["url"])
        await ws.aclose()
        assert ws.ended
    assert srv["closes"] == [1000]


# ---------------------------------------------------------------- the connection loop, pushed


def _tick_frames(start: int, n: int) -> list[str]:
    return [json.dumps([{"s": "A", "p": float(i), "t": 1}]) for i in range(start, start + n)]


def _session(url: str, clock: ManualClock, decode: Callable[[Any, int], Any] | None = None) -> Any:
    """A scripted provider session whose connection is a real picows WebSocket to ``url``."""
    script = Script()
    script.refuse = None
    script.returns["mdgate_connect"] = Endpoint(url)
    script.decode = decode
    session = make_session(script, clock)
    session.add("A", "FAKE:A")
    return session


async def test_a_full_queue_pauses_the_socket_and_every_tick_arrives_in_order(monkeypatch: Any) -> None:
    """The pushed reader: ticks the full queue refuses wait in order; the socket is not read meanwhile."""
    pauses: list[int] = []
    real_pause = UpstreamWebSocket.pause_reading

    def spy(self: UpstreamWebSocket) -> None:
        pauses.append(len(self._pending))
        real_pause(self)

    monkeypatch.setattr(UpstreamWebSocket, "pause_reading", spy)
    total = 400

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the subscribe
        for frame in _tick_frames(0, total):
            await ws.send(frame)
        await ws.wait_closed()

    async with server(handler) as srv:
        clock = ManualClock()
        session = _session(srv["url"], clock)
        session.queue = queue = TickQueue(5)
        got: list[float] = []
        async with running(session, clock):
            with anyio.fail_after(10):
                while len(got) < total:
                    await asyncio.sleep(0.002)  # a slow consumer
                    got += [t.price for t in queue.drain()]
    assert got == [float(i) for i in range(total)]
    assert queue.waits > 0 and pauses  # the reader waited for room with the socket paused


async def test_a_provider_error_in_a_pushed_message_ends_the_connection_after_its_good_ticks() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for frame in [*_tick_frames(0, 3), "KICK", *_tick_frames(3, 3)]:
            await ws.send(frame)
        await ws.wait_closed()

    def decode(frame: Any, recv_ts: int) -> Any:
        if frame == "KICK":
            raise AuthenticationError("fake", "kicked", ticks=[Tick("FAKE:A", 99.0, 1, recv_ts, "FK")])
        return [Tick("FAKE:A", m["p"], 1, recv_ts, "FK") for m in json.loads(frame)]

    async with server(handler) as srv:
        clock = ManualClock()
        session = _session(srv["url"], clock, decode)
        async with running(session, clock):
            with anyio.fail_after(10):
                while session.state != ProviderState.AUTH_FAILED:
                    await asyncio.sleep(0.01)
            got = [t.price for t in session.queue.drain()]
    assert got == [0.0, 1.0, 2.0, 99.0]  # the good ones and the error's own; nothing after it


async def test_a_socket_reads_ticks_reach_the_pipeline_within_the_read_without_a_loop_call(
    monkeypatch: Any,
) -> None:
    """The pushed reader flushes the queue after each read: the queue schedules no loop call for it."""
    late: list[int] = []
    real = TickQueue._scheduled_consume

    def spy(self: TickQueue) -> None:
        late.append(len(self._items))
        real(self)

    monkeypatch.setattr(TickQueue, "_scheduled_consume", spy)

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for frame in _tick_frames(0, 5):
            await ws.send(frame)
            await asyncio.sleep(0.01)  # one read each
        await ws.wait_closed()

    got = await _consumed(handler, 5, timeout=10)
    assert got == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert late == []  # no loop call: each read flushed its own ticks


async def _consumed(handler: Callable[[ServerConnection], Awaitable[None]], count: int,
                    *, timeout: float) -> list[float]:
    """The prices a session's queue consumer got from ``handler``'s feed, once it got ``count``."""
    async with server(handler) as srv:
        clock = ManualClock()
        session = _session(srv["url"], clock)
        got: list[float] = []
        session.queue.set_consumer(lambda batch: got.extend(t.price for t in batch))
        async with running(session, clock):
            with anyio.fail_after(timeout):
                while len(got) < count:
                    await asyncio.sleep(0.005)
    return got


async def test_a_read_that_ends_with_a_ping_still_hands_its_ticks_over_at_once() -> None:
    """picows answers a PING without the listener: the read's ticks go on from the loop, not the next read."""
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        # one write, so one read on the other side: a tick, then a PING as the read's last frame
        ws.protocol.send_text(_tick_frames(0, 1)[0].encode())
        ws.protocol.send_ping(b"p")
        ws.transport.writelines(ws.protocol.data_to_send())
        await ws.wait_closed()  # nothing else arrives: no later read would flush the tick

    assert await _consumed(handler, 1, timeout=5) == [0.0]


async def test_messages_received_before_the_sink_is_set_are_handed_over_then_burst() -> None:
    ws = UpstreamWebSocket("fake", 1 << 20)
    ws._pending.extend(["a", "b"])
    calls: list[str] = []
    ws.set_sink(calls.append, lambda: calls.append("end"), lambda: calls.append("burst"))
    assert calls == ["a", "b", "burst"]
