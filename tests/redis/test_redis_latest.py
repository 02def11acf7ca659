"""
``mdgate:{I}:last`` only moves forward, also across gateway restarts (the
hash outlives the process): the Lua script writes it only when the tick's ts
is at least the stored one. The ticks themselves are always stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from mdgate._config import RedisSettings, RuntimeSettings
from mdgate._model import Tick
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.plugins.stores.redis_store._codec import decode_tick_fields, last_key, ticks_key

pytestmark = pytest.mark.integration

FAST = RuntimeSettings(backoff_initial=0.05, backoff_max=0.3, shutdown_timeout=5.0)
BASE = 1_700_000_040_000
INSTRUMENT = "NSE:RELIANCE"


def tick(ts: int, price: float) -> Tick:
    return Tick(INSTRUMENT, price, ts, ts + 1, "DHAN")


@asynccontextmanager
async def gateway_store(url: str) -> AsyncIterator[RedisStore]:
    """One gateway process's store: written to, flushed, closed."""
    store = RedisStore(url, RedisSettings(), FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        try:
            with anyio.fail_after(10):
                while store.status()["state"] != "ok":
                    await anyio.sleep(0.01)
            yield store
            with anyio.fail_after(10):
                while store.status()["buffered"] or store.status()["state"] != "ok":
                    await anyio.sleep(0.01)
        finally:
            tg.cancel_scope.cancel()
    await store.aclose()


async def last(url: str) -> Any:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return decode_tick_fields(await r.hgetall(last_key(INSTRUMENT))), await r.xlen(ticks_key(INSTRUMENT))
    finally:
        await r.aclose()


async def test_last_is_not_rolled_back_by_a_restarted_gateway(redis_server: Any) -> None:
    async with gateway_store(redis_server.url) as store:
        store.write([tick(BASE + 5_000, 105.0)])
    # the next process starts with an older tick (a provider's snapshot on subscribe)
    async with gateway_store(redis_server.url) as store:
        store.write([tick(BASE + 1_000, 101.0)])
    got, stored = await last(redis_server.url)
    assert (got.ts, got.price) == (BASE + 5_000, 105.0)
    assert stored == 2  # history is history: the older tick is stored as a tick
    async with gateway_store(redis_server.url) as store:
        assert (await store.latest([INSTRUMENT]))[INSTRUMENT].price == 105.0
        store.write([tick(BASE + 5_000, 106.0)])  # same ts: the later arrival wins
    got, _ = await last(redis_server.url)
    assert (got.ts, got.price) == (BASE + 5_000, 106.0)
    async with gateway_store(redis_server.url) as store:
        store.write([tick(BASE + 7_000, 107.0), tick(BASE + 6_000, 99.0)])
    got, stored = await last(redis_server.url)
    assert (got.ts, got.price, stored) == (BASE + 7_000, 107.0, 5)
