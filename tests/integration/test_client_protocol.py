"""Every path of the client protocol, against a real gateway and a real fake feed."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio


async def test_subscribe_flow_subscribed_then_snapshot_then_ticks(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        sub, snap = await c.subscribe("example:acme")
        assert sub == {"type": "subscribed", "instruments": ["EXAMPLE:ACME"]}
        assert snap == {"type": "snapshot", "ticks": []}
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        await feed.send_tick("ACME", 12.5, q=10, v=100)
        ticks = await c.ticks(1)
        t = ticks[0]
        assert t["instrument"] == "EXAMPLE:ACME" and t["price"] == 12.5
        assert t["ts"] == 1_700_000_000_000 and t["provider"] == "EX"
        assert t["size"] == 10 and t["volume"] == 100 and isinstance(t["recv_ts"], int)
        assert "bid" not in t  # absent, not null


async def test_snapshot_second_client_gets_latest_tick(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw:
        async with GatewayClient.connect(gw.ws_url) as c1:
            await c1.subscribe("EXAMPLE:ACME")
            await feed.wait_until(lambda f: "ACME" in f.subscribed)
            await feed.send_tick("ACME", 1.0, ts=1_700_000_000_000)
            await feed.send_tick("ACME", 2.0, ts=1_700_000_001_000)
            await c1.ticks(2)
            async with GatewayClient.connect(gw.ws_url) as c2:
                _, snap = await c2.subscribe("EXAMPLE:ACME", "EXAMPLE:NONE")
                assert [t["price"] for t in snap["ticks"]] == [2.0]


async def test_bad_json_gets_error_and_connection_stays_open(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.send("{not json")
        err = await c.recv()
        assert err["type"] == "error" and err["code"] == "bad_json"
        await c.send(b"\xff\xfe")
        assert (await c.recv())["code"] == "bad_json"
        sub, _ = await c.subscribe("EXAMPLE:ACME")
        assert sub["instruments"] == ["EXAMPLE:ACME"]


@pytest.mark.parametrize(
    "message",
    [
        {"op": "dance"},
        {"instruments": ["EXAMPLE:ACME"]},
        {"op": "subscribe"},
        {"op": "subscribe", "instruments": "EXAMPLE:ACME"},
        {"op": "subscribe", "instruments": []},
        ["op", "subscribe"],
        42,
    ],
)
async def test_bad_request_each_shape_gets_bad_request(feed, make_settings, message):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.send(message)
        err = await c.recv()
        assert err["type"] == "error" and err["code"] == "bad_request", err
        await c.send({"op": "unsubscribe", "instruments": ["EXAMPLE:ACME"]})
        assert (await c.recv())["type"] == "unsubscribed"


async def test_bad_instrument_and_no_route_mixed_with_good(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.send({"op": "subscribe", "instruments": ["EXAMPLE:ACME", "RELIANCE", "MARS:ROVER", 7]})
        sub = await c.recv()
        assert sub == {"type": "subscribed", "instruments": ["EXAMPLE:ACME"]}
        err = await c.recv()
        assert err["type"] == "error"
        codes = {e["instrument"]: e["code"] for e in err["errors"]}
        assert codes == {"RELIANCE": "bad_instrument", "MARS:ROVER": "no_route", "7": "bad_instrument"}
        assert "MARS" in next(e["message"] for e in err["errors"] if e["code"] == "no_route")
        snap = await c.recv()
        assert snap["type"] == "snapshot"


async def test_only_bad_instruments_single_error_no_subscribed(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.send({"op": "subscribe", "instruments": ["MARS:ROVER"]})
        err = await c.recv()
        assert err["code"] == "no_route" and err["errors"][0]["instrument"] == "MARS:ROVER"
        await c.send({"op": "unsubscribe", "instruments": ["bad name"]})
        err = await c.recv()
        assert err["code"] == "bad_instrument"


async def test_unsubscribe_stops_ticks_and_releases_provider(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME", "EXAMPLE:BOLT")
        await feed.wait_until(lambda f: {"ACME", "BOLT"} <= f.subscribed)
        await c.send({"op": "unsubscribe", "instruments": ["example:acme"]})
        assert await c.recv_type("unsubscribed") == {"type": "unsubscribed", "instruments": ["EXAMPLE:ACME"]}
        await feed.wait_until(lambda f: "ACME" not in f.subscribed)
        await feed.send_tick("BOLT", 3.0)
        ticks = await c.ticks(1)
        assert [t["instrument"] for t in ticks] == ["EXAMPLE:BOLT"]


async def test_unavailable_when_provider_down_then_ticks_flow_after_recovery(feed, make_settings):
    settings = make_settings("ws://127.0.0.1:9", extra="")  # nothing listens on port 9
    async with running_gateway(settings) as gw:
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "reconnecting")
        await gw.wait_for(lambda s: True, timeout=1)
        import anyio

        await anyio.sleep(0.6)  # past failover_after: the provider counts as down
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.send({"op": "subscribe", "instruments": ["EXAMPLE:ACME"]})
            assert (await c.recv())["type"] == "subscribed"
            err = await c.recv()
            assert err["code"] == "unavailable"
            assert gw.gateway.subs.refs("EXAMPLE:ACME") == 1


async def test_message_over_limit_closes_with_1009(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nmax_message_size = 1024\n")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.send({"op": "subscribe", "instruments": ["EXAMPLE:" + "A" * 10] * 200})
        with pytest.raises(ConnectionClosedError) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_tokens_required_for_ws_and_status_not_healthz(feed, make_settings):
    settings = make_settings(feed.url, extra='[server]\ntokens = ["s3cret-token"]\n')
    async with running_gateway(settings) as gw:
        with pytest.raises(InvalidStatus) as info:
            async with connect(gw.ws_url):
                pass
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with connect(gw.ws_url + "?token=wrong"):
                pass
        async with connect(gw.ws_url + "?token=s3cret-token"):
            pass
        async with connect(gw.ws_url, additional_headers={"Authorization": "Bearer s3cret-token"}):
            pass
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/status")).status_code == 401
            r = await http.get("/status", headers={"Authorization": "Bearer s3cret-token"})
            assert r.status_code == 200 and "s3cret" not in r.text
            assert (await http.get("/nowhere")).status_code == 404


async def test_status_document_shape(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw:
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            doc = (await http.get("/status")).json()
        assert doc["status"] == "ok"
        p = doc["providers"]["example"]
        for key in (
            "state",
            "connections",
            "connected_since",
            "last_message_age_ms",
            "subscriptions",
            "reconnects",
            "last_error",
            "frames",
            "ticks",
            "decode_errors",
        ):
            assert key in p
        assert doc["store"] == {
            "kind": "memory",
            "state": "ok",
            "buffered": 0,
            "dropped": 0,
            "instruments": 0,
        }
        assert doc["clients"] == 0


async def test_history_endpoint_ticks_and_bad_params(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        for i in range(3):
            await feed.send_tick("ACME", 10.0 + i, ts=1_700_000_000_000 + i)
        await c.ticks(3)
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            r = await http.get("/history", params={"instrument": "example:acme", "since": 1_700_000_000_001})
            assert r.status_code == 200
            assert [t["price"] for t in r.json()["ticks"]] == [11.0, 12.0]
            assert (await http.get("/history", params={"instrument": "nope"})).status_code == 400
            r = await http.get("/history", params={"instrument": "EXAMPLE:ACME", "interval": "2m"})
            assert r.status_code == 400
            r = await http.get("/history", params={"instrument": "EXAMPLE:ACME", "interval": "1m"})
            assert r.status_code == 200 and r.json()["bars"] == []
