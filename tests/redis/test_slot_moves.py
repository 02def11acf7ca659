"""
What the store does for a slot that moves between ingest instances (single Redis): the new
holder raises the fence before it writes anything (a paused old holder is refused at once),
and an instance that gets an instrument back forgets its stream IDs (its new ticks are not
mistaken for duplicates of what the other instance wrote meanwhile).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from tests.redis.test_fencing import running, tick

from mdgate.plugins.stores.redis_store._codec import fence_key, ticks_key

pytestmark = pytest.mark.integration


async def _seqs(url: str, inst: str) -> list[int]:
    r: Any = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return [int(f["seq"]) for _, f in await r.xrange(ticks_key(inst))]
    finally:
        await r.aclose()


async def test_raise_fence_refuses_the_old_holder_before_the_new_one_writes(redis_server: Any) -> None:
    inst = "NSE:MOVED"
    async with running(redis_server.url) as old, running(redis_server.url) as new:
        old.fence({inst: 3})
        old.write([tick(inst, 1)])
        assert await old.settled(10)
        await new.raise_fence({inst: 4})  # takes the slot over: nothing of its own written yet
        old.write([tick(inst, 2)])  # the paused holder wakes up with a buffered tick
        assert await old.settled(10)
        assert old.fenced == 1
        await new.raise_fence({inst: 2})  # never lowered
    r: Any = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await r.get(fence_key(inst)) == "4"
    finally:
        await r.aclose()
    assert await _seqs(redis_server.url, inst) == [1]


@pytest.mark.parametrize("forget", [True, False])
async def test_an_instrument_back_from_another_writer_is_written_after_forget(
    redis_server: Any, forget: bool,
) -> None:
    inst = "NSE:BACK"
    async with running(redis_server.url) as a, running(redis_server.url) as b:
        a.write([tick(inst, 1)])
        assert await a.settled(10)
        b.write([tick(inst, s) for s in range(2, 6)])  # the slot moved to b; its IDs go past a's
        assert await b.settled(10)
        if forget:
            a.forget([inst])  # the slot comes back to a
        # same exchange time as b's last tick (Dhan stamps whole seconds)
        a.write([msgspec.structs.replace(tick(inst, 6), ts=tick(inst, 5).ts)])
        assert await a.settled(10)
        stored = await _seqs(redis_server.url, inst)
    if forget:
        assert stored == [1, 2, 3, 4, 5, 6] and a.duplicates == 0
    else:  # the rule forget guards: a's stale counter makes its tick look like a duplicate
        assert stored == [1, 2, 3, 4, 5] and a.duplicates == 1
