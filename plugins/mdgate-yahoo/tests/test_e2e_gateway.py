"""
End to end: a WebSocket client -> the running gateway -> FakeYahooServer.

The whole daemon runs in-process (``mdgate.testing.running_gateway``) with
only the yahoo plugin loaded, the in-memory store and the built-in routes
(NASDAQ -> yahoo); ``[providers.yahoo] url`` points at the fake streamer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mdgate.testing import (
    GatewayClient,
    GatewayHandle,
    running_gateway,
    settings_from_toml,
)
from mdgate_yahoo.testing import MALFORMED_FRAMES, FakeYahooServer

T = 1736509140000
SUB_AAPL = '{"subscribe": ["AAPL"]}'


@dataclass
class Rig:
    yahoo: FakeYahooServer
    gw: GatewayHandle
    client: GatewayClient

    def yahoo_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.gw.status()["providers"]["yahoo"]
        return status

    async def tick_round_trip(self, price: float, volume: int) -> dict[str, Any]:
        """Push one price for AAPL and return the tick the client receives."""
        await self.yahoo.send_pricing("AAPL", price=price, time=T, day_volume=volume, price_hint=2)
        while True:
            (tick,) = await self.client.ticks(1)
            if tick["volume"] == volume:
                return tick


@asynccontextmanager
async def rig(stall_timeout: float = 30, heartbeat_interval: float = 15, **fake: Any) -> AsyncIterator[Rig]:
    async with FakeYahooServer(**fake) as yahoo:
        settings = settings_from_toml(
            f"""
            [runtime]
            backoff_initial = 0.05
            backoff_max = 0.2

            [subscriptions]
            linger = 0

            [providers.yahoo]
            url = "{yahoo.url}"
            stall_timeout = {stall_timeout}
            heartbeat_interval = {heartbeat_interval}
            """,
            environ={"MDGATE_LOAD_PLUGINS": "yahoo"},
        )
        async with (
            running_gateway(settings) as gw,
            GatewayClient.connect(gw.ws_url) as client,
        ):
            subscribed, snapshot = await client.subscribe("nasdaq:aapl")
            assert subscribed["instruments"] == ["NASDAQ:AAPL"]
            assert snapshot["ticks"] == []
            await yahoo.wait_subscribed("AAPL")
            yield Rig(yahoo, gw, client)


async def test_e2e_subscribe_reaches_yahoo_and_ticks_flow() -> None:
    async with rig() as r:
        assert r.yahoo.received[0] == SUB_AAPL
        tick = await r.tick_round_trip(227.55, 1000)
        assert tick["instrument"] == "NASDAQ:AAPL"
        assert tick["price"] == 227.55
        assert tick["ts"] == T
        assert tick["provider"] == "YF"
        assert isinstance(tick["recv_ts"], int)
        status = r.yahoo_status()
        assert status["state"] == "connected"
        assert status["ticks"] >= 1


async def test_e2e_heartbeat_resubscribes_whole_set() -> None:
    async with rig(heartbeat_interval=0.2) as r:
        await r.yahoo.wait_until(lambda _: r.yahoo.received.count(SUB_AAPL) >= 3)
        assert r.yahoo.accepted == 1  # heartbeats on the same connection


async def test_e2e_client_unsubscribe_unsubscribes_yahoo() -> None:
    async with rig() as r:
        await r.client.send({"op": "unsubscribe", "instruments": ["NASDAQ:AAPL"]})
        await r.client.recv_type("unsubscribed")
        await r.yahoo.wait_until(lambda _: '{"unsubscribe": ["AAPL"]}' in r.yahoo.received)
        await r.yahoo.wait_until(lambda _: not r.yahoo.subscribed)


async def test_e2e_malformed_frames_counted_stream_goes_on() -> None:
    async with rig() as r:
        for kind in MALFORMED_FRAMES:
            assert await r.yahoo.send_malformed(kind) == 1
        tick = await r.tick_round_trip(231.0, 5)
        assert tick["price"] == 231.0
        status = await r.gw.wait_for(
            lambda st: st["providers"]["yahoo"]["decode_errors"] >= len(MALFORMED_FRAMES)
        )
        by_kind = status["providers"]["yahoo"]["decode_errors_by_kind"]
        assert by_kind == {kind: 1 for kind in MALFORMED_FRAMES}
        assert r.yahoo.accepted == 1  # no reconnect for a bad frame
        assert json.loads(r.yahoo.received[0]) == {"subscribe": ["AAPL"]}


async def test_e2e_over_hundred_symbols_second_connection() -> None:
    async with rig() as r:
        names = [f"NASDAQ:S{i:03d}" for i in range(100)]  # AAPL + 100 = 101 symbols
        await r.client.send({"op": "subscribe", "instruments": names})
        await r.client.recv_type("subscribed")
        codes = [n.split(":")[1] for n in names]
        await r.yahoo.wait_subscribed(*codes)
        await r.yahoo.wait_until(lambda _: len(r.yahoo.connections) == 2)
        assert sorted(len(c.subscribed) for c in r.yahoo.connections) == [1, 100]
        assert all(not c.refused for c in r.yahoo.connections)
        await r.yahoo.send_pricing("S099", price=12.5, time=T, day_volume=9)
        (tick,) = await r.client.ticks(1)
        assert (tick["instrument"], tick["price"]) == ("NASDAQ:S099", 12.5)


async def test_e2e_nse_instrument_derived_symbol_ticks() -> None:
    # With only the yahoo plugin installed, NSE falls to Yahoo (the backup route)
    # and the plugin's rule derives RELIANCE.NS.
    async with rig() as r:
        await r.client.subscribe("NSE:RELIANCE", "BSE:TCS")
        await r.yahoo.wait_subscribed("RELIANCE.NS", "TCS.BO")
        await r.yahoo.send_pricing("RELIANCE.NS", price=2456.75, time=T, day_volume=42)
        (tick,) = await r.client.ticks(1)
        assert (tick["instrument"], tick["price"], tick["volume"]) == (
            "NSE:RELIANCE",
            2456.75,
            42,
        )
