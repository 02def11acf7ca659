"""
The in-memory tick store: the fallback when no Redis is configured.

Keeps, per instrument, the latest tick, a bounded history of ticks and a
bounded list of closed one-minute bars. Nothing survives a restart.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from mdgate._latest import LatestTicks
from mdgate._model import Bar, Tick, now_ms
from mdgate.hookspecs import hookimpl
from mdgate.plugins.stores.bars import BarBuilder, aggregate_bars
from mdgate.plugins.stores.protocol import BAR_INTERVALS

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from mdgate._config import Settings

HISTORY_PER_INSTRUMENT = 10_000
BARS_PER_INSTRUMENT = 10_000


class MemoryStore:
    """Latest tick, bounded tick history and one-minute bars, in process memory."""

    kind = "memory"

    def __init__(self, history: int = HISTORY_PER_INSTRUMENT, bars: int = BARS_PER_INSTRUMENT) -> None:
        self._history_len = history
        self._bars_len = bars
        self._latest = LatestTicks()
        self._history: dict[str, deque[Tick]] = {}
        self._bars: dict[str, deque[Bar]] = {}
        self._builder = BarBuilder()
        self.written = 0

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Close bars once their minute is over (every second) until cancelled."""
        task_status.started()
        while True:
            await anyio.sleep(1.0)
            for bar in self._builder.flush(now_ms()):
                self._add_bar(bar)

    def write(self, ticks: Sequence[Tick]) -> None:
        """Keep the ticks (never blocks)."""
        self._latest.advance(ticks)
        history = self._history
        for t in ticks:
            h = history.get(t.instrument)
            if h is None:
                h = history[t.instrument] = deque(maxlen=self._history_len)
            h.append(t)
            bar = self._builder.add(t)
            if bar is not None:
                self._add_bar(bar)
        self.written += len(ticks)

    def _add_bar(self, bar: Bar) -> bool:
        """Keep ``bar`` in minute order unless its minute has a bar already (that one wins)."""
        d = self._bars.get(bar.instrument)
        if d is None:
            d = self._bars[bar.instrument] = deque(maxlen=self._bars_len)
        if not d or d[-1].start < bar.start:
            d.append(bar)
            return True
        i = bisect.bisect_left(d, bar.start, key=_start)
        if d[i].start == bar.start or (i == 0 and len(d) == d.maxlen):
            return False  # taken (as in Redis: a duplicate), or older than all a full deque keeps
        if len(d) == d.maxlen:
            d.popleft()
            i -= 1
        d.insert(i, bar)
        return True

    async def merge_bars(self, instrument: str, bars: Sequence[Bar]) -> int:
        """Insert backfilled one-minute bars for minutes that have no bar yet; return how many were added."""
        added = 0
        for bar in sorted(bars, key=_start):
            if bar.start % 60_000 == 0 and bar.start >= 0:
                added += self._add_bar(msgspec.structs.replace(bar, instrument=instrument))
        return added

    async def ticks_after(
        self, instrument: str, after: int, upto: int, limit: int,
    ) -> tuple[list[Tick], bool]:
        """
        Return the kept ticks with ``after < seq <= upto`` (the newest ``limit`` at most),
        oldest first, and whether they reach back to ``after + 1``.
        """
        if upto <= after:
            return [], True
        out: list[Tick] = []
        reached = False
        for t in reversed(self._history.get(instrument, ())):
            seq = t.seq or 0
            if seq > upto:
                continue
            if seq <= after:
                reached = True
                break
            out.append(t)
            if len(out) == limit:
                break
        out.reverse()
        return out, reached or (bool(out) and out[0].seq == after + 1)

    async def settled(self, timeout: float) -> bool:
        """Written ticks are kept at once: always settled."""
        return True

    async def latest(self, instruments: Sequence[str]) -> dict[str, Tick]:
        """Return the latest tick of each instrument that has one."""
        return {i: t for i in instruments if (t := self._latest.get(i)) is not None}

    async def history(
        self, instrument: str, *, since_ms: int | None = None, until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Tick]:
        """Return kept ticks of ``instrument`` with ``since_ms <= ts <= until_ms``."""
        ticks = [
            t for t in self._history.get(instrument, ())
            if (since_ms is None or t.ts >= since_ms) and (until_ms is None or t.ts <= until_ms)
        ]
        return ticks[-limit:]

    async def bars(
        self, instrument: str, interval: str = "1m", *, since_ms: int | None = None,
        until_ms: int | None = None, limit: int = 1000,
    ) -> list[Bar]:
        """Return closed bars, aggregating 1m bars for 5m/15m."""
        minute = [
            b for b in self._bars.get(instrument, ())
            if (since_ms is None or b.start >= since_ms) and (until_ms is None or b.start <= until_ms)
        ]
        size = BAR_INTERVALS[interval] * 1000
        out = minute if size == 60_000 else aggregate_bars(minute, size)
        return out[-limit:]

    def status(self) -> dict[str, Any]:
        """Memory never goes down and never buffers."""
        return {"kind": self.kind, "state": "ok", "buffered": 0, "dropped": 0,
                "instruments": len(self._latest)}

    async def aclose(self) -> None:
        """Nothing to flush."""


def _start(bar: Bar) -> int:
    return bar.start


@hookimpl(trylast=True)
def mdgate_store(settings: Settings) -> MemoryStore:
    """The fallback store: always available."""
    return MemoryStore()
