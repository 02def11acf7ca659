"""
The roles' own rules, with their collaborators faked: which instruments an ingest instance
subscribes (demand x held slots, fencing tokens, takeover gaps), and how a fan-out instance
publishes the feed (once per seq, in order, holes filled from the instrument streams, gaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mdgate._fleet.fanout import FeedFollower
from mdgate._fleet.ingest import IngestShards, credential_of
from mdgate._fleet.shards import shard_of
from mdgate._fleet.slots import SlotGate
from mdgate._latest import LatestTicks
from mdgate._model import Tick

pytestmark = pytest.mark.anyio


def by_shard(n: int, per: int = 2) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in range(n)}
    i = 0
    while any(len(v) < per for v in out.values()):
        name = f"NSE:I{i}"
        bucket = out[shard_of(name, n)]
        if len(bucket) < per:
            bucket.append(name)
        i += 1
    return out


class Subs:
    def __init__(self) -> None:
        self.held: set[str] = set()
        self.log: list[tuple[str, str]] = []

    def acquire(self, name: str) -> bool:
        self.held.add(name)
        self.log.append(("+", name))
        return True

    def release(self, name: str) -> None:
        self.held.discard(name)
        self.log.append(("-", name))


Made = tuple[IngestShards, Subs, dict[str, int], list[tuple[Any, ...]], dict[str, Tick]]


def make_shards(n: int = 2) -> Made:
    subs, fences, gaps, stored = Subs(), {}, [], {}

    async def latest(names: list[str]) -> dict[str, Tick]:
        return {k: v for k, v in stored.items() if k in names}

    shards = IngestShards(SlotGate(n), subs.acquire, subs.release, lambda t: fences.update(t), latest,
                          lambda *a: gaps.append(a))
    return shards, subs, fences, gaps, stored


async def test_ingest_subscribes_the_wanted_instruments_of_held_slots_only() -> None:
    groups = by_shard(2)
    shards, subs, fences, gaps, _ = make_shards()
    shards.on_demand(frozenset(groups[0] + groups[1]))
    assert subs.held == set()  # no slot held: nothing subscribed
    await shards.gain(1, token=7, taken_over=False)
    assert subs.held == set(groups[1])
    assert fences == {n: 7 for n in groups[1]}
    assert gaps == []  # a first acquisition is no takeover
    await shards.gain(0, token=9, taken_over=False)
    assert subs.held == set(groups[0] + groups[1])
    # demand shrinks: released; slot lost: its instruments released after its connections closed
    shards.on_demand(frozenset(groups[0][:1] + groups[1]))
    assert subs.held == {groups[0][0], *groups[1]}
    await shards.lose(1)
    assert subs.held == {groups[0][0]} and 1 not in shards.gate.held


async def test_always_instruments_follow_their_slot_too() -> None:
    groups = by_shard(2)
    shards, subs, *_ = make_shards()
    shards.always = frozenset(groups[0])
    await shards.gain(1, token=1, taken_over=False)
    assert subs.held == set()
    await shards.gain(0, token=2, taken_over=False)
    assert subs.held == set(groups[0])


async def test_a_takeover_announces_a_failover_gap_from_the_last_stored_tick() -> None:
    groups = by_shard(2)
    shards, _subs, fences, gaps, stored = make_shards()
    stored[groups[0][0]] = Tick(groups[0][0], 1.0, 1_000, 1_000, "DHAN", seq=5)
    shards.on_demand(frozenset(groups[0] + groups[1]))
    await shards.gain(0, token=12, taken_over=True)
    assert {g[0] for g in gaps} == set(groups[0])
    first = next(g for g in gaps if g[0] == groups[0][0])
    assert first[1] == 1_000 and first[2] >= first[1] and first[3] == "failover"
    assert shards.takeovers == 1 and fences[groups[0][0]] == 12


def test_credential_names_hash_the_client_id() -> None:
    class Cfg:
        client_id = "1000000001"

    class Sess:
        config = Cfg()

    name = credential_of(Sess())  # type: ignore[arg-type]
    assert name != "1000000001" and len(name) == 12
    Sess.config = object()  # type: ignore[assignment]
    assert credential_of(Sess()) == "default"  # type: ignore[arg-type]


# ------------------------------------------------------------------ fan-out


@dataclass
class Events:
    ticks: list[Tick]
    gaps: list[dict[str, Any]] = field(default_factory=list)


class Fan:
    def __init__(self) -> None:
        self.published: list[Tick] = []
        self.announced: list[tuple[str, bytes]] = []

    def publish(self, batch: list[Tick]) -> None:
        self.published += batch

    def announce(self, instrument: str, payload: bytes) -> int:
        self.announced.append((instrument, payload))
        return 1


class Stored:
    def __init__(self, ticks: list[Tick]) -> None:
        self.ticks = ticks
        self.asked: list[tuple[str, int, int]] = []

    async def ticks_after(self, name: str, after: int, last: int, limit: int) -> tuple[list[Tick], bool]:
        self.asked.append((name, after, last))
        found = [t for t in self.ticks if t.instrument == name and after < (t.seq or 0) <= last]
        return found[:limit], True


def t(name: str, seq: int) -> Tick:
    return Tick(name, float(seq), seq, seq, "DHAN", seq=seq)


async def test_fanout_publishes_each_seq_once_in_order() -> None:
    fan = Fan()
    f = FeedFollower(Stored([]), LatestTicks(), fan)  # type: ignore[arg-type]
    f.take(Events([t("A", 1), t("B", 1), t("A", 2)]))
    f.take(Events([t("A", 2), t("A", 1), t("A", 3)]))  # a retried write's duplicates
    assert [(x.instrument, x.seq) for x in fan.published] == [("A", 1), ("B", 1), ("A", 2), ("A", 3)]
    assert f.duplicates == 2 and f.last_seq("A") == 3 and f.last_seq("C") is None


async def test_fanout_fills_a_hole_in_the_feed_from_the_instrument_stream_in_place() -> None:
    fan = Fan()
    store = Stored([t("A", 3), t("A", 4)])
    f = FeedFollower(store, LatestTicks(), fan)  # type: ignore[arg-type]
    f.take(Events([t("A", 1), t("A", 2)]))
    ev = Events([t("B", 1), t("A", 5), t("A", 6)])
    await f.fill(ev)
    f.take(ev)
    got = [(x.instrument, x.seq) for x in fan.published][2:]
    assert got == [("B", 1), ("A", 3), ("A", 4), ("A", 5), ("A", 6)]
    assert store.asked == [("A", 2, 4)] and f.filled == 2


async def test_fanout_announces_the_feed_gaps() -> None:
    fan = Fan()
    f = FeedFollower(Stored([]), LatestTicks(), fan)  # type: ignore[arg-type]
    f.take(Events([], [{"instrument": "A", "from_ts": 1, "to_ts": 2, "reason": "failover", "type": "gap"}]))
    frame = b'{"type":"gap","instrument":"A","from_ts":1,"to_ts":2,"reason":"failover"}'
    assert fan.announced == [("A", frame)]


async def test_a_slot_is_fenced_and_renumbered_before_it_connects_and_flushed_before_it_goes() -> None:
    groups = by_shard(2)
    order: list[str] = []
    shards, subs, *_ = make_shards()

    async def raise_fence(tokens: Any) -> None:
        order.append(f"fence {sorted(tokens.items())} held={sorted(shards.gate.held)}")

    async def flush() -> None:
        order.append(f"flush held={sorted(shards.gate.held)}")

    shards._raise_fence, shards._flush = raise_fence, flush
    shards._forget = lambda names: order.append(f"forget {sorted(names)}")
    shards.on_demand(frozenset(groups[0]))
    await shards.gain(0, token=8, taken_over=False)
    assert order == [f"forget {sorted(groups[0])}", f"fence {sorted((n, 8) for n in groups[0])} held=[]"]
    assert shards.gate.held == {0}  # granted (connects) only after the fence is up
    order.clear()
    await shards.lose(0)
    assert order == ["flush held=[]", f"forget {sorted(groups[0])}"]  # closed, stored, then forgotten
    assert subs.held == set()
