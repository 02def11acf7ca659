"""Integration tests of the Redis tick store against a throw-away redis-server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from mdgate._config import RedisSettings, RuntimeSettings, Secret, Settings
from mdgate._errors import StoreUnavailable
from mdgate._model import Bar, Tick, now_ms
from mdgate._providers.registry import get_plugin_manager
from mdgate.plugins.stores.bars import aggregate_bars
from mdgate.plugins.stores.memory_store import MemoryStore
from mdgate.plugins.stores.protocol import Store
from mdgate.plugins.stores.redis_store import RedisStore, mdgate_store
from mdgate.plugins.stores.redis_store._codec import (
    FEED_KEY,
    BatchPacker,
    bars_key,
    decode_tick_fields,
    last_key,
    ticks_key,
)
from mdgate.plugins.stores.redis_store._lua import WRITE_BATCH


class RedisServer(Protocol):
    """The conftest's throw-away server (``redis_server``, ``redis_factory``)."""

    port: int
    url: str

    def start(self, timeout: float = ...) -> None: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


RedisFactory = Callable[..., RedisServer]

pytestmark = pytest.mark.integration

FAST = RuntimeSettings(backoff_initial=0.05, backoff_max=0.3, shutdown_timeout=5.0)
BASE = 1_700_000_040_000  # a minute boundary (epoch ms), long past: bars close at once
MIN = 60_000


def tick(instrument: str = "NSE:RELIANCE", ts: int = BASE, price: float = 100.0, **kw: Any) -> Tick:
    provider = kw.pop("provider", "DHAN")
    return Tick(instrument, price, ts, ts + 1, provider, **kw)


@asynccontextmanager
async def running_store(url: str, **settings: Any) -> AsyncIterator[RedisStore]:
    store = RedisStore(url, RedisSettings(**settings), FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        try:
            yield store
        finally:
            tg.cancel_scope.cancel()
    await store.aclose()


async def wait_for(cond: Callable[[], bool], limit: float = 15.0) -> None:
    with anyio.fail_after(limit):
        while not cond():
            await anyio.sleep(0.01)


async def flushed(store: RedisStore, limit: float = 15.0) -> None:
    def done() -> bool:
        s = store.status()
        return bool(s["state"] == "ok" and s["buffered"] == 0)

    await wait_for(done, limit)


@asynccontextmanager
async def client(server: RedisServer) -> AsyncIterator[Any]:
    # redis-py's annotations do not know decode_responses=True: use Any
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_fields(t: Tick) -> dict[str, str]:
    return {k: str(v) for k, v in t.to_dict().items()}


# ---------------------------------------------------------------- layout


async def test_store_write_keys_are_hash_tagged_and_fields_round_trip(
    redis_server: RedisServer,
) -> None:
    ticks = [
        tick(
            "NSE:RELIANCE",
            BASE + 1,
            2885.35,
            size=10,
            volume=1000,
            bid=2885.3,
            ask=2885.4,
            bid_size=5,
            ask_size=7,
            open=2870.0,
            high=2890.5,
            low=2860.05,
            prev_close=2865.1,
            oi=3,
        ),
        tick("NASDAQ:AAPL", BASE + 2, 190.12, provider="YF"),
        tick("NSE:M&M", BASE + 3, 1.5, size=1),
    ]
    async with running_store(redis_server.url) as store, client(redis_server) as r:
        assert isinstance(store, Store)
        store.write(ticks)
        await flushed(store)
        for t in ticks:
            i = t.instrument
            assert await r.type(f"mdgate:{{{i}}}:ticks") == "stream"
            assert await r.type(f"mdgate:{{{i}}}:last") == "hash"
            ((entry_id, fields),) = await r.xrange(ticks_key(i))
            assert entry_id == f"{t.ts}-0"
            assert fields == as_fields(t)
            assert decode_tick_fields(fields) == t
            assert await r.hgetall(last_key(i)) == as_fields(t)
        feed = await r.xrange(FEED_KEY)
        assert [decode_tick_fields(f) for _, f in feed] == ticks
        assert await store.latest([t.instrument for t in ticks] + ["NSE:NONE"]) == {
            t.instrument: t for t in ticks
        }
        assert store.status()["written"] == 3


async def test_store_same_ts_ticks_get_increasing_sequence_ids(
    redis_server: RedisServer,
) -> None:
    ticks = [tick(ts=BASE + 5, size=i) for i in range(3)] + [tick(ts=BASE + 4, size=3)]
    async with running_store(redis_server.url) as store, client(redis_server) as r:
        store.write(ticks)
        await flushed(store)
        ids = [i for i, _ in await r.xrange(ticks_key("NSE:RELIANCE"))]
    # the older-ts tick is filed after its predecessor (IDs never go backwards)
    assert ids == [f"{BASE + 5}-0", f"{BASE + 5}-1", f"{BASE + 5}-2", f"{BASE + 5}-3"]


async def test_store_small_maxlen_trims_streams_approximately(
    redis_server: RedisServer,
) -> None:
    n = 3000
    async with (
        running_store(redis_server.url, stream_maxlen=200, feed_maxlen=300, batch_max=100) as store,
        client(redis_server) as r,
    ):
        for k in range(0, n, 100):
            store.write([tick(ts=BASE + i, size=i) for i in range(k, k + 100)])
            await anyio.lowlevel.checkpoint()
        await flushed(store)
        xlen = await r.xlen(ticks_key("NSE:RELIANCE"))
        flen = await r.xlen(FEED_KEY)
        last = await r.xrevrange(ticks_key("NSE:RELIANCE"), count=1)
    assert store.status()["written"] == n
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): >= maxlen kept
    assert 200 <= xlen < 200 + 200
    assert 300 <= flen < 300 + 200
    assert last[0][1]["size"] == str(n - 1)


