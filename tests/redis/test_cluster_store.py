"""
The Redis store on a Redis Cluster (mdgate.testing.redis_cluster: 3 primaries, 3 replicas on
loopback; one cluster for the module): writes split by slot, the partitioned feed without
duplicates, retried batches, reads, the feed reader, fencing, WAIT, and a primary killed while
writing. The single-Redis feed reader is tested here too.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster
from structlog.testing import capture_logs
from tests.redis.test_redis_store import running_store as running

from mdgate._model import Bar, Tick
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.plugins.stores.redis_store._cluster import ClusterBatch, ClusterIO
from mdgate.plugins.stores.redis_store._codec import (
    FEED_KEY,
    bars_key,
    feed_key,
    last_key,
    shard_of,
    ticks_key,
)
from mdgate.plugins.stores.redis_store._events import FeedEvents
from mdgate.plugins.stores.redis_store._lua import FEED_ADD_SHA
from mdgate.testing.redis_cluster import RedisClusterNodes, _cli

pytestmark = pytest.mark.integration

BASE = 1_700_000_040_000  # a minute boundary, long past
MIN = 60_000
PARTS = 16
_names = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(Path(tmp_path_factory.mktemp("cluster")))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def url_of(cluster: RedisClusterNodes) -> str:
    """A running node's URL (a test may have killed the first node)."""
    return f"redis://127.0.0.1:{cluster.running()[0].port}"


def names(n: int) -> list[str]:
    """Instruments no other test of the module uses (the cluster is shared)."""
    k = next(_names)
    return [f"T{k}:S{i}" for i in range(n)]


def tick(inst: str, seq: int, ts: int | None = None) -> Tick:
    ts = BASE + seq if ts is None else ts
    return Tick(inst, 100.0 + seq, ts, ts + 1, "DHAN", volume=seq * 10, seq=seq)




