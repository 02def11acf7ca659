"""
Fan-out of tick batches to WebSocket clients.

Encode once: for every batch, each tick is encoded to JSON once, and each
distinct *subscription set* gets one ``ticks`` frame built by joining those
bytes; every client with that set receives the same ``bytes`` object. With
200 clients watching the same instruments a batch costs one encode and one
join, not 200.

Never block the feed: :meth:`Fanout.publish` is synchronous and only
appends to per-client outboxes. Each client has its own writer task. When a
client still has ticks waiting from an earlier batch and its outbox holds
more than ``client_queue`` ticks, it is *conflated*: only the latest tick
per instrument is kept (one large batch reaching an idle client is not). A client whose socket has not
drained for ``drain_timeout`` seconds is closed with code 1008.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import anyio

from mdgate.model import Tick, encode

__all__ = ["ClientOutbox", "Fanout", "ticks_frame"]

_PREFIX: Final = b'{"type":"ticks","ticks":['
_SUFFIX: Final = b"]}"

Item = tuple[str, bytes]


def ticks_frame(parts: Iterable[bytes]) -> bytes:
    """Build a ``{"type":"ticks","ticks":[...]}`` frame from encoded ticks."""
    return _PREFIX + b",".join(parts) + _SUFFIX


class _Chunk:
    """Ticks queued for a client: a shared, prebuilt frame plus its items."""

    __slots__ = ("frames", "items")

    def __init__(self, frames: list[bytes] | None, items: list[Item]) -> None:
        self.frames = frames
        self.items = items


class ClientOutbox:
    """What is waiting to be sent to one client: control frames and ticks, in order."""

    def __init__(self, limit: int, max_per_frame: int) -> None:
        self.limit = limit
        self.max_per_frame = max_per_frame
        self.queue: deque[bytes | _Chunk] = deque()
        self.pending_ticks = 0
        self.conflated = 0
        self.sent_ticks = 0
        self.instruments: frozenset[str] = frozenset()
        self._wake = anyio.Event()
        self.closed = False

    def control(self, frame: bytes) -> None:
        """Queue a control frame (subscribed, snapshot, error...)."""
        self.queue.append(frame)
        self._wake.set()

    def push(self, frames: list[bytes], items: list[Item]) -> None:
        """Queue a shared tick frame; conflate when the client lags past the limit."""
        lagging = self.pending_ticks > 0
        self.queue.append(_Chunk(frames, items))
        self.pending_ticks += len(items)
        if lagging and self.pending_ticks > self.limit:
            self._conflate()
        self._wake.set()

    def _conflate(self) -> None:
        latest: dict[str, bytes] = {}
        kept: deque[bytes | _Chunk] = deque()
        total = 0
        for entry in self.queue:
            if isinstance(entry, _Chunk):
                total += len(entry.items)
                for inst, data in entry.items:
                    latest.pop(inst, None)
                    latest[inst] = data
            else:
                kept.append(entry)
        items = list(latest.items())
        kept.append(_Chunk(None, items))
        self.conflated += total - len(items)
        self.pending_ticks = len(items)
        self.queue = kept

    async def wait(self) -> None:
        """Wait until something is queued."""
        if not self.queue:
            await self._wake.wait()
        self._wake = anyio.Event()

    def take(self) -> list[bytes]:
        """Return every queued frame, in order, and empty the outbox."""
        out: list[bytes] = []
        for entry in self.queue:
            if isinstance(entry, _Chunk):
                if entry.frames is not None:
                    out.extend(entry.frames)
                else:
                    n = self.max_per_frame
                    for i in range(0, len(entry.items), n):
                        out.append(ticks_frame(d for _, d in entry.items[i:i + n]))
                self.sent_ticks += len(entry.items)
            else:
                out.append(entry)
        self.queue.clear()
        self.pending_ticks = 0
        return out


class Fanout:
    """Routes tick batches to the outboxes of the clients that want them."""

    def __init__(self, max_per_frame: int = 1000) -> None:
        self.max_per_frame = max_per_frame
        # subscription set -> clients having exactly that set
        self._groups: dict[frozenset[str], set[ClientOutbox]] = {}
        # instrument -> subscription sets containing it
        self._by_instrument: dict[str, set[frozenset[str]]] = {}
        self.encode: Callable[[Tick], bytes] = encode
        self.published = 0

    @property
    def clients(self) -> int:
        """Number of clients with at least one subscription."""
        return sum(len(c) for c in self._groups.values())

    def set_instruments(self, client: ClientOutbox, instruments: frozenset[str]) -> None:
        """Change the set of instruments ``client`` receives."""
        old = client.instruments
        if old == instruments:
            return
        if old:
            group = self._groups.get(old)
            if group is not None:
                group.discard(client)
                if not group:
                    del self._groups[old]
                    for inst in old:
                        sigs = self._by_instrument.get(inst)
                        if sigs is not None:
                            sigs.discard(old)
                            if not sigs:
                                del self._by_instrument[inst]
        client.instruments = instruments
        if instruments:
            group = self._groups.get(instruments)
            if group is None:
                group = self._groups[instruments] = set()
                for inst in instruments:
                    self._by_instrument.setdefault(inst, set()).add(instruments)
            group.add(client)

    def publish(self, batch: list[Tick]) -> None:
        """Queue ``batch`` for every client that wants some of it (never blocks)."""
        by_instrument = self._by_instrument
        if not by_instrument:
            return
        enc = self.encode
        per_sig: dict[frozenset[str], list[Item]] = {}
        for tick in batch:
            sigs = by_instrument.get(tick.instrument)
            if not sigs:
                continue
            item = (tick.instrument, enc(tick))
            for sig in sigs:
                lst = per_sig.get(sig)
                if lst is None:
                    per_sig[sig] = [item]
                else:
                    lst.append(item)
        n = self.max_per_frame
        for sig, items in per_sig.items():
            frames = [ticks_frame(d for _, d in items[i:i + n]) for i in range(0, len(items), n)]
            for client in self._groups[sig]:
                client.push(frames, items)
            self.published += len(items)
