"""
The ingest instance's gate on its provider connections: connection ``i`` of every provider
runs only while this instance holds slot ``i``'s lease.

A provider session given a :class:`SlotGate` places each instrument on the connection of
its shard (:func:`~mdgate._fleet.shards.shard_of`), and each connection waits for its slot
before it connects. :meth:`SlotGate.revoke` cancels the connections of a slot and returns
only once they are closed: the lease keeper releases a slot (or lets it lapse) after that,
so two instances never hold one upstream connection slot at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from mdgate._fleet.shards import shard_of

__all__ = ["SlotGate"]


class SlotGate:
    """
    Which connection slots this instance holds, and the connections running under each.

    Args:
        slots: the connection slots per provider credential (``[fleet] slots``).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        #: The slots held now.
        self.held: set[int] = set()
        self._granted: dict[int, anyio.Event] = {}
        #: slot -> the cancel scopes of its running connections, each with the event set when it ended.
        self._running: dict[int, dict[anyio.CancelScope, anyio.Event]] = {}

    def place(self, instrument: str) -> int:
        """The connection (slot) index ``instrument`` goes on."""
        return shard_of(instrument, self.slots)

    def grant(self, index: int) -> None:
        """Slot ``index`` is held: its connections may connect."""
        self.held.add(index)
        self._granted.setdefault(index, anyio.Event()).set()

    async def wait(self, index: int) -> None:
        """Wait until slot ``index`` is held."""
        while index not in self.held:
            event = self._granted.get(index)
            if event is None or event.is_set():
                event = self._granted[index] = anyio.Event()
            await event.wait()

    @contextmanager
    def holding(self, index: int) -> Iterator[anyio.CancelScope]:
        """
        Run one connection of slot ``index`` inside the block; :meth:`revoke` cancels it
        (the block then ends quietly: the connection waits for its slot again).
        """
        scope = anyio.CancelScope()
        ended = anyio.Event()
        self._running.setdefault(index, {})[scope] = ended
        if index not in self.held:
            scope.cancel()
        try:
            with scope:
                yield scope
        finally:
            self._running[index].pop(scope, None)
            ended.set()

    async def revoke(self, index: int) -> None:
        """Slot ``index`` is no longer held: cancel its connections and wait until they are closed."""
        self.held.discard(index)
        running = dict(self._running.get(index, {}))
        for scope in running:
            scope.cancel()
        for ended in running.values():
            await ended.wait()

    def status(self) -> dict[str, object]:
        """Slots held and connections running per slot."""
        return {"slots": self.slots, "held": sorted(self.held),
                "connections": {str(i): len(r) for i, r in sorted(self._running.items()) if r}}
