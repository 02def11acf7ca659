"""TickQueue's consumer mode: one call per event-loop iteration, with everything queued in it."""

from __future__ import annotations

import asyncio

import pytest

from mdgate._model import Tick
from mdgate._queue import TickQueue

pytestmark = pytest.mark.anyio


def ticks(*prices: float) -> list[Tick]:
    return [Tick("FAKE:A", p, 1, 1, "FK") for p in prices]


async def test_everything_queued_in_one_iteration_reaches_the_consumer_in_one_call_in_order() -> None:
    q = TickQueue(100)
    calls: list[list[float]] = []
    q.set_consumer(lambda batch: calls.append([t.price for t in batch]))
    assert q.put_nowait(ticks(1, 2)) and q.put_nowait(ticks(3)) and q.put_nowait(ticks(4))
    assert calls == []  # never inside put: from the loop
    await asyncio.sleep(0)
    assert calls == [[1, 2, 3, 4]]
    q.put_nowait(ticks(5))
    await asyncio.sleep(0)
    assert calls == [[1, 2, 3, 4], [5]]
    await asyncio.sleep(0)
    assert len(calls) == 2  # nothing queued: no call


async def test_a_nudge_calls_the_consumer_with_nothing_and_none_goes_back_to_get_batch() -> None:
    q = TickQueue(100)
    calls: list[int] = []
    q.set_consumer(lambda batch: calls.append(len(batch)))
    q.nudge()
    await asyncio.sleep(0)
    assert calls == [0]
    q.set_consumer(None)
    q.put_nowait(ticks(7))
    await asyncio.sleep(0)
    assert calls == [0]
    assert [t.price for t in await q.get_batch()] == [7]


async def test_ticks_queued_before_the_consumer_is_set_are_handed_to_it() -> None:
    q = TickQueue(100)
    q.put_nowait(ticks(1))
    got: list[float] = []
    q.set_consumer(lambda batch: got.extend(t.price for t in batch))
    await asyncio.sleep(0)
    assert got == [1]


async def test_a_full_queue_refuses_until_the_consumer_took_everything() -> None:
    q = TickQueue(2)
    assert q.put_nowait(ticks(1, 2))
    assert not q.put_nowait(ticks(3))  # full: the producer must wait (back-pressure)
    waiter = asyncio.ensure_future(q.put(ticks(3)))
    await asyncio.sleep(0)
    assert q.waits == 1 and not waiter.done()
    got: list[float] = []
    q.set_consumer(lambda batch: got.extend(t.price for t in batch))
    for _ in range(4):
        await asyncio.sleep(0)
    assert waiter.done() and got == [1, 2, 3]


async def test_flush_hands_the_queue_over_at_once_and_the_loop_call_then_finds_nothing() -> None:
    q = TickQueue(100)
    calls: list[list[float]] = []
    q.set_consumer(lambda batch: calls.append([t.price for t in batch]))
    q.put_nowait(ticks(1))
    q.put_nowait(ticks(2))
    q.flush()
    assert calls == [[1, 2]]  # synchronously, both
    await asyncio.sleep(0)
    assert calls == [[1, 2]]  # the iteration's call found nothing: no empty batch
    q.flush()
    assert calls == [[1, 2]]
    q.put_nowait(ticks(3))
    await asyncio.sleep(0)
    assert calls == [[1, 2], [3]]
