"""
Fencing on a single Redis: a writer holding an older token for an instrument cannot write it
any more once a writer with a newer token did (``mdgate:{I}:fence``); other instruments, and
stores that never fence, write through the unfenced script as before. (The same on a Redis
Cluster: tests/redis/test_cluster_store.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from tests.redis.test_redis_store import running_store as running

from mdgate._model import Tick
from mdgate.plugins.stores.redis_store._codec import FEED_KEY, BatchPacker, fence_key, ticks_key
from mdgate.plugins.stores.redis_store._lua import WRITE_BATCH_FENCED_SHA, WRITE_BATCH_SHA

pytestmark = pytest.mark.integration

BASE = 1_700_000_040_000


def tick(inst: str, seq: int) -> Tick:
    return Tick(inst, 100.0 + seq, BASE + seq, BASE + seq + 1, "DHAN", seq=seq)




async def test_a_writer_with_an_older_token_is_refused_and_others_are_not(redis_server: Any) -> None:
    fenced, free = "NSE:FENCED", "NSE:FREE"
    async with running(redis_server.url) as a, running(redis_server.url) as b:
        a.fence({fenced: 5})
        a.write([tick(fenced, 1), tick(free, 1)])
        assert await a.settled(10)
        b.fence({fenced: 6})
        b.write([tick(fenced, 2)])
        assert await b.settled(10)
        a.write([tick(fenced, 3), tick(fenced, 4), tick(free, 2)])
        assert await a.settled(10)  # refused ticks settle: never retried
        assert (a.fenced, a.written, b.fenced, b.written) == (2, 3, 0, 1)
        assert a.status()["fenced"] == 2 and a.cluster is False
        a.fence({fenced: 7})  # a newer token (a new lease): writes again
        a.write([tick(fenced, 5)])
        assert await a.settled(10)
        assert a.fenced == 2
    r: Any = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        def seqs(rows: list[Any], inst: str) -> list[int]:
            return [int(f["seq"]) for _, f in rows if f["instrument"] == inst]

        assert seqs(await r.xrange(ticks_key(fenced)), fenced) == [1, 2, 5]
        assert seqs(await r.xrange(ticks_key(free)), free) == [1, 2]
        feed = await r.xrange(FEED_KEY)
        assert seqs(feed, fenced) == [1, 2, 5] and seqs(feed, free) == [1, 2]
        assert await r.get(fence_key(fenced)) == "7"
        assert await r.get(fence_key(free)) is None
    finally:
        await r.aclose()


async def test_a_store_that_never_fences_uses_the_unfenced_script_only(redis_server: Any) -> None:
    async with running(redis_server.url) as store:
        store.write([tick("NSE:X", 1)])
        assert await store.settled(10)
        store.fence({"NSE:X": 0})  # 0: unfenced
        store.write([tick("NSE:X", 2)])
        assert await store.settled(10)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await r.script_exists(WRITE_BATCH_SHA, WRITE_BATCH_FENCED_SHA) == [True, False]
        assert await r.exists(fence_key("NSE:X")) == 0
    finally:
        await r.aclose()


def test_the_packer_packs_the_unfenced_batch_byte_for_byte_unless_a_token_applies() -> None:
    ticks = [tick("NSE:A", 1), tick("NSE:B", 1)]
    plain, fenced_elsewhere, fenced = (BatchPacker(100, 100, 100) for _ in range(3))
    fenced_elsewhere.tokens["NSE:OTHER"] = 3
    fenced.tokens["NSE:B"] = 3
    assert plain.pack(ticks) == fenced_elsewhere.pack(ticks)
    assert WRITE_BATCH_SHA.encode() in plain.pack(ticks)
    data = fenced.pack(ticks)
    assert WRITE_BATCH_FENCED_SHA.encode() in data and fence_key("NSE:B").encode() in data
    assert data.endswith(b"$3\r\n0,3\r\n")  # one token per group, 0: unfenced
