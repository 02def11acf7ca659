"""
Backfilled bars merged into ``mdgate:{I}:bars:1m`` (``RedisStore.merge_bars``, the MERGE_BARS script):
only minutes without a bar, stored (live) bars win, one entry per minute, ordered, idempotent.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from tests.redis.test_redis_store import BASE, FAST, MIN, flushed, running_store, tick, wait_for

from mdgate._errors import StoreUnavailable
from mdgate._model import Bar
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.plugins.stores.redis_store._backfill import merge_args
from mdgate.plugins.stores.redis_store._codec import bars_key

pytestmark = pytest.mark.integration

I = "NSE:MERGE"  # noqa: E741


def rest_bar(minute: int, price: float = 500.0, instrument: str = I) -> Bar:
    """A bar as a provider's REST API gives it (count 0)."""
    return Bar(instrument, BASE + minute * MIN, price, price + 1, price - 1, price, 10 * (minute + 1), 0)


async def stream(url: str, instrument: str = I) -> list[tuple[str, dict[str, str]]]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return cast("list[tuple[str, dict[str, str]]]", await r.xrange(bars_key(instrument)) or [])
    finally:
        await r.aclose()


async def last_id(url: str, instrument: str = I) -> str:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        info: dict[str, Any] = await r.xinfo_stream(bars_key(instrument))
        return str(info["last-generated-id"])
    finally:
        await r.aclose()


def minutes(rows: list[tuple[str, dict[str, str]]]) -> list[int]:
    return [(int(fields["start"]) - BASE) // MIN for _, fields in rows]


async def live_bars(store: RedisStore, *mins: int, price: float = 100.0) -> None:
    """A live tick in each of ``mins``; back once their bars are stored (the last closed by the clock)."""
    before = store.bars_written
    for m in mins:
        store.write([tick(I, BASE + m * MIN + 1000, price)])
    await wait_for(lambda: store.bars_written == before + len(mins))
    await flushed(store)


async def test_bars_go_where_minutes_have_none_and_live_bars_win(redis_server: Any) -> None:
    async with running_store(redis_server.url, batch_interval=0.001) as store:
        await live_bars(store, 1, 4)
        before = dict(await stream(redis_server.url))
        assert minutes(list(before.items())) == [1, 4]

        added = await store.merge_bars(I, [rest_bar(m) for m in (5, 0, 3, 1, 2, 4, 3)])  # any order

        rows = await stream(redis_server.url)
        assert added == 4  # 0, 2, 3, 5: minutes 1 and 4 had live bars
        assert minutes(rows) == [0, 1, 2, 3, 4, 5]  # ordered, one entry per minute
        assert [i for i, _ in rows] == [f"{BASE + m * MIN}-0" for m in range(6)]
        by_min = dict(zip(minutes(rows), (f for _, f in rows), strict=True))
        assert by_min[1] == before[f"{BASE + MIN}-0"] and by_min[4]["close"] == "100.0"  # live won
        assert by_min[2] == {"start": str(BASE + 2 * MIN), "open": "500.0", "high": "501.0", "low": "499.0",
                             "close": "500.0", "volume": "30", "count": "0"}


async def test_a_merge_is_idempotent(redis_server: Any) -> None:
    async with running_store(redis_server.url, batch_interval=0.001) as store:
        await live_bars(store, 3)
        bars = [rest_bar(m, 7.0) for m in range(6)]
        assert await store.merge_bars(I, bars) == 5
        once = await stream(redis_server.url)
        assert await store.merge_bars(I, bars) == 0
        assert await store.merge_bars(I, [rest_bar(m, 9.0) for m in range(6)]) == 0  # stored ones win
        assert await stream(redis_server.url) == once


async def test_a_live_bar_after_the_merge_is_a_duplicate_and_the_stream_grows(redis_server: Any) -> None:
    async with running_store(redis_server.url, batch_interval=0.001) as store:
        await live_bars(store, 0)
        assert await store.merge_bars(I, [rest_bar(m) for m in (1, 2, 3)]) == 3
        assert await last_id(redis_server.url) == f"{BASE + 3 * MIN}-0"
        # minute 2's live bar closes after the merge: its XADD finds the minute taken (skipped)
        for m in (2, 3, 4, 6):
            store.write([tick(I, BASE + m * MIN + 5000, 42.0)])
        await wait_for(lambda: store.bars_written == 3)  # 0, then 4 and 6 (2 and 3 skipped)
        rows = await stream(redis_server.url)
        assert minutes(rows) == [0, 1, 2, 3, 4, 6]  # 4 and 6 came after: appended in order
        assert [f["close"] for _, f in rows][2:] == ["500.0", "500.0", "42.0", "42.0"]


async def test_a_merge_below_the_last_id_keeps_the_last_id(redis_server: Any) -> None:
    """An entry deleted at the tail leaves the last ID above every entry: the merge must not lower it."""
    async with running_store(redis_server.url, batch_interval=0.001) as store:
        await live_bars(store, 0, 9)
        r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            await r.xdel(bars_key(I), f"{BASE + 9 * MIN}-0")
        finally:
            await r.aclose()
        assert await store.merge_bars(I, [rest_bar(m) for m in (2, 5)]) == 2
        assert await last_id(redis_server.url) == f"{BASE + 9 * MIN}-0"
        assert minutes(await stream(redis_server.url)) == [0, 2, 5]


async def test_a_merge_into_a_missing_stream_creates_it_in_order(redis_server: Any) -> None:
    async with running_store(redis_server.url) as store:
        assert await store.merge_bars(I, [rest_bar(2), rest_bar(1)]) == 2
        assert minutes(await stream(redis_server.url)) == [1, 2]
        assert await store.merge_bars(I, []) == 0


def test_merge_args_keep_one_bar_per_whole_minute_in_order() -> None:
    odd = Bar(I, BASE + 30_000, 1.0, 1.0, 1.0, 1.0, 1, 1)  # not a minute start: not a one-minute bar
    args = merge_args([rest_bar(2, 1.0), odd, rest_bar(1), rest_bar(2, 2.0)])
    assert args[0::7] == [str(BASE + MIN), str(BASE + 2 * MIN)]
    assert args[8] == "2.0"  # the last bar given for a minute


async def test_a_store_without_bars_or_without_redis_refuses_with_store_unavailable(
    redis_factory: Any,
) -> None:
    server = redis_factory()
    server.start()
    async with running_store(server.url, bars=False) as store:
        with pytest.raises(StoreUnavailable, match="keeps no bars"):
            await store.merge_bars(I, [rest_bar(1)])
    store = RedisStore(server.url, runtime=FAST)
    server.kill()
    try:
        with pytest.raises(StoreUnavailable, match="redis"):
            await store.merge_bars(I, [rest_bar(1)])
    finally:
        await store.aclose()