# ---------------------------------------------------------------- :last


async def test_store_last_older_ts_tick_does_not_roll_back(
    redis_server: RedisServer,
) -> None:
    new = tick(ts=BASE + 2_000, price=101.0)
    stale = tick(ts=BASE + 1_000, price=99.0)  # e.g. Yahoo's snapshot on subscribe
    async with running_store(redis_server.url) as store, client(redis_server) as r:
        store.write([new])
        await flushed(store)
        store.write([stale])  # a later batch
        await flushed(store)
        assert decode_tick_fields(await r.hgetall(last_key("NSE:RELIANCE"))) == new
        store.write([tick(ts=BASE + 3_000, price=98.0), tick(ts=BASE + 2_500, price=97.0)])
        await flushed(store)  # within one batch: the newest ts wins, not the last one
        got = decode_tick_fields(await r.hgetall(last_key("NSE:RELIANCE")))
        assert (got.ts, got.price) == (BASE + 3_000, 98.0)
        # the stale ticks are still stored as ticks
        assert await r.xlen(ticks_key("NSE:RELIANCE")) == 4
        assert (await store.latest(["NSE:RELIANCE"]))["NSE:RELIANCE"].price == 98.0


async def test_store_last_hash_replaced_whole_by_newer_tick(
    redis_server: RedisServer,
) -> None:
    async with running_store(redis_server.url) as store, client(redis_server) as r:
        store.write([tick(ts=BASE, bid=1.0, ask=2.0)])
        await flushed(store)
        store.write([tick(ts=BASE + 1)])
        await flushed(store)
        assert "bid" not in await r.hgetall(last_key("NSE:RELIANCE"))


async def test_store_latest_reads_ticks_written_by_another_gateway(
    redis_server: RedisServer,
) -> None:
    t = tick("NYSE:IBM", BASE, 150.25, provider="YF")
    async with running_store(redis_server.url) as one:
        one.write([t])
        await flushed(one)
    async with running_store(redis_server.url) as two:
        await wait_for(lambda: two.status()["state"] == "ok")
        assert await two.latest(["NYSE:IBM"]) == {"NYSE:IBM": t}


