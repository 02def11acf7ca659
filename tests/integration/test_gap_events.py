"""Provider switches reach the clients: a ``provider`` frame, then a ``gap`` frame (reason ``failover``)."""

from __future__ import annotations

import time

import pytest
from mdgate_example.testing import FakeExampleServer as ExampleFeed

from mdgate.testing import GatewayClient
from tests.integration.test_failover import duo_gateway, duo_settings

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000


async def frames_until_tick(c: GatewayClient) -> list[dict]:
    """Every frame up to and including the next ``ticks`` frame."""
    out = []
    while True:
        msg = await c.recv(10)
        out.append(msg)
        if msg["type"] == "ticks":
            return out


async def test_a_failover_and_a_failback_are_announced_before_the_new_providers_ticks(tmp_path):
    async with ExampleFeed() as beta:
        alpha = ExampleFeed()
        await alpha.__aenter__()
        port = alpha.port
        settings = duo_settings(tmp_path, f"ws://127.0.0.1:{port}", beta.url)
        async with duo_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c, \
                GatewayClient.connect(gw.ws_url) as other:
            await gw.wait_for(lambda s: s["providers"]["beta"]["state"] == "connected")
            await c.subscribe("DUO:FOO")
            await other.subscribe("DUO:BAR")  # another instrument: hears nothing of FOO's switch
            await alpha.wait_until(lambda f: {"FOO", "BAR"} <= f.subscribed)
            await alpha.send_tick("FOO", 1.0, ts=T0)
            assert (await c.ticks(1))[0]["provider"] == "A"

            await alpha.__aexit__(None, None, None)  # the primary dies
            await beta.wait_until(lambda f: "FOO" in f.subscribed, timeout=5)
            before = int(time.time() * 1000)
            await beta.send_tick("FOO", 2.0, ts=T0 + 5000)
            provider, gap, ticks = await frames_until_tick(c)
            assert provider == {"type": "provider", "instrument": "DUO:FOO", "provider": "beta"}
            assert gap["type"] == "gap" and gap["instrument"] == "DUO:FOO" and gap["reason"] == "failover"
            assert gap["from_ts"] == T0  # the latest tick before the switch
            assert gap["to_ts"] <= before and gap["from_provider"] == "alpha"
            assert ticks["ticks"][0]["provider"] == "B"

            async with ExampleFeed(port=port) as alpha2:  # the primary is back: fail-back
                await alpha2.wait_until(lambda f: "FOO" in f.subscribed, timeout=10)
                await alpha2.send_tick("FOO", 3.0, ts=T0 + 9000)
                provider, gap, ticks = await frames_until_tick(c)
                assert provider["provider"] == "alpha"
                assert (gap["reason"], gap["from_ts"]) == ("failover", T0 + 5000)
                assert gap["from_provider"] == "beta"
                assert ticks["ticks"][0]["provider"] == "A"
                gaps = gw.status()["routing"]["gaps"]
                await alpha2.send_tick("BAR", 4.0, ts=T0)
                heard = []
                while True:
                    msg = await other.recv(10)
                    heard.append(msg)
                    if msg["type"] == "ticks" and msg["ticks"][0]["price"] == 4.0:
                        break
        # the other client heard of BAR's switches only
        assert {m["instrument"] for m in heard if m["type"] in ("provider", "gap")} == {"DUO:BAR"}
        # two switches per instrument, FOO and BAR both switched: four gaps counted
        assert gaps == {"failover": 4}


async def test_a_dropped_connection_is_a_gap_once_data_flows_again(feed, make_settings):
    from mdgate.testing import running_gateway

    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c, \
            GatewayClient.connect(gw.ws_url) as other:
        await c.subscribe("EXAMPLE:ACME", "EXAMPLE:BOLT")
        await other.subscribe("EXAMPLE:CRUX")  # on the same connection, but not this client's
        await feed.wait_subscribed("ACME", "BOLT", "CRUX")
        await feed.send_tick("ACME", 1.0, ts=T0)
        await c.ticks(1)
        dropped = int(time.time() * 1000)
        feed.drop()
        await feed.wait_until(lambda f: f.accepted == 2 and {"ACME", "BOLT"} <= f.subscribed)
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")
        assert gw.status()["routing"]["gaps"] == {}  # connected, but nothing flows yet: no gap yet
        await feed.send_tick("BOLT", 2.0, ts=T0 + 1)
        frames = [await c.recv() for _ in range(3)]
        gaps = {f["instrument"]: f for f in frames if f["type"] == "gap"}
        assert set(gaps) == {"EXAMPLE:ACME", "EXAMPLE:BOLT"}
        assert gaps["EXAMPLE:ACME"]["from_ts"] == T0  # its latest tick
        assert gaps["EXAMPLE:BOLT"]["from_ts"] >= dropped  # no tick yet: from the drop
        assert all(g["reason"] == "reconnect" and g["to_ts"] >= g["from_ts"] for g in gaps.values())
        assert frames[-1]["type"] == "ticks"  # the gaps come before the first tick after them
        assert gw.status()["routing"]["gaps"] == {"reconnect": 3}  # ACME, BOLT and CRUX
        from tests.integration.test_metrics import samples, scrape

        page = samples((await scrape(gw)).text)
        assert page[("mdgate_gaps_total", (("reason", "reconnect"),))] == 3
        assert page[("mdgate_backfill_gaps_total", (("outcome", "unfilled"),))] == 0  # none ended yet


async def test_a_stall_is_a_gap_with_reason_stall(feed, make_settings):
    from mdgate.testing import running_gateway

    async with running_gateway(make_settings(feed.url, example="stall_timeout = 0.3")) as gw, \
            GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_subscribed("ACME")
        await feed.send_tick("ACME", 1.0, ts=T0)
        await c.ticks(1)
        feed.go_silent()  # connected, nothing arrives: the watchdog reconnects
        await feed.wait_until(lambda f: f.accepted >= 2, timeout=5)
        feed.subscribed.clear()
        await feed.wait_until(lambda f: "ACME" in f.subscribed, timeout=5)
        await feed.send_tick("ACME", 2.0, ts=T0 + 1)
        gap = await c.recv_type("gap")
        assert (gap["instrument"], gap["reason"], gap["from_ts"]) == ("EXAMPLE:ACME", "stall", T0)