@asynccontextmanager
async def raw(url: str) -> AsyncIterator[Any]:
    r = RedisCluster.from_url(url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()


async def seqs(r: Any, inst: str) -> list[int]:
    return [int(f["seq"]) for _, f in await r.xrange(ticks_key(inst))]


async def feed_seqs(r: Any, insts: list[str]) -> dict[str, list[int]]:
    """(instrument -> seqs) over every partition, checking each is in its own partition."""
    out: dict[str, list[int]] = {i: [] for i in insts}
    for p in range(PARTS):
        for _, f in await r.xrange(feed_key(p)):
            if f.get("instrument") in out and f.get("type") != "gap":
                assert shard_of(f["instrument"], PARTS) == p
                out[f["instrument"]].append(int(f["seq"]))
    return out


# ---------------------------------------------------------------- writes


async def test_ticks_of_many_instruments_land_in_their_slots_and_the_feed_once(
    cluster: RedisClusterNodes,
) -> None:
    insts = names(60)
    nodes = {cluster.primary_for(ticks_key(i)).port for i in insts}
    assert len(nodes) == 3  # the batch really spans every primary
    ticks = [tick(i, s) for s in range(1, 6) for i in insts]
    closing = [tick(i, 6, BASE + MIN + 1) for i in insts]  # closes each minute-0 bar
    async with running(url_of(cluster), batch_max=100) as store:
        store.write(ticks)
        assert await store.settled(20)
        store.write(closing)
        assert await store.settled(20)
        n = len(ticks) + len(closing)
        assert store.cluster is True and store.written == n and store.duplicates == 0
        assert store.bars_written == len(insts)
        assert store.status()["cluster"] is True
    async with raw(url_of(cluster)) as r:
        for i in insts:
            assert await seqs(r, i) == [1, 2, 3, 4, 5, 6]
            assert (await r.hgetall(last_key(i)))["seq"] == "6"
            [(_, bar)] = (await r.xrange(bars_key(i), BASE, BASE))
            assert bar["count"] == "5" and bar["open"] == "101.0" and bar["close"] == "105.0"
        assert await feed_seqs(r, insts) == {i: [1, 2, 3, 4, 5, 6] for i in insts}


async def test_a_batch_sent_twice_stores_nothing_twice_feed_included(
    cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = ClusterIO._write

    async def twice(self: ClusterIO, w: Any, batch: ClusterBatch) -> None:
        await original(self, w, batch)
        for call in batch.calls:  # as if no reply had come: everything is re-sent
            call.reply = None
        batch.feed_done.clear()
        await original(self, w, batch)

    monkeypatch.setattr(ClusterIO, "_write", twice)
    insts = names(20)
    ticks = [tick(i, s) for s in range(1, 4) for i in insts]
    async with running(url_of(cluster)) as store:
        store.write(ticks)
        assert await store.settled(20)
        assert store.written == len(ticks) and store.duplicates == len(ticks)
    async with raw(url_of(cluster)) as r:
        for i in insts:
            assert await seqs(r, i) == [1, 2, 3]
        assert await feed_seqs(r, insts) == {i: [1, 2, 3] for i in insts}


async def test_replies_lost_after_the_server_ran_the_calls_are_retried_without_duplicates(
    cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = ClusterIO._run
    lost = {"slots": 1, "feed": 1}

    async def lossy(self: ClusterIO, calls: list[tuple[int, tuple[object, ...]]]) -> list[Any]:
        out = await original(self, calls)
        phase = "feed" if calls[0][1][1] == FEED_ADD_SHA else "slots"
        if lost[phase]:  # the server ran them; the connection dropped before the replies
            lost[phase] -= 1
            return [ConnectionError("Connection closed by server.")] * len(calls)
        return out

    monkeypatch.setattr(ClusterIO, "_run", lossy)
    insts = names(20)
    async with running(url_of(cluster)) as store:
        store.write([tick(i, s) for s in range(1, 4) for i in insts])
        assert await store.settled(20)
        assert store.failures == 2 and store.written == 0 and store.duplicates == 60
    async with raw(url_of(cluster)) as r:
        for i in insts:
            assert await seqs(r, i) == [1, 2, 3]
        assert await feed_seqs(r, insts) == {i: [1, 2, 3] for i in insts}


async def test_a_restarted_writer_continues_ids_and_the_feed_skips_nothing_new(
    cluster: RedisClusterNodes,
) -> None:
    insts = names(10)
    async with running(url_of(cluster)) as store:
        store.write([tick(i, s) for s in (1, 2) for i in insts])
        assert await store.settled(20)
    async with running(url_of(cluster)) as store:  # a new process: seeds IDs per slot (LAST_IDS)
        store.write([tick(i, 3, BASE + 1) for i in insts])  # ts went back: IDs still grow
        assert await store.settled(20)
        assert store.written == len(insts)
    async with raw(url_of(cluster)) as r:
        for i in insts:
            assert await seqs(r, i) == [1, 2, 3]
        assert await feed_seqs(r, insts) == {i: [1, 2, 3] for i in insts}


async def test_a_batch_is_not_acknowledged_before_a_replica_has_it(cluster: RedisClusterNodes) -> None:
    [inst] = names(1)
    primary = cluster.primary_for(ticks_key(inst))
    async with running(url_of(cluster), feed_maxlen=0) as store:
        store.write([tick(inst, 1)])
        assert await store.settled(20)  # connected, scripts loaded
        [replica] = [n for n in cluster.running()
                     if f"master_port:{primary.port}" in _cli(n.port, "info", "replication").split()]
        replica.pause()
        try:
            store.write([tick(inst, 2)])
            assert not await store.settled(0.4)  # on the primary, not yet on its paused replica
        finally:
            replica.resume()
        assert await store.settled(10)
        assert store.written == 2


async def test_a_first_batch_waits_for_a_replica_too(cluster: RedisClusterNodes) -> None:
    """A store's very first batch to a node (nothing known of its replicas yet) is replicated too."""
    [inst] = names(1)
    primary = cluster.primary_for(ticks_key(inst))
    [replica] = [n for n in cluster.running()
                 if f"master_port:{primary.port}" in _cli(n.port, "info", "replication").split()]
    async with running(url_of(cluster), feed_maxlen=0) as store:
        replica.pause()
        try:
            store.write([tick(inst, 1)])
            assert not await store.settled(0.6)  # not counted while its replica cannot have it
        finally:
            replica.resume()
        assert await store.settled(10)
        assert store.written == 1


# ---------------------------------------------------------------- reads


async def test_reads_in_cluster_mode(cluster: RedisClusterNodes) -> None:
    insts = names(12)
    ticks = [tick(i, s, BASE + s * 1000) for s in range(1, 11) for i in insts]
    ticks += [tick(i, 11, BASE + MIN + 5) for i in insts]
    async with running(url_of(cluster)) as store:
        store.write(ticks)
        assert await store.settled(20)
        latest = await store.latest(insts)
        assert {i: t.seq for i, t in latest.items()} == dict.fromkeys(insts, 11)
        assert await store.last_seqs([*insts, "T-NONE:X"]) == dict.fromkeys(insts, 11)
        hist = await store.history(insts[3], since_ms=BASE + 3000, until_ms=BASE + 5000)
        assert [t.seq for t in hist] == [3, 4, 5]
        after, complete = await store.ticks_after(insts[5], 7, 11, 100)
        assert [t.seq for t in after] == [8, 9, 10, 11] and complete
        [bar] = await store.bars(insts[7], "1m", until_ms=BASE)
        assert (bar.start, bar.count) == (BASE, 10)
        added = await store.merge_bars(insts[7], [Bar(insts[7], BASE - MIN, 1, 2, 0.5, 1.5, 10, 3),
                                                  Bar(insts[7], BASE, 9, 9, 9, 9, 9, 9)])
        assert added == 1  # the live minute wins
        assert [b.start for b in await store.bars(insts[7], "1m", until_ms=BASE)] == [BASE - MIN, BASE]


# ---------------------------------------------------------------- feed reader


async def collect(store: RedisStore, last_ids: dict[str, str] | None, want: set[tuple[str, int]],
                  gaps: int, insts: set[str]) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
    got: list[tuple[str, int]] = []
    seen_gaps: list[dict[str, Any]] = []
    with anyio.fail_after(20):
        async with aclosing(store.follow_feed_events(last_ids, block_ms=200)) as events:
            async for ev in events:
                assert isinstance(ev, FeedEvents)
                got += [(t.instrument, t.seq or 0) for t in ev.ticks if t.instrument in insts]
                seen_gaps += [g for g in ev.gaps if g["instrument"] in insts]
                if set(got) >= want and len(seen_gaps) >= gaps:
                    break
    return got, seen_gaps


async def test_follow_feed_events_reads_ticks_and_gaps_from_every_partition(
    cluster: RedisClusterNodes,
) -> None:
    insts = names(30)
    assert len({shard_of(i, PARTS) for i in insts}) > 8
    async with running(url_of(cluster)) as store:
        store.write([tick(i, s) for s in (1, 2) for i in insts])
        store.record_gap(insts[4], {"from_ts": BASE, "to_ts": BASE + 9, "reason": "reconnect"})
        assert await store.settled(20)
        await anyio.sleep(0.2)  # the gap is written after its batch
        want = {(i, s) for i in insts for s in (1, 2)}
        start = {feed_key(p): "0" for p in range(PARTS)}
        got, gaps = await collect(store, start, want, 1, set(insts))
        assert sorted(got) == sorted(want)  # each once
        assert gaps == [{"instrument": insts[4], "from_ts": BASE, "to_ts": BASE + 9, "reason": "reconnect"}]


async def test_follow_feed_events_on_a_single_redis_and_follow_skips_gaps(redis_server: Any) -> None:
    insts = ["NSE:A", "NSE:B"]
    async with running(redis_server.url) as store:
        store.write([tick(i, s) for s in (1, 2, 3) for i in insts])
        store.record_gap("NSE:A", {"from_ts": BASE, "to_ts": BASE + 1, "reason": "store"})
        assert await store.settled(10)
        await anyio.sleep(0.2)
        assert store.cluster is False
        want = {(i, s) for i in insts for s in (1, 2, 3)}
        got, gaps = await collect(store, {FEED_KEY: "0"}, want, 1, set(insts))
        assert sorted(got) == sorted(want)
        assert gaps == [{"instrument": "NSE:A", "from_ts": BASE, "to_ts": BASE + 1, "reason": "store"}]
        # the older follow() yields the ticks only, and skips the gap entry quietly
        with anyio.fail_after(10), capture_logs() as logs:
            async with aclosing(store.follow("0", block_ms=100)) as it:
                async for _id, ticks in it:
                    assert len(ticks) == 6
                    break
        assert not [e for e in logs if e["event"] == "redis_bad_feed_entry"]


# ---------------------------------------------------------------- fencing


async def test_fencing_in_cluster_mode(cluster: RedisClusterNodes) -> None:
    fenced, free = names(2)
    async with running(url_of(cluster)) as a, running(url_of(cluster)) as b:
        a.fence({fenced: 5})
        a.write([tick(fenced, 1), tick(free, 1)])
        assert await a.settled(20)
        b.fence({fenced: 6})
        b.write([tick(fenced, 2)])
        assert await b.settled(20)
        a.write([tick(fenced, 3), tick(fenced, 4), tick(free, 2)])
        assert await a.settled(20)  # refused ticks are settled, not retried
        assert a.fenced == 2 and a.written == 3 and b.written == 1 and b.fenced == 0
        assert a.status()["fenced"] == 2
    async with raw(url_of(cluster)) as r:
        assert await seqs(r, fenced) == [1, 2]
        assert await seqs(r, free) == [1, 2]
        assert await r.get(f"mdgate:{{{fenced}}}:fence") == "6"
        assert await feed_seqs(r, [fenced, free]) == {fenced: [1, 2], free: [1, 2]}


# ---------------------------------------------------------------- failover


async def test_a_killed_primary_loses_no_acknowledged_tick_and_writing_resumes(
    cluster: RedisClusterNodes,
) -> None:
    insts = names(30)
    victim = cluster.primary_for(ticks_key(insts[0]))
    on_victim = [i for i in insts if cluster.primary_for(ticks_key(i)) is victim]
    sent = 0
    async with running(url_of(cluster), batch_max=500) as store:

        async def produce(stop: anyio.Event) -> None:
            nonlocal sent
            while not stop.is_set():
                sent += 1
                store.write([tick(i, sent) for i in insts])
                await anyio.sleep(0.005)

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, stop)
            with anyio.fail_after(20):
                while store.written < 20 * len(insts):
                    await anyio.sleep(0.01)
            acked_before_kill = store.written
            victim.kill()
            promoted = await anyio.to_thread.run_sync(cluster.wait_failover, ticks_key(insts[0]), victim)
            mark = store.written
            with anyio.fail_after(20):
                while store.written < mark + 20 * len(insts):  # writing resumes on the promoted node
                    await anyio.sleep(0.01)
            stop.set()
        assert await store.settled(30)
        assert store.written + store.duplicates == sent * len(insts) and store.dropped == 0
        assert store.failures > 0 and acked_before_kill > 0
    async with aclosing_cluster(promoted.port) as r:
        for i in insts:
            assert await seqs(r, i) == list(range(1, sent + 1)), i  # every tick, none twice
        feed = await feed_seqs(r, insts)
        assert all(feed[i] == list(range(1, sent + 1)) for i in insts)
    assert on_victim  # the kill hit some of the instruments


@asynccontextmanager
async def aclosing_cluster(port: int) -> AsyncIterator[Any]:
    async with raw(f"redis://127.0.0.1:{port}") as r:
        yield r


async def test_ticks_arriving_while_a_batch_is_seeded_are_seeded_too(
    cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A new instrument's ticks that reach the buffer during the seeding round trip of another
    must be seeded as well before the batch is packed: unseeded, their IDs would count from 0
    and collide with what another writer stored in the same millisecond (skipped as duplicates).
    """
    a, b = names(2)
    ts = BASE + 500
    async with running(url_of(cluster)) as other:  # another instance wrote b in that millisecond
        other.write([tick(b, s, ts) for s in (1, 2, 3)])
        assert await other.settled(20)
    original = ClusterIO._seed_some
    arrived: list[str] = []

    async def seed_some(self: ClusterIO, w: Any, new: list[str]) -> None:
        if not arrived:  # b's ticks arrive while a is being seeded
            arrived.append(b)
            store.write([tick(b, s, ts) for s in (4, 5)])
        await original(self, w, new)

    monkeypatch.setattr(ClusterIO, "_seed_some", seed_some)
    async with running(url_of(cluster)) as store:
        store.write([tick(a, 1, ts)])
        assert await store.settled(20)
        assert arrived == [b] and store.duplicates == 0 and store.written == 3
    async with raw(url_of(cluster)) as r:
        assert await seqs(r, b) == [1, 2, 3, 4, 5]