# ---------------------------------------------------------------- bars


async def test_store_bars_close_on_later_minute_and_ignore_late_ticks(
    redis_server: RedisServer,
) -> None:
    ticks = [
        tick(ts=BASE + 1_000, price=10.0, volume=1_000),  # baseline
        tick(ts=BASE + 20_000, price=12.0, volume=1_050),
        tick(ts=BASE + 59_999, price=9.0, volume=1_100),
        tick(ts=BASE + MIN, price=11.0, volume=1_130),  # closes minute 0
        tick(ts=BASE + 30_000, price=50.0),  # late: minute 0 is final
        tick(ts=BASE + MIN + 5_000, price=11.5, volume=1_200),
    ]
    async with running_store(redis_server.url) as store, client(redis_server) as r:
        store.write(ticks[:4])
        await flushed(store)
        rows = await r.xrange(bars_key("NSE:RELIANCE"))
        assert rows == [
            (
                f"{BASE}-0",
                {
                    "start": str(BASE),
                    "open": "10.0",
                    "high": "12.0",
                    "low": "9.0",
                    "close": "9.0",
                    "volume": "100",
                    "count": "3",
                },
            )
        ]
        store.write(ticks[4:])
        # minute 1 is long over by the wall clock: closed by the bar clock (~1 s)
        await wait_for(lambda: store.status()["bars_written"] == 2)
        bars = await store.bars("NSE:RELIANCE")
    assert bars == [
        Bar("NSE:RELIANCE", BASE, 10.0, 12.0, 9.0, 9.0, 100, 3),
        # the late tick (price 50) is in no bar
        Bar("NSE:RELIANCE", BASE + MIN, 11.0, 11.5, 11.0, 11.5, 100, 2),
    ]
    assert store.status()["late_ticks"] == 1


async def test_store_bars_without_volume_sum_trade_sizes(
    redis_server: RedisServer,
) -> None:
    async with running_store(redis_server.url) as store:
        store.write(
            [tick(ts=BASE + i * 1_000, price=1.0 + i, size=2) for i in range(5)]
            + [tick(ts=BASE + 2 * MIN, size=1)]
        )
        await wait_for(lambda: store.status()["bars_written"] == 2)
        bars = await store.bars("NSE:RELIANCE", since_ms=BASE, until_ms=BASE)
    assert bars == [Bar("NSE:RELIANCE", BASE, 1.0, 5.0, 1.0, 5.0, 10, 5)]


def minute_ticks(start: int, minutes: int) -> list[Tick]:
    out = []
    vol = 0
    for m in range(minutes):
        for k in range(3):
            vol += 10 * (m + 1)
            out.append(
                tick(
                    ts=start + m * MIN + k * 10_000,
                    price=100.0 + m + (k - 1) * 0.5,
                    volume=vol,
                )
            )
    return out


async def test_store_bars_5m_and_15m_aggregate_one_minute_bars(
    redis_server: RedisServer,
) -> None:
    start = BASE - BASE % (15 * MIN)
    async with running_store(redis_server.url) as store:
        store.write(minute_ticks(start, 31))
        await wait_for(lambda: store.status()["bars_written"] == 31)
        one = await store.bars("NSE:RELIANCE", "1m", limit=100)
        five = await store.bars("NSE:RELIANCE", "5m", limit=100)
        fifteen = await store.bars("NSE:RELIANCE", "15m", limit=100)
        last_two = await store.bars("NSE:RELIANCE", "5m", limit=2)
        window = await store.bars("NSE:RELIANCE", "5m", since_ms=start + 3 * MIN, until_ms=start + 12 * MIN)
        with pytest.raises(ValueError, match="unknown interval"):
            await store.bars("NSE:RELIANCE", "2m")
    assert len(one) == 31
    assert five == aggregate_bars(one, 5 * MIN)
    assert fifteen == aggregate_bars(one, 15 * MIN)
    assert [b.start for b in five] == [start + i * 5 * MIN for i in range(7)]
    assert five[0] == Bar(
        "NSE:RELIANCE",
        start,
        99.5,
        104.5,
        99.5,
        104.5,
        sum(one[i].volume for i in range(5)),
        15,
    )
    assert last_two == five[-2:]
    # whole intervals starting within [since, until] only
    assert [b.start for b in window] == [start + 5 * MIN, start + 10 * MIN]


