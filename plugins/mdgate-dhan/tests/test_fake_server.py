"""FakeDhanServer speaks the v2 feed: checked with a plain WebSocket client and the decoder."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mdgate._errors import AuthenticationError, RateLimitedError, SubscriptionRejected
from mdgate_dhan.protocol import DhanDecoder, encode_subscribe, encode_unsubscribe
from mdgate_dhan.testing import FakeDhanServer


def feed_url(server: FakeDhanServer, token: str | None = None) -> str:
    return f"{server.url}/?version=2&token={token or server.token}&clientId={server.client_id}&authType=2"


async def test_fake_subscribe_records_requests_and_sends_prev_close() -> None:
    async with FakeDhanServer(prev_close={"NSE_EQ:2885": 2870.4}) as server:
        async with connect(feed_url(server)) as ws:
            for frame in encode_subscribe(["NSE_EQ:2885", "NSE_EQ:1333"], "quote"):
                await ws.send(frame)
            with anyio.fail_after(5):
                data = await ws.recv()
                await server.wait_subscribed("NSE_EQ:2885", "NSE_EQ:1333")
            decoder = DhanDecoder()
            decoder.track("NSE_EQ:2885", "NSE:RELIANCE")
            assert decoder.feed(data, 0) == []  # prev close: state only
            await server.send_quote("NSE_EQ:2885", 2885.05, ts_ms=1_760_000_000_000, ltq=5)
            (tick,) = decoder.feed(await ws.recv(), 0)
            assert (tick.price, tick.ts, tick.prev_close, tick.size) == (
                2885.05,
                1_760_000_000_000,
                2870.4,
                5,
            )
            await ws.send(encode_unsubscribe(["NSE_EQ:1333"], "quote")[0])
            with anyio.fail_after(5):
                await server.wait_until(lambda _: server.subscribed == {"NSE_EQ:2885"})
        assert [r["RequestCode"] for r in server.requests] == [17, 18]
        assert server.history[0].subscribed == {"NSE_EQ:2885": 17}


async def test_fake_bad_token_disconnects_with_808() -> None:
    async with FakeDhanServer() as server:
        async with connect(feed_url(server, token="wrong")) as ws:
            data = await ws.recv()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        with pytest.raises(AuthenticationError) as info:
            DhanDecoder().feed(data, 0)
        assert info.value.code == 808
        assert server.auth_failures == 1


async def test_fake_bad_token_http_mode_refuses_handshake_with_401() -> None:
    async with FakeDhanServer(auth_failure="http") as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(feed_url(server, token="wrong")):
                pass
        assert info.value.response.status_code == 401
        assert server.connection_attempts == 1


async def test_fake_more_than_100_per_message_disconnects_804() -> None:
    async with FakeDhanServer() as server:
        async with connect(feed_url(server)) as ws:
            items = [{"ExchangeSegment": "NSE_EQ", "SecurityId": str(i)} for i in range(101)]
            await ws.send(json.dumps({"RequestCode": 15, "InstrumentCount": 101, "InstrumentList": items}))
            with pytest.raises(SubscriptionRejected):
                DhanDecoder().feed(await ws.recv(), 0)
        assert server.disconnects_sent == [804]


async def test_fake_sixth_connection_drops_oldest_with_805() -> None:
    async with FakeDhanServer() as server:
        async with connect(feed_url(server)) as oldest:
            others = [await connect(feed_url(server)) for _ in range(5)]
            try:
                with pytest.raises(RateLimitedError):
                    DhanDecoder().feed(await oldest.recv(), 0)
                with anyio.fail_after(5):
                    await server.wait_until(lambda _: len(server.connections) == 5)
                assert server.history[0].closed
            finally:
                for ws in others:
                    await ws.close()


async def test_fake_stream_encodes_sequence_and_send_time() -> None:
    async with FakeDhanServer() as server:
        async with connect(feed_url(server)) as ws:
            await ws.send(encode_subscribe(["NSE_EQ:2885"], "quote")[0])
            with anyio.fail_after(5):
                await server.wait_subscribed("NSE_EQ:2885")
            assert await server.stream(6, per_frame=3) == 6
            decoder = DhanDecoder()
            decoder.track("NSE_EQ:2885", "NSE:RELIANCE")
            ticks = decoder.feed(await ws.recv(), 0) + decoder.feed(await ws.recv(), 0)
            assert [t.volume for t in ticks] == [1, 2, 3, 4, 5, 6]
            now = time.time_ns() // 1_000_000
            for t in ticks:
                assert t.size is not None
                assert 0 <= now - (t.ts + t.size) < 5_000


async def test_fake_drop_and_disconnect_reason() -> None:
    async with FakeDhanServer() as server:
        async with connect(feed_url(server)) as ws:
            with anyio.fail_after(5):
                await server.wait_connections(1)
            await server.disconnect(807)
            with pytest.raises(AuthenticationError):
                DhanDecoder().feed(await ws.recv(), 0)
        async with connect(feed_url(server)) as ws:
            with anyio.fail_after(5):
                await server.wait_connections(1)
            server.drop()
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is None  # no close frame: an abrupt drop


def test_fake_runs_as_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdgate_dhan.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake Dhan feed listening on ws://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(("mode", "expected"), [("disconnect", 808), ("http", 401)])
async def test_fake_expired_credentials_refuse_the_right_token(mode: str, expected: int) -> None:
    async with FakeDhanServer(auth_failure=mode) as server:
        server.expire_credentials()
        if mode == "http":
            with pytest.raises(InvalidStatus) as refused:
                async with connect(feed_url(server)):
                    pass
            assert refused.value.response.status_code == expected
        else:
            async with connect(feed_url(server)) as ws:
                with anyio.fail_after(5):
                    data = await ws.recv()
            with pytest.raises(AuthenticationError) as info:
                DhanDecoder().feed(data, 0)
            assert info.value.code == expected
        assert server.auth_failures == 1
        server.restore_credentials()
        async with connect(feed_url(server)):
            await server.wait_connections(2 if mode == "disconnect" else 1)
        assert server.auth_failures == 1


async def test_fake_send_malformed_is_a_short_packet() -> None:
    from mdgate._errors import DecodeError

    async with FakeDhanServer() as server, connect(feed_url(server)) as ws:
        await server.wait_connections(1)
        assert await server.send_malformed() == 1
        with pytest.raises(DecodeError) as info:
            DhanDecoder().feed(await ws.recv(), 0)
        assert info.value.kind == "short_packet"
