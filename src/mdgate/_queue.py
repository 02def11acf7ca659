"""
TickQueue: the bounded hand-off between provider connections and the pipeline.

Connections append whole decoded batches without awaiting while there is
room; the pipeline takes *everything* queued in one ``get_batch`` call, so
batching across connections happens for free and the per-message cost is a
list ``extend``. When the queue holds ``maxsize`` ticks, producers wait
(TCP back-pressure on the provider socket) instead of growing memory.
Wake-ups are plain asyncio futures (the daemon runs on anyio's asyncio
backend): creating an ``anyio.Event`` per wake-up costs a backend look-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, ticks: Sequence[Tick]) -> bool:
        """Append ``ticks`` if there is room; return False (nothing added) if full."""
        if len(self._items) >= self.maxsize:
            return False
        self._items.extend(ticks)
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