# ---------------------------------------------------------------- history


async def test_store_history_since_until_limit(redis_server: RedisServer) -> None:
    ticks = [tick(ts=BASE + i * 100, size=i) for i in range(50)]
    async with running_store(redis_server.url) as store:
        store.write(ticks)
        await flushed(store)
        everything = await store.history("NSE:RELIANCE")
        window = await store.history("NSE:RELIANCE", since_ms=BASE + 1_000, until_ms=BASE + 1_900)
        newest = await store.history("NSE:RELIANCE", since_ms=BASE + 1_000, limit=5)
        none = await store.history("NSE:NOTHING")
    assert everything == ticks
    assert window == ticks[10:20]
    assert newest == ticks[45:]
    assert none == []


async def test_store_history_redis_down_raises_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", RedisSettings(), FAST)
    try:
        with pytest.raises(StoreUnavailable):
            await store.history("NSE:RELIANCE")
        with pytest.raises(StoreUnavailable):
            await store.bars("NSE:RELIANCE", "5m")
        store.write([tick()])  # latest still answers, from this process's ticks
        assert await store.latest(["NSE:RELIANCE"]) == {"NSE:RELIANCE": tick()}
    finally:
        await store.aclose()


# ---------------------------------------------------------------- feed


async def test_store_feed_followers_get_every_tick_in_order(
    redis_server: RedisServer,
) -> None:
    instruments = ["NSE:RELIANCE", "NASDAQ:AAPL", "BSE:TCS"]
    ticks = [tick(instruments[i % 3], BASE + i, size=i) for i in range(600)]
    got: list[Tick] = []

    async def follow() -> None:  # what another service does: XREAD BLOCK from "$"
        async with client(redis_server) as r:
            last = "$"
            while len(got) < len(ticks):
                resp = await r.xread({FEED_KEY: last}, block=1_000, count=100)
                for _key, entries in resp:
                    for entry_id, fields in entries:
                        got.append(decode_tick_fields(fields))
                        last = entry_id

    async with running_store(redis_server.url, batch_max=50) as store:
        await wait_for(lambda: store.status()["state"] == "ok")
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.2)  # the follower is blocked in XREAD
            for k in range(0, 600, 60):
                store.write(ticks[k : k + 60])
                await anyio.sleep(0.005)
            with anyio.fail_after(15):
                await wait_for(lambda: len(got) == len(ticks))
    assert got == ticks


# ---------------------------------------------------------------- buffering


