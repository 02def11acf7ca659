"""FakeYahooServer speaks the streamer protocol over a real loopback socket."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mdgate_yahoo.protocol import YahooDecoder, encode_subscribe, encode_unsubscribe
from mdgate_yahoo.testing import MALFORMED_FRAMES, FakeYahooServer


async def _recv(ws: ClientConnection, timeout: float = 5.0) -> str:
    with anyio.fail_after(timeout):
        msg = await ws.recv()
    assert isinstance(msg, str)
    return msg


async def _nothing_within(ws: ClientConnection, seconds: float) -> bool:
    with anyio.move_on_after(seconds):
        await ws.recv()
        return False
    return True


async def test_fake_server_subscribe_recorded_and_pushed() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await ws.send(encode_subscribe(["AAPL", "RELIANCE.NS"]))
        await yahoo.wait_subscribed("AAPL", "RELIANCE.NS")
        assert yahoo.received == ['{"subscribe": ["AAPL", "RELIANCE.NS"]}']
        assert await yahoo.send_pricing("RELIANCE.NS", price=2456.75, day_volume=10) == 1
        assert await yahoo.send_pricing("MSFT", price=1.0) == 0  # not subscribed: not sent
        dec = YahooDecoder()
        dec.track("RELIANCE.NS", "NSE:RELIANCE")
        (tick,) = dec.feed(await _recv(ws), 1)
        assert (tick.instrument, tick.price, tick.volume) == (
            "NSE:RELIANCE",
            2456.75,
            10,
        )


async def test_fake_server_unsubscribe_stops_pushes() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await ws.send(encode_subscribe(["AAPL", "IBM"]))
        await yahoo.wait_subscribed("AAPL", "IBM")
        await ws.send(encode_unsubscribe(["AAPL"]))
        await yahoo.wait_until(lambda _: yahoo.subscribed == {"IBM"})
        assert await yahoo.send_pricing("AAPL", price=1.0) == 0


async def test_fake_server_cap_keeps_first_hundred() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        symbols = [f"S{i}" for i in range(101)]
        await ws.send(encode_subscribe(symbols))
        await yahoo.wait_until(lambda _: len(yahoo.received) == 1)
        await yahoo.wait_subscribed(*symbols[:100])
        (conn,) = yahoo.connections
        assert conn.refused == ["S100"]
        await ws.send(encode_unsubscribe(["S0"]))
        await ws.send(encode_subscribe(["S100"]))
        await yahoo.wait_subscribed("S100")


async def test_fake_server_malformed_request_closes_1005() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await ws.send('{"subscribe": "AAPL"}')
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as ei:
            await ws.recv()
        assert ei.value.rcvd is not None
        assert ei.value.rcvd.code == 1005
        assert yahoo.malformed == 1


async def test_fake_server_harmless_requests_keep_socket() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await ws.send("{}")
        await ws.send('{"subscribe": []}')
        await ws.send(encode_subscribe(["AAPL"]))
        await yahoo.wait_subscribed("AAPL")
        assert yahoo.malformed == 0


async def test_fake_server_drop_aborts_connection() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await yahoo.wait_connections(1)
        yahoo.drop()
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as ei:
            await ws.recv()
        assert ei.value.rcvd is None  # no close frame: abrupt
        await yahoo.wait_until(lambda _: not yahoo.connections)


async def test_fake_server_close_all_clean_1000() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await yahoo.wait_connections(1)
        await yahoo.close_all()
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as ei:
            await ws.recv()
        assert ei.value.rcvd is not None
        assert ei.value.rcvd.code == 1000


async def test_fake_server_silent_sends_nothing_new_connection_normal() -> None:
    async with FakeYahooServer() as yahoo:
        async with connect(yahoo.url) as ws:
            await ws.send(encode_subscribe(["AAPL"]))
            await yahoo.wait_subscribed("AAPL")
            yahoo.go_silent()
            assert await yahoo.send_pricing("AAPL", price=1.0) == 0
            assert await _nothing_within(ws, 0.2)
        async with connect(yahoo.url) as ws2:
            await ws2.send(encode_subscribe(["AAPL"]))
            await yahoo.wait_until(lambda _: any(not c.silent and c.subscribed for c in yahoo.connections))
            assert await yahoo.send_pricing("AAPL", price=1.0) == 1
            assert json.loads(await _recv(ws2))["type"] == "pricing"


async def test_fake_server_send_malformed_each_kind_decodes_to_that_kind() -> None:
    from mdgate._errors import DecodeError

    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await yahoo.wait_connections(1)
        dec = YahooDecoder()
        dec.track("AAPL", "NASDAQ:AAPL")
        for kind in MALFORMED_FRAMES:
            assert await yahoo.send_malformed(kind) == 1
            with pytest.raises(DecodeError) as ei:
                dec.feed(await _recv(ws), 1)
            assert ei.value.kind == kind


async def test_fake_server_snapshot_sent_on_subscribe() -> None:
    async with FakeYahooServer(snapshots={"AAPL": {"price": 227.55, "time": 5}}) as yahoo:
        async with connect(yahoo.url) as ws:
            await ws.send(encode_subscribe(["AAPL"]))
            dec = YahooDecoder()
            dec.track("AAPL", "NASDAQ:AAPL")
            (tick,) = dec.feed(await _recv(ws), 1)
            assert (tick.price, tick.ts) == (227.55, 5)


async def test_fake_server_stream_numbered_ticks_in_order() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await ws.send(encode_subscribe(["AAPL", "IBM"]))
        await yahoo.wait_subscribed("AAPL", "IBM")
        yahoo.start_stream(None, count=200)
        dec = YahooDecoder()
        dec.track("AAPL", "NASDAQ:AAPL")
        dec.track("IBM", "NYSE:IBM")
        seqs: dict[str, list[int]] = {"NASDAQ:AAPL": [], "NYSE:IBM": []}
        for _ in range(200):
            (tick,) = dec.feed(await _recv(ws), 1)
            assert tick.volume is not None
            seqs[tick.instrument].append(tick.volume)
            assert tick.ts > 1_700_000_000_000
        assert seqs == {
            "NASDAQ:AAPL": list(range(1, 101)),
            "NYSE:IBM": list(range(1, 101)),
        }
        assert yahoo.stream_sent == 200
        assert await _nothing_within(ws, 0.1)


async def test_fake_server_stream_paced_rate_respected() -> None:
    async with FakeYahooServer() as yahoo, connect(yahoo.url) as ws:
        await ws.send(encode_subscribe(["AAPL"]))
        await yahoo.wait_subscribed("AAPL")
        t0 = anyio.current_time()
        yahoo.start_stream(100.0, count=20)
        for _ in range(20):
            await _recv(ws)
        elapsed = anyio.current_time() - t0
        assert 0.15 <= elapsed < 2.0
        yahoo.stop_stream()


def test_fake_server_cli_serves_until_killed() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdgate_yahoo.testing", "--port", "0", "--rate", "50"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake Yahoo streamer on ws://127.0.0.1:")
        url = line.split(" on ", 1)[1].strip()

        async def client() -> str:
            async with connect(url) as ws:
                await ws.send(encode_subscribe(["AAPL"]))
                return await _recv(ws)

        frame = anyio.run(client)
        assert json.loads(frame)["type"] == "pricing"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_fake_server_expired_credentials_refuse_the_handshake_with_401() -> None:
    from websockets.exceptions import InvalidStatus

    async with FakeYahooServer() as yahoo:
        yahoo.expire_credentials()
        with pytest.raises(InvalidStatus) as info:
            async with connect(yahoo.url):
                pass
        assert info.value.response.status_code == 401
        assert yahoo.handshakes == 1 and yahoo.accepted == 0
        yahoo.restore_credentials()
        async with connect(yahoo.url):
            await yahoo.wait_connections(1)
