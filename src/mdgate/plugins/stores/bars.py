"""
One-minute OHLCV bars built from ticks (pure; used by every store).

A bar covers the minute ``[start, start + 60 000)`` of tick ``ts`` (exchange
time, epoch ms UTC). ``volume`` is the change in cumulative day volume when
the provider sends ``volume`` (a drop, i.e. a new trading day, restarts the
count from the new value), else the sum of trade ``size``; the first tick
ever seen for an instrument only sets the volume baseline. A bar is
*closed* when a tick of a later minute arrives, or by :meth:`BarBuilder.flush`
once wall-clock time is past the minute's end plus a grace period.

Late ticks (``ts`` before the open bar's minute) cannot change a bar that
is already final: they are counted in :attr:`BarBuilder.late` and touch no
bar and not the cumulative-volume baseline (they are still stored and
broadcast as ticks). With cumulative day volume nothing is lost: the next
in-order tick's volume change includes what the late one carried.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdgate._model import Bar, Tick

__all__ = ["MINUTE_MS", "BarBuilder", "aggregate_bars"]

MINUTE_MS = 60_000


@dataclass(slots=True)
class _Open:
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    count: int


class BarBuilder:
    """Builds closed one-minute bars per instrument from a stream of ticks."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._cum: dict[str, int] = {}
        #: Ticks whose minute had already closed.
        self.late = 0

    def add(self, tick: Tick) -> Bar | None:
        """Add one tick; return the bar it closed, if any."""
        name = tick.instrument
        start = tick.ts - tick.ts % MINUTE_MS
        bar = self._open.get(name)
        if bar is not None and start < bar.start:
            # late: the minute is final, and the tick's cumulative volume must not become
            # the baseline (a lower, older value would look like a new trading day)
            self.late += 1
            return None
        vol = 0
        if tick.volume is not None:
            last = self._cum.get(name)
            self._cum[name] = tick.volume
            if last is not None:
                vol = tick.volume - last if tick.volume >= last else tick.volume
        elif tick.size is not None:
            vol = tick.size
        closed: Bar | None = None
        if bar is not None:
            if start == bar.start:
                p = tick.price
                if p > bar.high:
                    bar.high = p
                if p < bar.low:
                    bar.low = p
                bar.close = p
                bar.volume += vol
                bar.count += 1
                return None
            closed = _close(name, bar)
        p = tick.price
        self._open[name] = _Open(start, p, p, p, p, vol, 1)
        return closed

    def flush(self, now_ms: int, grace_ms: int = 2_000) -> list[Bar]:
        """Close and return every open bar whose minute ended before ``now_ms - grace_ms``."""
        out: list[Bar] = []
        for name, bar in list(self._open.items()):
            if bar.start + MINUTE_MS + grace_ms <= now_ms:
                out.append(_close(name, bar))
                del self._open[name]
        return out

    def open_bars(self) -> list[Bar]:
        """Return the bars still open (not final), e.g. for shutdown."""
        return [_close(name, bar) for name, bar in self._open.items()]


def _close(name: str, b: _Open) -> Bar:
    return Bar(name, b.start, b.open, b.high, b.low, b.close, b.volume, b.count)


def aggregate_bars(bars: list[Bar], interval_ms: int) -> list[Bar]:
    """Aggregate time-ordered one-minute bars into bars of ``interval_ms``."""
    out: list[Bar] = []
    cur: Bar | None = None
    for b in bars:
        start = b.start - b.start % interval_ms
        if cur is not None and cur.start == start:
            cur = Bar(
                cur.instrument, start, cur.open, max(cur.high, b.high), min(cur.low, b.low),
                b.close, cur.volume + b.volume, cur.count + b.count,
            )
        else:
            if cur is not None:
                out.append(cur)
            cur = Bar(b.instrument, start, b.open, b.high, b.low, b.close, b.volume, b.count)
    if cur is not None:
        out.append(cur)
    return out