async def test_store_buffer_overflow_drops_oldest_counted_and_logged(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()  # not started: Redis is down
    with capture_logs() as logs:
        async with running_store(server.url, buffer_max=100) as store:
            store.write([tick(ts=BASE + i, size=i) for i in range(250)])
            await wait_for(
                lambda: store.status()["state"] == "down" and store.status()["last_error"] is not None
            )
            s = store.status()
            assert (s["buffered"], s["dropped"]) == (100, 150)
            await anyio.to_thread.run_sync(server.start)
            await flushed(store)
            assert store.status()["dropped"] == 150
            kept = await store.history("NSE:RELIANCE", limit=1000)
    assert [t.size for t in kept] == list(range(150, 250))
    events = [e for e in logs if e["event"] == "redis_buffer_overflow"]
    assert events
    assert events[0]["dropped_total"] == 150


async def test_store_redis_down_at_start_buffers_then_flushes_in_order(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    ticks = [tick(["NSE:RELIANCE", "NASDAQ:AAPL"][i % 2], BASE + i, size=i) for i in range(1000)]
    async with running_store(server.url, batch_max=64) as store:
        store.write(ticks[:500])
        await wait_for(lambda: store.status()["failures"] >= 2)
        assert store.status()["state"] == "down"
        store.write(ticks[500:])
        assert store.status()["buffered"] == 1000
        await anyio.to_thread.run_sync(server.start)
        await flushed(store)
        s = store.status()
        got = [
            *await store.history("NSE:RELIANCE"),
            *await store.history("NASDAQ:AAPL"),
        ]
    assert (s["written"], s["dropped"], s["duplicates"]) == (1000, 0, 0)
    assert sorted(got, key=lambda t: t.size or 0) == ticks


async def test_store_aclose_flushes_buffered_ticks(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, RedisSettings(), FAST)
    store.write([tick(ts=BASE + i) for i in range(10)])  # run() never started
    await store.aclose()
    async with client(redis_server) as r:
        assert await r.xlen(ticks_key("NSE:RELIANCE")) == 10


# ---------------------------------------------------------------- idempotency


async def test_store_retried_batch_is_skipped_not_duplicated(
    redis_server: RedisServer,
) -> None:
    packer = BatchPacker(1000, 1000, 1000)
    data = packer.pack(
        [tick(ts=BASE + i, size=i) for i in range(5)],
        [Bar("NSE:RELIANCE", BASE, 1.0, 1.0, 1.0, 1.0, 0, 1)],
    )
    async with client(redis_server) as r:
        await r.script_load(WRITE_BATCH)
        conn = await r.connection_pool.get_connection()
        try:
            replies = []
            for _ in range(2):  # the second send is a retry after a lost reply
                await conn.send_packed_command(data)
                replies.append(await conn.read_response())
        finally:
            await r.connection_pool.release(conn)
        assert replies == [[5, 0, 1, 0], [0, 5, 0, 1]]
        assert await r.xlen(ticks_key("NSE:RELIANCE")) == 5
        assert await r.xlen(FEED_KEY) == 5
        assert await r.xlen(bars_key("NSE:RELIANCE")) == 1


async def test_store_restarted_gateway_continues_ids_above_stored_ones(
    redis_server: RedisServer,
) -> None:
    async with running_store(redis_server.url) as one:
        one.write([tick(ts=BASE, size=0), tick(ts=BASE, size=1)])
        await flushed(one)
    async with running_store(redis_server.url) as two, client(redis_server) as r:
        two.write([tick(ts=BASE, size=2), tick(ts=BASE - 5, size=3)])
        await flushed(two)
        rows = await r.xrange(ticks_key("NSE:RELIANCE"))
        assert two.status()["duplicates"] == 0
    assert [(i, f["size"]) for i, f in rows] == [
        (f"{BASE}-0", "0"),
        (f"{BASE}-1", "1"),
        (f"{BASE}-2", "2"),
        (f"{BASE}-3", "3"),
    ]


async def test_store_kill_and_restart_redis_mid_stream_exactly_once_in_order(
    redis_factory: RedisFactory,
) -> None:
    # appendfsync always: what Redis acknowledged survives the SIGKILL, so every
    # tick must be in Redis exactly once, acknowledged before the kill or not.
    server = redis_factory(extra=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    instruments = ["NSE:RELIANCE", "NASDAQ:AAPL", "BSE:TCS"]
    counts = dict.fromkeys(instruments, 0)
    stop = anyio.Event()

    async def produce(store: RedisStore) -> None:
        ts = BASE
        while not stop.is_set():
            batch = []
            for _ in range(30):
                inst = instruments[ts % 3]
                batch.append(tick(inst, ts, size=counts[inst]))
                counts[inst] += 1
                ts += 1
            store.write(batch)
            await anyio.sleep(0.002)

    async with running_store(server.url, batch_max=100) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, store)
            for _ in range(2):
                await wait_for(lambda: store.status()["written"] > 3_000)
                await anyio.sleep(0.3)
                server.kill()
                await wait_for(lambda: store.status()["state"] == "down")
                await anyio.sleep(0.3)  # ticks keep coming and are buffered
                await anyio.to_thread.run_sync(server.start)
                await wait_for(lambda: store.status()["state"] == "ok")
                await anyio.sleep(0.3)
            stop.set()
        await flushed(store)
        s = store.status()
        async with client(server) as r:
            for inst in instruments:
                rows = await r.xrange(ticks_key(inst))
                assert [int(f["size"]) for _, f in rows] == list(range(counts[inst]))
            feed = await r.xrange(FEED_KEY)
    total = sum(counts.values())
    assert s["failures"] >= 2
    assert s["dropped"] == 0
    assert len(feed) == total
    for inst in instruments:
        assert [int(f["size"]) for _, f in feed if f["instrument"] == inst] == list(range(counts[inst]))


# ---------------------------------------------------------------- status & plugin


async def test_store_status_masks_password(redis_factory: RedisFactory) -> None:
    server = redis_factory(extra=["--requirepass", "s3cret-pw"])
    server.start()
    good = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
    bad = f"redis://:wrong-pw@127.0.0.1:{server.port}/0"
    async with running_store(good) as store:
        store.write([tick()])
        await flushed(store)
        assert "s3cret-pw" not in str(store.status())
        assert store.status()["url"] == f"redis://:***@127.0.0.1:{server.port}/0"
    async with running_store(bad) as store:
        await wait_for(lambda: store.status()["last_error"] is not None)
        s = store.status()
        assert s["state"] == "down"
        assert "wrong-pw" not in str(s)


async def test_store_wrong_type_key_reports_down_and_recovers(
    redis_server: RedisServer,
) -> None:
    async with client(redis_server) as r, running_store(redis_server.url) as store:
        await r.set(ticks_key("NSE:RELIANCE"), "not a stream")
        store.write([tick()])
        await wait_for(lambda: "WRONGTYPE" in (store.status()["last_error"] or ""))
        assert store.status()["state"] == "down"
        assert store.status()["buffered"] == 1
        await r.delete(ticks_key("NSE:RELIANCE"))
        await flushed(store)
        assert await r.xlen(ticks_key("NSE:RELIANCE")) == 1


def test_store_hook_returns_redis_only_with_url() -> None:
    assert mdgate_store(Settings()) is None
    store = mdgate_store(Settings(redis=RedisSettings(url=Secret("redis://127.0.0.1:1/0"))))
    assert isinstance(store, RedisStore)
    pm, _ = get_plugin_manager({}, entry_points=False)
    chosen = pm.hook.mdgate_store(settings=Settings(redis=RedisSettings(url=Secret("redis://127.0.0.1:1/0"))))
    assert isinstance(chosen, RedisStore)
    assert isinstance(pm.hook.mdgate_store(settings=Settings()), MemoryStore)


async def test_store_tick_with_unencodable_provider_rejected_and_counted(
    redis_server: RedisServer,
) -> None:
    async with running_store(redis_server.url) as store:
        store.write([tick(provider="X,Y"), tick(ts=BASE + 1)])
        await flushed(store)
        s = store.status()
        assert (s["written"], s["rejected"]) == (1, 1)


async def test_store_script_flush_reloads_scripts_and_loses_nothing(
    redis_server: RedisServer,
) -> None:
    async with client(redis_server) as r, running_store(redis_server.url) as store:
        store.write([tick(ts=BASE + i) for i in range(10)])
        await flushed(store)
        await r.script_flush()
        store.write([tick(ts=BASE + 10 + i) for i in range(10)])
        await flushed(store)
        assert await r.xlen(ticks_key("NSE:RELIANCE")) == 20
        s = store.status()
    assert {"kind", "state", "buffered", "dropped", "written", "last_error"} <= set(s)
    assert (s["kind"], s["state"], s["written"], s["duplicates"]) == ("redis", "ok", 20, 0)


async def test_store_reply_lost_after_write_retry_adds_nothing_twice(
    redis_server: RedisServer,
) -> None:
    # A loopback proxy in front of Redis drops the connection instead of
    # forwarding the first batch reply: Redis executed the batch, the store
    # never heard back, and re-sends it on a new connection.
    from anyio.abc import SocketStream

    cut = {"armed": True, "cuts": 0}

    async def pipe(src: SocketStream, dst: SocketStream, replies: bool) -> None:
        try:
            async for chunk in src:
                if replies and cut["armed"] and b"*4\r\n:" in chunk:
                    cut["armed"] = False
                    cut["cuts"] += 1
                    await src.aclose()
                    await dst.aclose()
                    return
                await dst.send(chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            await dst.aclose()

    async def handle(client_side: SocketStream) -> None:
        async with client_side, await anyio.connect_tcp("127.0.0.1", redis_server.port) as up:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe, client_side, up, False)
                tg.start_soon(pipe, up, client_side, True)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    ticks = [tick(ts=BASE + i, size=i) for i in range(40)]
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with running_store(f"redis://127.0.0.1:{port}/0") as store:
            await wait_for(lambda: store.status()["state"] == "ok")
            store.write(ticks)
            await flushed(store)
            s = store.status()
        tg.cancel_scope.cancel()
    async with client(redis_server) as r:
        rows = await r.xrange(ticks_key("NSE:RELIANCE"))
        feed = await r.xlen(FEED_KEY)
    assert cut["cuts"] == 1
    assert s["failures"] >= 1
    assert s["duplicates"] == 40  # the whole batch was skipped on the retry
    assert [int(f["size"]) for _, f in rows] == list(range(40))
    assert feed == 40


async def test_store_history_and_bars_negative_or_empty_ranges_return_empty(
    redis_server: RedisServer,
) -> None:
    async with running_store(redis_server.url) as store:
        store.write([tick(ts=BASE), tick(ts=BASE + 2 * MIN)])
        await flushed(store)
        assert await store.history("NSE:RELIANCE", until_ms=-1) == []
        assert len(await store.history("NSE:RELIANCE", since_ms=-100)) == 2
        assert await store.history("NSE:RELIANCE", since_ms=BASE + 1, until_ms=BASE) == []
        assert await store.history("NSE:RELIANCE", limit=0) == []
        assert await store.bars("NSE:RELIANCE", "5m", until_ms=-1) == []


async def test_store_hung_redis_times_out_then_every_tick_once_in_order(
    redis_factory: RedisFactory,
) -> None:
    # SIGSTOP: the batches sent stay unanswered; the store gives up on the
    # connection after io_timeout and buffers. On SIGCONT Redis still runs
    # the batches it had received on the dead connection, and the store
    # re-sends them: the retry must skip what is there and add the rest.
    server = redis_factory()
    server.start()
    store = RedisStore(server.url, RedisSettings(batch_max=50), FAST, io_timeout=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.write([tick(ts=BASE + i, size=i) for i in range(100)])
        await flushed(store)
        server.pause()
        try:
            store.write([tick(ts=BASE + i, size=i) for i in range(100, 200)])
            await wait_for(lambda: store.status()["failures"] >= 2)
            assert store.status()["state"] == "down"
            store.write([tick(ts=BASE + i, size=i) for i in range(200, 300)])
        finally:
            server.resume()
        await flushed(store)
        s = store.status()
        tg.cancel_scope.cancel()
    await store.aclose()
    async with client(server) as r:
        rows = await r.xrange(ticks_key("NSE:RELIANCE"))
        feed = await r.xrange(FEED_KEY)
    assert [int(f["size"]) for _, f in rows] == list(range(300))
    assert [int(f["size"]) for _, f in feed] == list(range(300))
    # usually Redis ran the 100 ticks sent on the dead connection: they come
    # back as duplicates of the retry; either way the sum is exact
    assert s["written"] + s["duplicates"] == 300
    assert s["last_error"] == "TimeoutError: no answer within 0.3 s"


async def test_store_feed_maxlen_zero_writes_no_feed(redis_server: RedisServer) -> None:
    async with running_store(redis_server.url, feed_maxlen=0) as store:
        store.write([tick(ts=BASE + i) for i in range(3)])
        await flushed(store)
        async with client(redis_server) as r:
            assert await r.exists(FEED_KEY) == 0
            assert await r.xlen(ticks_key("NSE:RELIANCE")) == 3


async def test_store_follow_yields_feed_in_order_and_resumes_from_last_id(
    redis_server: RedisServer,
) -> None:
    instruments = ["NSE:RELIANCE", "NASDAQ:AAPL"]
    ticks = [tick(instruments[i % 2], BASE + i, size=i) for i in range(300)]
    got: list[Tick] = []
    resume = ""
    async with running_store(redis_server.url, batch_max=40) as store:
        await wait_for(lambda: store.status()["state"] == "ok")
        store.write(ticks[:100])
        await flushed(store)
        async with aclosing(store.follow("0", count=30, block_ms=200)) as feed:
            async for last_id, batch in feed:
                got += batch
                resume = last_id
                if len(got) >= 60:
                    break
        store.write(ticks[100:])
        await flushed(store)
        with anyio.fail_after(10):
            async with aclosing(store.follow(resume, block_ms=200)) as feed:
                async for _, batch in feed:
                    got += batch
                    if len(got) >= len(ticks):
                        break
    assert got == ticks


async def test_store_follow_survives_redis_restart(redis_factory: RedisFactory) -> None:
    server = redis_factory(extra=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    got: list[Tick] = []
    ticks = [tick(ts=BASE + i, size=i) for i in range(20)]
    async with running_store(server.url) as store:
        await wait_for(lambda: store.status()["state"] == "ok")

        async def follower() -> None:
            async with aclosing(store.follow("0", block_ms=100)) as feed:
                async for _, batch in feed:
                    got.extend(batch)
                    if len(got) >= len(ticks):
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            store.write(ticks[:10])
            await wait_for(lambda: len(got) == 10)
            server.kill()
            await anyio.sleep(0.3)  # the follower's XREAD fails and backs off
            await anyio.to_thread.run_sync(server.start)
            store.write(ticks[10:])
            with anyio.fail_after(15):
                await wait_for(lambda: len(got) == 20)
    assert got == ticks


async def test_store_gateway_restart_mid_minute_bar_covers_both_processes(
    redis_server: RedisServer,
) -> None:
    # A minute in the future, so that the wall clock closes nothing meanwhile.
    m = now_ms() - now_ms() % MIN + 10 * MIN
    first = [
        tick(ts=m - 30_000, price=10.0, volume=990),  # the minute before
        tick(ts=m + 1_000, price=10.0, volume=1_000),
        tick(ts=m + 10_000, price=12.0, volume=1_010),
        tick(ts=m + 20_000, price=8.0, volume=1_030),
    ]
    second = [
        tick(ts=m + 40_000, price=11.0, volume=1_050),
        tick(ts=m + 50_000, price=13.0, volume=1_060),
        tick(ts=m + MIN + 1_000, price=9.0, volume=1_070),  # closes minute m
    ]
    async with running_store(redis_server.url) as one:  # stops mid-minute
        one.write(first)
        await wait_for(lambda: one.status()["bars_written"] == 1)  # minute m - 1
    async with running_store(redis_server.url) as two:  # the restarted gateway
        two.write(second)
        await wait_for(lambda: two.status()["bars_written"] == 1)  # minute m
        bars = await two.bars("NSE:RELIANCE", since_ms=m, until_ms=m)
    # as if one process had seen every tick (its own bar alone would be open
    # 11, low 11, volume 10, count 2); the volume counts from the last tick
    # before the minute (990)
    assert bars == [Bar("NSE:RELIANCE", m, 10.0, 13.0, 8.0, 13.0, 70, 5)]
