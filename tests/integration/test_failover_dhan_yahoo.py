"""
Issue 5's scenario with the real plugins: killing the Dhan endpoint moves
NSE:RELIANCE to Yahoo (RELIANCE.NS) and back, and the client notices nothing
but the provider code.
"""

from __future__ import annotations

import time

import pytest

from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate_dhan.testing import FakeDhanServer
from mdgate_yahoo.testing import FakeYahooServer

pytestmark = pytest.mark.anyio

TOKEN, CLIENT = "tok-e2e", "1100001111"


async def test_dhan_down_reliance_moves_to_yahoo_and_back(tmp_path):
    env = {"MDGATE_LOAD_PLUGINS": "yahoo,dhan", "DHAN_CLIENT_ID": CLIENT, "DHAN_ACCESS_TOKEN": TOKEN}
    dhan = FakeDhanServer(token=TOKEN, client_id=CLIENT)
    await dhan.start()
    dhan_port = dhan.port
    async with FakeYahooServer() as yahoo:
        settings = settings_from_toml(
            f"""
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
failover_after = 0.5
failback_after = 1.0
[subscriptions]
linger = 0
[providers.dhan]
url = "{dhan.url}"
[providers.yahoo]
url = "{yahoo.url}"
""",
            env,
            tmp_path,
        )
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
            await client.subscribe("nse:reliance")
            await dhan.wait_subscribed("NSE_EQ:2885")
            now = int(time.time()) * 1000
            await dhan.send_quote("NSE_EQ:2885", 2456.75, ts_ms=now)
            t = (await client.ticks(1))[0]
            assert (t["instrument"], t["provider"], t["price"], t["ts"]) == (
                "NSE:RELIANCE",
                "DHAN",
                2456.75,
                now,
            )
            assert "RELIANCE.NS" not in yahoo.subscribed

            await dhan.stop()  # the Dhan endpoint is gone
            await yahoo.wait_subscribed("RELIANCE.NS", timeout=10)
            await yahoo.send_pricing("RELIANCE.NS", price=2457.5, time=now + 1000)
            t = (await client.ticks(1))[0]
            assert (t["instrument"], t["provider"], t["price"]) == ("NSE:RELIANCE", "YF", 2457.5)
            sw = gw.status()["routing"]["switches"][-1]
            assert (sw["instrument"], sw["from_provider"], sw["to_provider"]) == (
                "NSE:RELIANCE",
                "dhan",
                "yahoo",
            )

            dhan2 = FakeDhanServer(token=TOKEN, client_id=CLIENT, port=dhan_port)
            await dhan2.start()
            try:
                await dhan2.wait_subscribed("NSE_EQ:2885")
                await yahoo.wait_until(lambda _: "RELIANCE.NS" not in yahoo.subscribed, timeout=10)
                await dhan2.send_quote("NSE_EQ:2885", 2458.0, ts_ms=now + 2000)
                t = (await client.ticks(1))[0]
                assert (t["provider"], t["price"]) == ("DHAN", 2458.0)
            finally:
                await dhan2.stop()
