"""
End to end: fake provider feed -> gateway -> Redis store (throw-away
redis-server) -> WebSocket clients, including Redis dying mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from mdgate._config import Settings
from mdgate.plugins.stores.redis_store._codec import FEED_KEY, decode_tick_fields, last_key, ticks_key
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Any]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()


def with_redis(make_settings: Callable[..., Settings], feed_url: str, url: str) -> Settings:
    extra = f'[redis]\nurl = "{url}"\nbatch_interval = 0.001\n'
    return make_settings(feed_url, extra=extra)


async def test_gateway_stores_ticks_in_redis_and_serves_snapshot_from_it(
    feed: Any, make_settings: Callable[..., Settings], redis_server: Any
) -> None:
    settings = with_redis(make_settings, feed.url, redis_server.url)
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        for i in range(5):
            await feed.send_tick("ACME", 10.0 + i, ts=T0 + i * 1000, q=1, v=100 + i)
        assert [t["price"] for t in await c.ticks(5)] == [10.0, 11.0, 12.0, 13.0, 14.0]
        st = await gw.wait_for(lambda s: s["store"]["written"] == 5)
        assert (st["store"]["kind"], st["store"]["state"]) == ("redis", "ok")
    async with client(redis_server.url) as r:
        rows = await r.xrange(ticks_key("EXAMPLE:ACME"))
        assert [decode_tick_fields(f).price for _, f in rows] == [10.0, 11.0, 12.0, 13.0, 14.0]
        assert await r.xlen(FEED_KEY) == 5
        assert (await r.hgetall(last_key("EXAMPLE:ACME")))["price"] == "14.0"
    # a new gateway (nothing in memory) answers the snapshot from Redis
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await gw.wait_for(lambda s: s["store"]["state"] == "ok")
        _, snap = await c.subscribe("EXAMPLE:ACME")
        assert [(t["price"], t["ts"]) for t in snap["ticks"]] == [(14.0, T0 + 4000)]


async def test_gateway_redis_killed_mid_stream_clients_keep_ticks_no_loss(
    feed: Any, make_settings: Callable[..., Settings], redis_factory: Any
) -> None:
    server = redis_factory(extra=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    settings = with_redis(make_settings, feed.url, server.url)
    n = 0
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_until(lambda f: "ACME" in f.subscribed)

        async def burst(k: int) -> None:
            nonlocal n
            for _ in range(k):
                await feed.send_tick("ACME", 1.0, ts=T0 + n, q=1, v=n)
                n += 1
            got = await c.ticks(k)
            assert [t["ts"] for t in got] == list(range(T0 + n - k, T0 + n))

        await burst(50)
        await gw.wait_for(lambda s: s["store"]["written"] == 50)
        server.kill()
        await burst(50)  # clients keep receiving while Redis is gone
        st = await gw.wait_for(lambda s: s["store"]["state"] == "down")
        assert st["status"] == "degraded"
        await burst(50)
        await anyio.to_thread.run_sync(server.start)
        st = await gw.wait_for(
            lambda s: s["store"]["state"] == "ok" and s["store"]["buffered"] == 0,
            timeout=15,
        )
        assert st["store"]["dropped"] == 0
    async with client(server.url) as r:
        rows = await r.xrange(ticks_key("EXAMPLE:ACME"))
    assert [int(f["ts"]) - T0 for _, f in rows] == list(range(n))
