"""
End to end: fake Dhan feed -> the whole gateway in-process -> a WebSocket client.

Everything is real sockets on 127.0.0.1: :class:`FakeDhanServer` speaks the
v2 feed, ``running_gateway`` runs the daemon with the installed ``dhan``
plugin (loaded through its entry point), and ``GatewayClient`` speaks the
client protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mdgate._config import Settings
from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate_dhan.testing import FakeDhanServer

TOKEN = "e2e-token"
CLIENT = "1100998877"
Make = Callable[..., Settings]


@pytest.fixture
def make(tmp_path: Path) -> Make:
    def build(server: FakeDhanServer, dhan: str = "", extra: str = "", **runtime: float) -> Settings:
        timings = {"backoff_initial": 0.05, "backoff_max": 0.2, "auth_retry": 60.0} | runtime
        lines = "\n".join(f"{k} = {v}" for k, v in timings.items())
        text = f"""
[runtime]
{lines}

[providers.dhan]
url = "{server.url}"
{dhan}

{extra}
"""
        env = {
            "MDGATE_LOAD_PLUGINS": "dhan",
            "MDGATE_SUBSCRIPTIONS__LINGER": "0",
            "DHAN_CLIENT_ID": CLIENT,
            "DHAN_ACCESS_TOKEN": TOKEN,
        }
        return settings_from_toml(text, env, tmp_path)

    return build


def fake(**kw: Any) -> FakeDhanServer:
    return FakeDhanServer(token=TOKEN, client_id=CLIENT, **kw)


def dhan(status: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = status["providers"]["dhan"]
    return result


async def next_ticks(client: GatewayClient, count: int) -> list[dict[str, Any]]:
    ticks: list[dict[str, Any]] = []
    while len(ticks) < count:
        ticks += (await client.recv_type("ticks"))["ticks"]
    return ticks


async def test_e2e_reliance_streams_with_true_utc_ts(make: Make) -> None:
    trade_ms = 1_767_606_599_000  # 2026-01-05T09:49:59Z = 15:19:59 IST
    async with (
        fake(prev_close={"NSE_EQ:2885": 2870.4}) as server,
        running_gateway(make(server)) as gw,
        GatewayClient.connect(gw.ws_url) as client,
    ):
        subscribed, snapshot = await client.subscribe("nse:reliance")
        assert subscribed["instruments"] == ["NSE:RELIANCE"]
        assert snapshot["ticks"] == []
        with anyio.fail_after(10):
            await server.wait_subscribed("NSE_EQ:2885")
        await server.send_quote(
            "NSE_EQ:2885",
            2885.05,
            ts_ms=trade_ms,
            ltq=10,
            volume=1000,
            open=2850.0,
            high=2890.0,
            low=2840.0,
        )
        (tick,) = await next_ticks(client, 1)
        assert tick["instrument"] == "NSE:RELIANCE"
        assert tick["provider"] == "DHAN"
        assert tick["ts"] == trade_ms
        assert (tick["price"], tick["size"], tick["volume"]) == (2885.05, 10, 1000)
        assert (tick["open"], tick["high"], tick["low"]) == (2850.0, 2890.0, 2840.0)
        assert tick["prev_close"] == 2870.4
        assert abs(tick["recv_ts"] - time.time() * 1000) < 10_000
        st = dhan(gw.status())
        assert st["state"] == "connected"
        assert TOKEN not in st["url"] and CLIENT not in st["url"]
        assert "token=***" in st["url"]
    assert server.requests[0]["RequestCode"] == 17  # quote mode by default


async def test_e2e_150_instruments_use_batches_of_at_most_100(make: Make) -> None:
    names = [f"NSE:S{i}" for i in range(150)]
    table = "\n".join(f'[instruments."{n}"]\ndhan = "NSE_EQ:{1000 + i}"' for i, n in enumerate(names))
    async with (
        fake() as server,
        running_gateway(make(server, dhan='mode = "full"', extra=table)) as gw,
        GatewayClient.connect(gw.ws_url) as client,
    ):
        await client.subscribe(*names)
        with anyio.fail_after(10):
            await server.wait_subscribed(*[f"NSE_EQ:{1000 + i}" for i in range(150)])
        counts = [r["InstrumentCount"] for r in server.requests]
        assert all(c <= 100 for c in counts) and sum(counts) == 150
        assert len(counts) >= 2
        assert {r["RequestCode"] for r in server.requests} == {21}
        assert server.disconnects_sent == []  # the fake enforces the 100 limit with 804
        await server.send_full("NSE_EQ:1149", 10.5, depth=[(5, 6, 1, 1, 10.45, 10.55)], volume=7)
        (tick,) = await next_ticks(client, 1)
        assert (tick["instrument"], tick["bid"], tick["ask"]) == ("NSE:S149", 10.45, 10.55)
        assert dhan(gw.status())["connections"] == 1


async def test_e2e_more_than_5000_instruments_open_a_second_connection(make: Make) -> None:
    n = 5001
    table = "\n".join(f'[instruments."NSE:S{i}"]\ndhan = "NSE_EQ:{10_000 + i}"' for i in range(n))
    # one client takes them all: above the default per-client budget of 5,000 instruments
    table = "[server]\nmax_instruments_per_client = 6000\n" + table
    async with (
        fake() as server,
        running_gateway(make(server, extra=table)) as gw,
        GatewayClient.connect(gw.ws_url) as client,
    ):
        names = [f"NSE:S{i}" for i in range(n)]
        for i in range(0, n, 1000):
            await client.send({"op": "subscribe", "instruments": names[i : i + 1000]})
        with anyio.fail_after(30):
            await server.wait_until(lambda _: len(server.subscribed) == n)
        assert len(server.connections) == 2
        assert all(len(c.subscribed) <= 5000 for c in server.connections)
        assert server.disconnects_sent == []
        st = await gw.wait_for(lambda s: dhan(s)["connections"] == 2)
        assert dhan(st)["subscriptions"] == n


# close_delay 0: Dhan sends 807 and closes at once; the core must still read the packet
# (regression test for the send-before-read race), 0.3: the socket stays open a moment.
@pytest.mark.parametrize("close_delay", [0.0, 0.3])
async def test_e2e_token_expired_807_is_auth_failed_without_storm(
    make: Make, tmp_path: Path, close_delay: float
) -> None:
    async with fake(auth_failure_code=807, close_delay=close_delay) as server:
        server.token = "the-real-token"  # the gateway's token is now stale
        settings = make(server, auth_retry=1.0)
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
            await client.subscribe("NSE:RELIANCE")
            st = await gw.wait_for(lambda s: dhan(s)["state"] == "auth_failed")
            assert "807" in dhan(st)["last_error"]
            assert "DHAN_ACCESS_TOKEN" in dhan(st)["hint"]
            assert st["status"] == "degraded"
            attempts = server.connection_attempts
            await anyio.sleep(3.0)
            # auth_retry = 1 s: at most ~one attempt a second, not a tight loop.
            assert server.connection_attempts - attempts <= 4
            assert TOKEN not in str(st) and "the-real-token" not in str(st)
            # A new token via reload connects at once.
            cfg = tmp_path / "reload.toml"
            cfg.write_text(
                f'[providers.dhan]\nurl = "{server.url}"\nclient_id = "{CLIENT}"\n'
                'access_token = "the-real-token"\n'
            )
            gw.gateway.config_path = str(cfg)
            with pytest.MonkeyPatch.context() as mp:
                mp.delenv("DHAN_ACCESS_TOKEN", raising=False)
                mp.delenv("DHAN_CLIENT_ID", raising=False)
                assert gw.gateway.reload()
            await gw.wait_for(lambda s: dhan(s)["state"] == "connected", timeout=5)
            with anyio.fail_after(5):
                await server.wait_subscribed("NSE_EQ:2885")


@pytest.mark.parametrize("mode", ["disconnect", "http"])
async def test_e2e_bad_credentials_808_or_401_is_auth_failed(make: Make, mode: str) -> None:
    async with fake(auth_failure=mode) as server:
        server.token = "another-token"
        async with running_gateway(make(server)) as gw, GatewayClient.connect(gw.ws_url) as c:
            await c.subscribe("NSE:RELIANCE")
            st = await gw.wait_for(lambda s: dhan(s)["state"] == "auth_failed")
            assert ("808" if mode == "disconnect" else "401") in dhan(st)["last_error"]
            await anyio.sleep(1.0)
            assert server.connection_attempts == 1  # auth_retry = 60 s


async def test_e2e_805_backs_off_hard_before_reconnecting(make: Make) -> None:
    async with (
        fake() as server,
        running_gateway(make(server, backoff_max=2.0)) as gw,
        GatewayClient.connect(gw.ws_url) as client,
    ):
        await client.subscribe("NSE:RELIANCE")
        with anyio.fail_after(10):
            await server.wait_subscribed("NSE_EQ:2885")
        await server.disconnect(805)
        st = await gw.wait_for(lambda s: "805" in (dhan(s)["last_error"] or ""))
        assert dhan(st)["state"] == "reconnecting"
        t0 = time.monotonic()
        with anyio.fail_after(10):
            await server.wait_connections(2)  # the reconnect: the second connection accepted
        # A rate-limit disconnect waits at least half of backoff_max (not 0.05 s).
        assert time.monotonic() - t0 >= 0.8
        assert server.connection_attempts == 2


async def test_e2e_malformed_packets_counted_while_stream_goes_on(make: Make) -> None:
    async with (
        fake() as server,
        running_gateway(make(server)) as gw,
        GatewayClient.connect(gw.ws_url) as client,
    ):
        await client.subscribe("NSE:RELIANCE")
        with anyio.fail_after(10):
            await server.wait_subscribed("NSE_EQ:2885")
        conn = server.connections[0]
        await conn.ws.send("not binary")
        await server.send(b"\x63\x0c\x00\x01\x45\x0b\x00\x00\x00\x00\x00\x00")  # code 99
        await server.send(b"\x04\x32\x00\x01\x45\x0b")  # truncated quote
        await server.send_ticker("NSE_EQ:2885", 2890.0)
        (tick,) = await next_ticks(client, 1)
        assert tick["price"] == 2890.0
        st = dhan(gw.status())
        assert st["decode_errors"] == 3
        assert st["decode_errors_by_kind"] == {
            "bad_frame": 1,
            "unknown_code": 1,
            "short_packet": 1,
        }
        assert st["state"] == "connected"
        assert len(server.history) == 1
