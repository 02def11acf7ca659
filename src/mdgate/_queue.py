"""
TickQueue: the bounded hand-off between provider connections and the pipeline.

Connections append whole decoded batches without awaiting while there is
room; the pipeline takes *everything* queued in one ``get_batch`` call, so
batching across connections happens for free and the per-message cost is a
list ``extend``. When the queue holds ``maxsize`` ticks, producers wait
(TCP back-pressure on the provider socket) instead of growing memory.
Wake-ups are plain asyncio futures (the daemon runs on anyio's asyncio
backend): creating an ``anyio.Event`` per wake-up costs a backend look-up.

The gateway's pipeline does not wait in ``get_batch``: it registers a
*consumer* (:meth:`TickQueue.set_consumer`), a plain function the event loop
calls once per loop iteration in which something was queued, with
everything queued in that iteration. At a provider's real rate every tick
arrives alone, and a task switch per tick (a future, a task step, a shield)
cost more than the pipeline's own work on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mdgate._model import Tick

__all__ = ["TickQueue"]


class TickQueue:
    """A bounded multi-producer, single-consumer queue of ticks, drained in batches."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: list[Tick] = []
        self._ready: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        #: Times a producer had to wait for room.
        self.waits = 0
        self._nudged = False
        self._consumer: Callable[[list[Tick]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, ticks: Sequence[Tick], *, schedule: bool = True) -> bool:
        """
        Append ``ticks`` if there is room; return False (nothing added) if full.

        With a consumer, the loop's next iteration hands them over, unless ``schedule`` is
        False: then the caller calls :meth:`flush` before control goes back to the event
        loop (a read callback, after its last message), and no loop call is made for them.
        """
        if len(self._items) >= self.maxsize:
            return False
        self._items.extend(ticks)
        if self._consumer is not None:
            if schedule and not self._scheduled:
                self._schedule()
            return True
        ready = self._ready
        if ready is not None:
            self._ready = None
            if not ready.done():
                ready.set_result(None)
        return True

    async def put(self, ticks: Sequence[Tick]) -> None:
        """Append ``ticks``, waiting while the queue is full."""
        while not self.put_nowait(ticks):
            self.waits += 1
            if self._space is None:
                self._space = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._space)

    async def get_batch(self) -> list[Tick]:
        """Return every queued tick (at least one, unless :meth:`nudge` woke it), oldest first."""
        while not self._items and not self._nudged:
            if self._ready is None:
                self._ready = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._ready)
        self._nudged = False
        return self.drain()

    def nudge(self) -> None:
        """Wake the consumer even with nothing queued (its :meth:`get_batch` may return ``[]``)."""
        self._nudged = True
        if self._consumer is not None:
            if not self._scheduled:
                self._schedule()
            return
        ready = self._ready
        if ready is not None:
            self._ready = None
            if not ready.done():
                ready.set_result(None)

    def drain(self) -> list[Tick]:
        """Take every queued tick now (maybe none), oldest first; producers waiting for room go on."""
        items, self._items = self._items, []
        space = self._space
        if space is not None:
            self._space = None
            if not space.done():
                space.set_result(None)
        return items

    def set_consumer(self, consumer: Callable[[list[Tick]], None] | None) -> None:
        """
        Hand everything queued to ``consumer`` once per event-loop iteration (from the
        loop, never inside ``put``), instead of waiting in :meth:`get_batch`; after a
        :meth:`nudge` it may get ``[]``. ``None`` goes back to :meth:`get_batch`. Must be
        called from the event loop; what ``consumer`` raises is the loop's to report, so
        it should contain its own errors.
        """
        self._consumer = consumer
        self._loop = asyncio.get_running_loop() if consumer is not None else None
        self._scheduled = False
        if consumer is not None and (self._items or self._nudged):
            self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._scheduled = True
        self._loop.call_soon(self._scheduled_consume)

    def _scheduled_consume(self) -> None:
        self._scheduled = False
        self._consume()

    def flush(self) -> None:
        """
        Hand what is queued to the consumer now, rather than at the loop's next iteration
        (a connection calls it after the last message of a socket read). Without a consumer,
        or with nothing queued, it does nothing.
        """
        if self._consumer is not None and (self._items or self._nudged):
            self._consume()

    def _consume(self) -> None:
        consumer = self._consumer
        if consumer is None or not (self._items or self._nudged):  # taken by flush() meanwhile
            return
        self._nudged = False
        consumer(self.drain())
