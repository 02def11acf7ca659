"""Gaps are kept in Redis, ``mdgate:{I}:gaps``, also across a Redis outage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from mdgate._config import Settings
from mdgate.plugins.stores.redis_store._codec import gaps_key
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


async def gaps_in(url: str, instrument: str) -> list[dict[str, str]]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return [fields for _, fields in await r.xrange(gaps_key(instrument))]
    finally:
        await r.aclose()


async def drop_and_resume(gw: Any, feed: Any, price: float) -> None:
    feed.drop()
    feed.subscribed.clear()
    await feed.wait_until(lambda f: "ACME" in f.subscribed)
    await feed.send_tick("ACME", price, ts=T0 + int(price))


async def test_a_reconnect_gap_is_kept_in_the_instruments_gap_stream(
    feed: Any, make_settings: Callable[..., Settings], redis_factory: Any,
) -> None:
    server = redis_factory()
    server.start()
    settings = make_settings(feed.url, extra=f'[redis]\nurl = "{server.url}"\nbatch_interval = 0.001\n')
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_subscribed("ACME")
        await feed.send_tick("ACME", 1.0, ts=T0 + 1)
        await c.ticks(1)
        await drop_and_resume(gw, feed, 2.0)
        sent = await c.recv_type("gap")
        await gw.wait_for(lambda s: s["store"]["gaps_written"] == 1)
        [kept] = await gaps_in(server.url, "EXAMPLE:ACME")
        assert kept == {"from_ts": str(sent["from_ts"]), "to_ts": str(sent["to_ts"]), "reason": "reconnect"}

        server.kill()  # Redis down: the next gap waits in memory and is written once it is back
        await drop_and_resume(gw, feed, 3.0)
        await c.recv_type("gap")
        await gw.wait_for(lambda s: s["store"]["state"] == "down")
        server.start()
        await gw.wait_for(lambda s: s["store"]["gaps_written"] == 2, timeout=15)
    assert [g["reason"] for g in await gaps_in(server.url, "EXAMPLE:ACME")][-1] == "reconnect"


async def test_ticks_pushed_out_of_a_full_buffer_are_a_store_gap(
    feed: Any, make_settings: Callable[..., Settings], redis_factory: Any,
) -> None:
    from mdgate.plugins.stores.redis_store._codec import decode_tick_fields, ticks_key

    server = redis_factory(extra=["--appendonly", "yes", "--appendfsync", "always"])  # survives the kill
    server.start()
    extra = f'[redis]\nurl = "{server.url}"\nbatch_interval = 0.001\nbuffer_max = 30\n'
    async with running_gateway(make_settings(feed.url, extra=extra)) as gw, \
            GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_subscribed("ACME")
        await feed.send_tick("ACME", 1.0, ts=T0)
        await c.ticks(1)
        await gw.wait_for(lambda s: s["store"]["written"] == 1)
        server.kill()
        for i in range(1, 61):  # 60 ticks while Redis is down: the oldest are pushed out
            await feed.send_tick("ACME", 1.0 + i, ts=T0 + i)
            await c.ticks(1)  # one at a time (clients lose nothing): each pushes one out of the buffer
        st = await gw.wait_for(lambda s: s["store"]["dropped"] > 0)
        server.start()
        await gw.wait_for(lambda s: s["store"]["gaps_written"] == 1 and s["store"]["buffered"] == 0,
                          timeout=15)
    [gap] = await gaps_in(server.url, "EXAMPLE:ACME")
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        stored = [decode_tick_fields(f).ts - T0 for _, f in await r.xrange(ticks_key("EXAMPLE:ACME"))]
    finally:
        await r.aclose()
    lost = sorted(set(range(61)) - set(stored))
    assert len(lost) == st["store"]["dropped"] and lost == list(range(lost[0], lost[-1] + 1))
    # the gap covers exactly what history lost
    assert gap == {"from_ts": str(T0 + lost[0]), "to_ts": str(T0 + lost[-1]), "reason": "store"}
