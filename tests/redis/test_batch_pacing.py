"""
The Redis writer's batching at a trickle: a partial batch waits ``batch_interval`` to fill,
also when its first tick arrived while the previous batch was on its way to Redis.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from mdgate._config import RedisSettings, RuntimeSettings
from mdgate._model import Tick
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.plugins.stores.redis_store._writer import BatchWriter

BASE = 1_700_000_040_000
INTERVAL = 0.5


def tick(ts: int) -> Tick:
    return Tick("NSE:RELIANCE", 100.0, ts, ts + 1, "DHAN")


async def test_a_tick_arriving_during_a_round_trip_waits_batch_interval_for_company(
    redis_server: Any, monkeypatch: Any,
) -> None:
    store = RedisStore(redis_server.url, RedisSettings(batch_interval=INTERVAL, bars=False),
                       RuntimeSettings(backoff_initial=0.05, backoff_max=0.3, shutdown_timeout=5.0))
    real_send = BatchWriter._send
    acked: list[float] = []
    sent = 0

    async def send(self: BatchWriter, conn: Any, data: bytes) -> None:
        nonlocal sent
        await real_send(self, conn, data)
        sent += 1
        if sent == 1:  # the next tick arrives while the first batch is on its way
            store.write([tick(BASE + 1)])

    monkeypatch.setattr(BatchWriter, "_send", send)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.write([tick(BASE)])
        with anyio.fail_after(10):
            while store.batches < 2:
                if len(acked) < store.batches:
                    acked.append(time.monotonic())
                await anyio.sleep(0.005)
        acked.append(time.monotonic())
        tg.cancel_scope.cancel()
    await store.aclose()
    assert store.written == 2
    assert acked[1] - acked[0] >= INTERVAL / 2  # the second batch waited for company
