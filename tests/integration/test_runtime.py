"""Connection runtime and dynamic subscriptions against a real fake feed."""

from __future__ import annotations

import json
import time

import anyio
import anyio.lowlevel
import pytest
from websockets.asyncio.client import connect

from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio


async def _subscribed(gw, feed, c, *instruments):
    await c.subscribe(*instruments)
    symbols = {i.split(":")[1] for i in instruments}
    await feed.wait_until(lambda f: symbols <= f.subscribed)


async def test_reconnect_after_abrupt_drop_resubscribes_everything(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await _subscribed(gw, feed, c, "EXAMPLE:ACME", "EXAMPLE:BOLT", "EXAMPLE:CRUX")
        frames_before = len(feed.subscribe_requests)
        feed.subscribed.clear()
        feed.drop()
        await feed.wait_until(lambda f: f.accepted == 2 and {"ACME", "BOLT", "CRUX"} <= f.subscribed)
        # batches of max_per_message (2) on the new connection
        assert all(len(f) <= 2 for f in feed.subscribe_requests[frames_before:])
        await feed.send_tick("CRUX", 5.0)
        assert (await c.ticks(1))[0]["instrument"] == "EXAMPLE:CRUX"
        st = gw.status()["providers"]["example"]
        assert st["reconnects"] >= 1 and "dropped" in st["last_error"]


async def test_reconnect_after_clean_close(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await _subscribed(gw, feed, c, "EXAMPLE:ACME")
        feed.subscribed.clear()
        await feed.close_all(1000)
        await feed.wait_until(lambda f: f.accepted == 2 and "ACME" in f.subscribed)
        assert "closed the connection (code 1000)" in gw.status()["providers"]["example"]["last_error"]
        await feed.send_tick("ACME", 7.0)
        assert (await c.ticks(1))[0]["price"] == 7.0


async def test_silent_stall_detected_and_reconnected(feed, make_settings):
    settings = make_settings(feed.url, example="stall_timeout = 0.4")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await _subscribed(gw, feed, c, "EXAMPLE:ACME")
        feed.subscribed.clear()
        t0 = time.monotonic()
        await feed.wait_until(lambda f: f.accepted >= 2 and "ACME" in f.subscribed, timeout=5)
        assert 0.3 < time.monotonic() - t0 < 3.0
        assert "stalled" in gw.status()["providers"]["example"]["last_error"]


async def test_no_stall_without_subscriptions(feed, make_settings):
    settings = make_settings(feed.url, example="stall_timeout = 0.2")
    async with running_gateway(settings) as gw:
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")
        await anyio.sleep(0.8)
        assert feed.accepted == 1


async def test_heartbeat_sent_periodically(feed, make_settings):
    settings = make_settings(feed.url, example="heartbeat_interval = 0.1")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await _subscribed(gw, feed, c, "EXAMPLE:ACME")
        await feed.wait_until(lambda f: f.pings >= 3, timeout=3)


async def test_auth_failure_no_storm_then_reload_retries_at_once(feed, make_settings, tmp_path):
    feed.refuse_auth = True
    settings = make_settings(feed.url, example='token = "old"')
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        st = await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "auth_failed")
        assert st["providers"]["example"]["last_error"] == "token refused"
        assert st["providers"]["example"]["hint"]
        assert st["status"] == "degraded"
        await anyio.sleep(1.0)
        assert feed.accepted == 1  # auth_retry is 60 s: no storm
        # a new token through reload -> one attempt at once
        feed.refuse_auth = False
        cfg = tmp_path / "reload.toml"
        cfg.write_text(f'[providers.example]\nurl = "{feed.url}"\ntoken = "new"\n'
                       "[runtime]\nbackoff_initial = 0.05\nbackoff_max = 0.2\n")
        gw.gateway.config_path = str(cfg)
        assert gw.gateway.reload()
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")
        assert feed.accepted == 2


async def test_refcount_two_clients_one_provider_subscription(feed, make_settings):
    settings = make_settings(feed.url, extra="")
    async with running_gateway(settings) as gw:
        subs = gw.gateway.subs
        subs.linger = 0.3
        async with GatewayClient.connect(gw.ws_url) as c1:
            await _subscribed(gw, feed, c1, "EXAMPLE:ACME")
            async with GatewayClient.connect(gw.ws_url) as c2:
                await c2.subscribe("EXAMPLE:ACME")
                await c2.subscribe("EXAMPLE:ACME")  # idempotent per client
                assert subs.refs("EXAMPLE:ACME") == 2
            await anyio.sleep(0.1)
            assert subs.refs("EXAMPLE:ACME") == 1
            assert sum(f.count("ACME") for f in feed.subscribe_requests) == 1
        # last client gone: lingers, then released
        await anyio.sleep(0.1)
        assert "ACME" in feed.subscribed and feed.unsubscribe_requests == []
        await feed.wait_until(lambda f: "ACME" not in f.subscribed, timeout=3)
        assert feed.unsubscribe_requests == [["ACME"]]


async def test_resubscribe_within_linger_keeps_provider_subscription(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw:
        gw.gateway.subs.linger = 1.0
        async with GatewayClient.connect(gw.ws_url) as c1:
            await _subscribed(gw, feed, c1, "EXAMPLE:ACME")
        async with GatewayClient.connect(gw.ws_url) as c2:
            await c2.subscribe("EXAMPLE:ACME")
            await anyio.sleep(1.3)
            assert feed.unsubscribe_requests == []
            assert sum(f.count("ACME") for f in feed.subscribe_requests) == 1


async def test_always_list_subscribed_without_clients(feed, make_settings):
    settings = make_settings(feed.url, extra='[subscriptions]\nalways = ["EXAMPLE:ACME"]\n')
    async with running_gateway(settings):
        await feed.wait_until(lambda f: "ACME" in f.subscribed)


async def test_limit_over_capacity_is_unavailable_error_naming_limit(feed, make_settings):
    # example: 5 per connection x 2 connections = 10
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        names = [f"EXAMPLE:S{i}" for i in range(12)]
        await c.send({"op": "subscribe", "instruments": names})
        sub = await c.recv()
        assert len(sub["instruments"]) == 10
        err = await c.recv()
        assert err["code"] == "unavailable" and "limit reached" in err["errors"][0]["message"]
        await feed.wait_until(lambda f: f.accepted == 2 and len(f.subscribed) == 10)


async def test_decode_errors_counted_stream_goes_on(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await _subscribed(gw, feed, c, "EXAMPLE:ACME")
        await feed.send("not json")
        await feed.send(json.dumps({"s": "ZZZ", "p": 1}))
        await feed.send(json.dumps([{"s": "ACME", "p": 1.5}, {"p": 2}]))  # one good, then bad
        await feed.send_tick("ACME", 2.5)
        ticks = await c.ticks(2)
        assert [t["price"] for t in ticks] == [1.5, 2.5]
        errs = gw.status()["providers"]["example"]["decode_errors_by_kind"]
        assert errs == {"bad_json": 1, "unknown_symbol": 1, "bad_message": 1}


async def test_slow_client_conflated_fast_client_full_rate(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nclient_queue = 5000\ndrain_timeout = 30\n")
    n = 100_000
    async with running_gateway(settings) as gw:
        async with GatewayClient.connect(gw.ws_url) as fast, connect(
            gw.ws_url, max_queue=1, max_size=2**20) as slow:
            await slow.send(json.dumps({"op": "subscribe", "instruments": ["EXAMPLE:ACME", "EXAMPLE:BOLT"]}))
            await anyio.sleep(0.2)
            slow.transport.pause_reading()
            await _subscribed(gw, feed, fast, "EXAMPLE:ACME", "EXAMPLE:BOLT")
            # the slow client never reads; the fast one must get every tick in order
            got: list[dict] = []

            async def read_fast() -> None:
                got.extend(await fast.ticks(n, timeout=60))

            batch = 500
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_fast)
                for start in range(0, n, batch):
                    await feed.send(json.dumps(
                        [{"s": "ACME" if i % 2 else "BOLT", "p": 1.0, "t": i, "v": i}
                         for i in range(start, start + batch)]))
                    await anyio.lowlevel.checkpoint()
            assert [t["volume"] for t in got] == list(range(n))
            server = gw.gateway.server
            assert server.conflated > 0
            # after draining, the slow client's newest ticks are the latest per instrument
            slow.transport.resume_reading()
            last: dict[str, int] = {}
            with anyio.move_on_after(3):
                while True:
                    msg = json.loads(await slow.recv())
                    for t in msg.get("ticks", []):
                        last[t["instrument"]] = t["volume"]
                    if last == {"EXAMPLE:ACME": n - 1, "EXAMPLE:BOLT": n - 2}:
                        break
            assert last == {"EXAMPLE:ACME": n - 1, "EXAMPLE:BOLT": n - 2}


async def test_client_not_draining_closed_with_1008(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nclient_queue = 100\ndrain_timeout = 0.5\n")
    names = [f"S{i}" for i in range(10)]
    async with running_gateway(settings) as gw:
        async with connect(gw.ws_url, max_queue=1) as slow:
            await slow.send(json.dumps({"op": "subscribe", "instruments": [f"EXAMPLE:{n}" for n in names]}))
            await feed.wait_until(lambda f: set(names) <= f.subscribed)
            slow.transport.pause_reading()
            # keep ticks coming until the loopback socket buffers are full, sends block
            # for drain_timeout and the gateway closes the client
            with anyio.fail_after(30):
                i = 0
                while gw.status()["clients"] > 0:
                    await feed.send(json.dumps(
                        [{"s": n, "p": 1.0 + i, "t": i, "v": i, "q": 1} for n in names]))
                    i += 1
                    if i % 50 == 0:
                        await anyio.sleep(0.001)
            assert gw.gateway.server.conflated > 0
