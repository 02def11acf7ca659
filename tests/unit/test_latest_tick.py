"""
"Latest" only moves forward: an older tick (smaller ts) never replaces a
newer one, in the gateway's own snapshot and in the memory store. A tick
with the same ts replaces it (the later arrival wins). Every tick is still
kept as history.
"""

from __future__ import annotations

import anyio
import pytest

from mdgate._app import Gateway
from mdgate._config import Settings
from mdgate._model import Tick
from mdgate._providers.registry import load_registry
from mdgate.plugins.stores.memory_store import MemoryStore

pytestmark = pytest.mark.anyio

BASE = 1_700_000_000_000


def tick(ts: int, price: float, instrument: str = "NSE:RELIANCE") -> Tick:
    return Tick(instrument, price, ts, ts + 1, "DHAN")


BATCHES = [
    [tick(BASE + 2_000, 2.0)],
    [tick(BASE + 1_000, 1.0)],  # a later batch, older ts (e.g. a snapshot on resubscribe)
    [tick(BASE + 3_000, 3.0), tick(BASE + 2_500, 2.5)],  # within one batch: newest ts wins
    [tick(BASE + 3_000, 3.1), tick(BASE, 9.0, "NSE:TCS")],  # same ts: the later arrival wins
]
EXPECTED = {"NSE:RELIANCE": (BASE + 3_000, 3.1), "NSE:TCS": (BASE, 9.0)}


async def test_gateway_latest_never_goes_back_in_time():
    gw = Gateway(Settings(), load_registry({}, entry_points=False))
    assert isinstance(gw.store, MemoryStore)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gw.pipeline.run)
        for i, batch in enumerate(BATCHES, 1):
            assert gw.queue.put_nowait(batch)
            with anyio.fail_after(5):
                while gw.pipeline_stats.batches < i:
                    await anyio.sleep(0.001)
            if i == 2:
                assert gw.latest["NSE:RELIANCE"].price == 2.0
        tg.cancel_scope.cancel()
    assert {i: (t.ts, t.price) for i, t in gw.latest.items()} == EXPECTED
    snap = await gw.snapshot(["NSE:RELIANCE", "NSE:TCS"])
    assert [(t.ts, t.price) for t in snap] == list(EXPECTED.values())
    # nothing lost: the store kept every tick as history
    assert len(await gw.store.history("NSE:RELIANCE")) == 5


async def test_memory_store_latest_never_goes_back_in_time():
    store = MemoryStore()
    for i, batch in enumerate(BATCHES, 1):
        store.write(batch)
        if i == 2:
            assert (await store.latest(["NSE:RELIANCE"]))["NSE:RELIANCE"].price == 2.0
    got = await store.latest(["NSE:RELIANCE", "NSE:TCS"])
    assert {i: (t.ts, t.price) for i, t in got.items()} == EXPECTED
    assert [t.price for t in await store.history("NSE:RELIANCE")] == [2.0, 1.0, 3.0, 2.5, 3.1]


async def test_pipeline_survives_a_malformed_tick_and_keeps_the_rest():
    gw = Gateway(Settings(), load_registry({}, entry_points=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(gw.pipeline.run)
        bad = Tick(["not", "hashable"], 1.0, BASE, BASE, "DHAN")  # type: ignore[arg-type]
        gw.queue.put_nowait([tick(BASE, 1.0), bad, tick(BASE + 1, 2.0)])
        gw.queue.put_nowait([tick(BASE + 2, 3.0)])
        with anyio.fail_after(5):
            while gw.pipeline_stats.ticks < 3:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert gw.latest["NSE:RELIANCE"].price == 3.0
    assert gw.pipeline_stats.errors == 1
    assert [t.price for t in await gw.store.history("NSE:RELIANCE")] == [1.0, 2.0, 3.0]
    # screened before numbering: the bad tick takes no number, none is skipped
    assert [t.seq for t in await gw.store.history("NSE:RELIANCE")] == [1, 2, 3]
