"""
The scriptable faults every provider's fake inherits from
``mdgate.testing.FakeProviderServer``, on the example provider's fake:
drop after N frames, freeze, flood, refuse connections for T seconds (of a
clock the test moves), expire credentials, a malformed frame.
"""

from __future__ import annotations

import json

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mdgate import DecodeError

pytestmark = pytest.mark.anyio


async def test_drop_after_n_frames_aborts_after_exactly_n() -> None:
    from mdgate_example.testing import FakeExampleServer

    async with FakeExampleServer() as fake, connect(fake.url) as ws:
        await fake.wait_connections(1)
        fake.drop_after(3)
        for i in range(3):
            assert await fake.send_tick("ACME", float(i)) == 1
        got = [json.loads(await ws.recv())["p"] for _ in range(3)]
        assert got == [0.0, 1.0, 2.0]
        with pytest.raises(ConnectionClosed), anyio.fail_after(5):
            await ws.recv()
        assert fake.connections == [] and fake.history[0].sent == 3
        assert await fake.send_tick("ACME", 9.0) == 0


async def test_freeze_stops_reading_and_writing_but_keeps_the_socket() -> None:
    from mdgate_example.testing import FakeExampleServer

    async with FakeExampleServer() as fake, connect(fake.url) as ws:
        await fake.wait_connections(1)
        fake.freeze()
        await ws.send(json.dumps({"action": "subscribe", "symbols": ["ACME"]}))
        assert await fake.send_tick("ACME", 1.0) == 0
        with anyio.move_on_after(0.3) as waited:
            await fake.wait_subscribed("ACME", timeout=1)
        assert waited.cancelled_caught  # the request is not read while frozen
        pong = await ws.ping()
        with anyio.move_on_after(0.3) as waited:
            await pong
        assert waited.cancelled_caught  # not even a ping is answered
        assert fake.subscribed == set() and len(fake.connections) == 1 and not fake.connections[0].closed
        fake.thaw()
        await fake.wait_subscribed("ACME", timeout=5)
        with anyio.fail_after(5):
            await (await ws.ping())
        assert await fake.send_tick("ACME", 2.0) == 1
        assert json.loads(await ws.recv())["p"] == 2.0


async def test_flood_sends_one_frame_n_times() -> None:
    from mdgate_example.testing import FakeExampleServer

    async with FakeExampleServer() as fake, connect(fake.url) as ws:
        await fake.wait_connections(1)
        assert await fake.flood('{"s": "ACME", "p": 1}', 500) == 500
        frames = [await ws.recv() for _ in range(500)]
        assert set(frames) == {'{"s": "ACME", "p": 1}'} and fake.connections[0].sent == 500


async def test_refuse_for_answers_503_until_the_clock_says_so() -> None:
    from mdgate_example.testing import FakeExampleServer

    now = [100.0]
    async with FakeExampleServer(clock=lambda: now[0]) as fake:
        fake.refuse_for(5.0)
        for t in (100.0, 104.99):
            now[0] = t
            with pytest.raises(InvalidStatus) as info:
                async with connect(fake.url):
                    pass
            assert info.value.response.status_code == 503
        assert fake.refused == 2 and fake.handshakes == 2 and fake.accepted == 0
        now[0] = 105.0
        async with connect(fake.url):
            await fake.wait_connections(1)
        assert fake.refused == 2 and fake.handshakes == 3


async def test_expire_credentials_answers_subscribe_with_an_auth_error() -> None:
    from mdgate_example.testing import FakeExampleServer

    async with FakeExampleServer() as fake, connect(fake.url) as ws:
        fake.expire_credentials()
        assert fake.refuse_auth  # the older name of the same flag
        await ws.send(json.dumps({"action": "subscribe", "symbols": ["ACME"]}))
        assert json.loads(await ws.recv()) == {"error": "auth", "message": "token refused"}
        fake.restore_credentials()
        await ws.send(json.dumps({"action": "subscribe", "symbols": ["BETA"]}))
        await fake.wait_subscribed("BETA", timeout=5)


async def test_send_malformed_is_rejected_by_the_decoder() -> None:
    from mdgate_example.protocol import ExampleDecoder
    from mdgate_example.testing import FakeExampleServer

    async with FakeExampleServer() as fake, connect(fake.url) as ws:
        await fake.wait_connections(1)
        assert await fake.send_malformed() == 1
        with pytest.raises(DecodeError) as info:
            ExampleDecoder().feed(await ws.recv(), 0)
        assert info.value.kind == "bad_json"
