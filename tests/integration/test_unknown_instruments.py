"""
Unknown instruments are refused, with the real plugins and no database: on
NSE, Dhan (the primary) keeps an instrument table, so a symbol it does not
list gets ``no_route`` naming it, although Yahoo's ``.NS`` rule could make up
a code. With Dhan disabled (no credentials) its table still decides what
exists: NSE:RELIANCE is served by Yahoo, NSE:NOSUCHSYMBOL is refused.
"""

from __future__ import annotations

import pytest

from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate_yahoo.testing import FakeYahooServer

pytestmark = pytest.mark.anyio


async def test_dhan_disabled_known_symbol_served_by_yahoo_unknown_refused(tmp_path):
    env = {"MDGATE_LOAD_PLUGINS": "yahoo,dhan"}  # no DHAN_* credentials: dhan is disabled
    async with FakeYahooServer() as yahoo:
        settings = settings_from_toml(
            f'[subscriptions]\nlinger = 0\n[providers.yahoo]\nurl = "{yahoo.url}"\n', env, tmp_path
        )
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
            assert gw.status()["providers"]["dhan"]["state"] == "disabled"
            await client.send({"op": "subscribe", "instruments": ["NSE:RELIANCE", "nse:nosuchsymbol"]})
            subscribed = await client.recv_type("subscribed")
            err = await client.recv_type("error")
            assert subscribed["instruments"] == ["NSE:RELIANCE"]
            assert err["code"] == "no_route"
            assert [e["instrument"] for e in err["errors"]] == ["NSE:NOSUCHSYMBOL"]
            assert err["errors"][0]["message"].startswith(
                "unknown instrument NSE:NOSUCHSYMBOL: dhan, the primary provider of NSE"
            )
            await yahoo.wait_subscribed("RELIANCE.NS")
            await yahoo.send_pricing("RELIANCE.NS", price=2457.5, time=1_700_000_000_000)
            t = (await client.ticks(1))[0]
            assert (t["instrument"], t["provider"], t["price"]) == ("NSE:RELIANCE", "YF", 2457.5)
            assert "NOSUCHSYMBOL.NS" not in yahoo.subscribed
            # Exchanges whose primary derives codes (Yahoo on NASDAQ) keep doing so.
            await client.subscribe("NASDAQ:ANYNEW")
            await yahoo.wait_subscribed("ANYNEW")
