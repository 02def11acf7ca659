"""mdgate.testing.FakeProviderServer: the base every provider's fake extends, one set of names."""

from __future__ import annotations

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mdgate import Frame
from mdgate.testing import FakeConnection, FakeProviderServer

pytestmark = pytest.mark.anyio


class EchoSubscribe(FakeProviderServer[FakeConnection]):
    """``+CODE`` subscribes, ``-CODE`` unsubscribes, ``quit`` stops reading."""

    async def on_frame(self, conn: FakeConnection, frame: Frame) -> bool:
        text = frame if isinstance(frame, str) else frame.decode()
        if text == "quit":
            return False
        if text[0] == "+":
            self.record_subscribe(conn, [text[1:]])
        elif text[0] == "-":
            self.record_unsubscribe(conn, [text[1:]])
        return True


async def test_records_requests_and_waits_on_changes() -> None:
    async with EchoSubscribe() as fake, connect(fake.url) as ws:
        await ws.send("+ACME")
        await ws.send("+BOLT")
        await fake.wait_subscribed("ACME", "BOLT", timeout=5)
        await ws.send("-ACME")
        await fake.wait_until(lambda s: s.subscribed == {"BOLT"}, timeout=5)
        assert fake.received == ["+ACME", "+BOLT", "-ACME"]
        assert fake.subscribe_requests == [["ACME"], ["BOLT"]] and fake.unsubscribe_requests == [["ACME"]]
        (conn,) = fake.connections
        assert conn.frames == fake.received and fake.accepted == 1 and fake.history == [conn]


async def test_send_counts_holders_and_skips_silent_connections() -> None:
    async with EchoSubscribe() as fake, connect(fake.url) as a, connect(fake.url) as b:
        await a.send("+ACME")
        await fake.wait_connections(2, timeout=5)
        await fake.wait_subscribed("ACME", timeout=5)
        assert await fake.send_to_holders("ACME", "tick") == 1
        assert await a.recv() == "tick"
        assert await fake.send("all") == 2
        fake.go_silent()
        assert await fake.send("nothing") == 0
        assert await fake.send_to_holders("ACME", "nothing") == 0
        assert await b.recv() == "all"


async def test_drop_aborts_close_all_closes_cleanly_and_accepted_counts_reconnects() -> None:
    async with EchoSubscribe() as fake:
        async with connect(fake.url) as ws:
            await ws.send("+ACME")
            await fake.wait_subscribed("ACME", timeout=5)
            fake.drop()
            assert fake.subscribed == set()  # only open connections hold codes
            with anyio.fail_after(5), pytest.raises(ConnectionClosed) as dropped:
                await ws.recv()
            assert dropped.value.rcvd is None  # no close frame
        async with connect(fake.url) as ws:
            await fake.wait_connections(2, timeout=5)
            assert len(fake.connections) == 1 and fake.accepted == 2
            await fake.close_all(1000)
            with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        await fake.wait_until(lambda s: not s.connections, timeout=5)


async def test_on_frame_false_stops_reading_and_wait_until_times_out() -> None:
    async with EchoSubscribe() as fake, connect(fake.url) as ws:
        await ws.send("quit")
        await fake.wait_until(lambda s: s.accepted == 1 and not s.connections, timeout=5)
        with pytest.raises(TimeoutError):
            await fake.wait_until(lambda s: bool(s.subscribed), timeout=0.1)
