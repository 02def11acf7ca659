"""
Per-instrument sequence numbers: every tick the gateway hands on carries ``seq``.

``seq`` is one more than the instrument's previous tick, so that a client that
sees a number skipped knows it missed a tick. Numbers continue across restarts
where the store keeps them (Redis: the ``seq`` field of the instrument stream's
last entry): the first time this process sees an instrument, its ticks are held
back (in order, bounded) while :class:`SeqBook` asks the store for the last
number, and released, numbered, once it answered. A store that keeps nothing
(memory) starts every instrument at 1 at once.

The pipeline calls :meth:`SeqBook.stamp` once per batch (one dict lookup and
one slot write per tick); the asking runs in :meth:`SeqBook.run`, its own task,
never on the tick path. See docs/client-protocol.md#sequence-numbers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

import anyio
import structlog

from mdgate._backoff import Backoff
from mdgate._model import Tick

__all__ = ["HELD_MAX", "SEED_WAIT", "SeqBook"]

log = structlog.get_logger(__name__)

#: Ticks held per instrument while its last number is asked for (the oldest go past it).
HELD_MAX: Final = 10_000
#: Seconds an instrument's ticks wait for the store's answer before numbering starts
#: over at 1 (the store unreachable: liveness wins over continuity, and it is logged).
SEED_WAIT: Final = 5.0

#: Writes ``seq`` into a (frozen) tick: the gateway numbers ticks before anyone else holds them.
_set_seq: Final = Tick.__dict__["seq"].__set__

#: ``seeder(instruments) -> {instrument: last seq}`` (absent: nothing stored yet). Raises when
#: the store cannot answer.
Seeder = Callable[[list[str]], Awaitable[dict[str, int]]]


class SeqBook:
    """
    Numbers ticks per instrument, continuing from the store's last number.

    Args:
        seeder: asks the store for the last numbers; ``None``: every instrument starts at 1.
        wake: called when held ticks can be released (the pipeline's queue ``nudge``).
        wait: seconds to hold an instrument's ticks before giving up on the store.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, seeder: Seeder | None = None, wake: Callable[[], None] | None = None, *,
                 wait: float = SEED_WAIT, clock: Callable[[], float] | None = None) -> None:
        self._seeder = seeder
        self._wake = wake
        self._wait = wait
        self._clock = clock or anyio.current_time
        #: instrument -> the last number given.
        self.last: dict[str, int] = {}
        #: instrument -> ticks waiting for its first number, in arrival order.
        self._held: dict[str, deque[Tick]] = {}
        #: instruments whose first number is known but whose held ticks are not released yet.
        self._ready: list[str] = []
        self._asked = anyio.Event()
        #: Held ticks pushed out by newer ones (a gap: the store answered too slowly).
        self.dropped = 0
        #: Instruments numbered from 1 because the store did not answer within ``wait``.
        self.unseeded = 0

    def stamp(self, batch: Sequence[Tick]) -> list[Tick]:
        """
        Number ``batch`` in place and return the ticks to hand on now, in order.

        Ticks of an instrument whose last number is still being asked for are
        held back (and returned, numbered, by a later call, before that
        instrument's newer ticks).
        """
        out: list[Tick] = []
        if self._ready:
            self._release(out)
        last = self.last
        for t in batch:
            inst = t.instrument
            n = last.get(inst)
            if n is None:
                if self._seeder is None:
                    n = 0
                else:
                    self._hold(inst, t)
                    continue
            n += 1
            last[inst] = n
            _set_seq(t, n)
            out.append(t)
        return out

    def _hold(self, inst: str, t: Tick) -> None:
        q = self._held.get(inst)
        if q is None:
            q = self._held[inst] = deque(maxlen=HELD_MAX)
            self._asked.set()
        elif len(q) == HELD_MAX:
            self.dropped += 1
        q.append(t)

    def _release(self, out: list[Tick]) -> None:
        last = self.last
        for inst in self._ready:
            n = last[inst]
            for t in self._held.pop(inst, ()):
                n += 1
                _set_seq(t, n)
                out.append(t)
            last[inst] = n
        self._ready = []

    def _seeded(self, numbers: dict[str, int], names: list[str]) -> None:
        for inst in names:
            if inst in self._held and inst not in self.last:
                self.last[inst] = max(0, int(numbers.get(inst, 0)))
                self._ready.append(inst)
        if self._ready and self._wake is not None:
            self._wake()

    def forget(self, instruments: Iterable[str]) -> None:
        """
        Drop the numbers of ``instruments``: their next ticks wait for the store's last number
        again (another instance may have numbered them meanwhile: a slot that moved).
        """
        if self._seeder is None:
            return  # no store to ask: this book is the only numbering there is
        for inst in instruments:
            self.last.pop(inst, None)

    def status(self) -> dict[str, int]:
        """``/status`` ``pipeline.seq``: instruments waiting for a number, ticks dropped, restarts at 1."""
        return {"waiting": len(self.pending()), "held_dropped": self.dropped, "unseeded": self.unseeded}

    def pending(self) -> list[str]:
        """Instruments whose ticks wait for the store's last number."""
        return [i for i in self._held if i not in self.last]

    async def run(self) -> None:
        """Ask the store for the last numbers of new instruments, until cancelled."""
        if self._seeder is None:
            await anyio.sleep_forever()
        backoff = Backoff(0.05, 1.0)
        since: dict[str, float] = {}
        while True:
            await self._asked.wait()
            self._asked = anyio.Event()
            names = self.pending()
            if not names:
                continue
            now = self._clock()
            for inst in names:
                since.setdefault(inst, now)
            try:
                assert self._seeder is not None
                numbers = await self._seeder(names)
            except Exception as exc:  # the store is down (or its plugin failed): wait, then give up
                late = [i for i in names if self._clock() - since[i] >= self._wait]
                if late:
                    self.unseeded += len(late)
                    log.error("seq_unseeded", instruments=len(late), first=late[0], error=repr(exc)[:200],
                              consequence="numbering starts over at 1 for these instruments")
                    self._seeded({}, late)
                    for inst in late:
                        since.pop(inst, None)
                await anyio.sleep(backoff.next())
                self._asked.set()
                continue
            backoff.reset()
            for inst in names:
                since.pop(inst, None)
            self._seeded(numbers, names)
