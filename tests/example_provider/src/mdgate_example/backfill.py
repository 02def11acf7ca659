"""
One-minute backfill (to show the hook's shape).

The example feed keeps no history: a real provider would fetch its REST
bars here (in a worker thread if the client blocks). This one answers with
at most three flat bars at 0.0.
"""

from __future__ import annotations

from mdgate import Bar

__all__ = ["fetch_bars"]

_MINUTE_MS = 60_000


async def fetch_bars(instrument: str, start_ms: int, end_ms: int) -> list[Bar]:
    """Return up to three flat one-minute bars starting after ``start_ms``, before ``end_ms``."""
    first = start_ms - start_ms % _MINUTE_MS + _MINUTE_MS
    return [Bar(instrument, t, 0.0, 0.0, 0.0, 0.0, 0, 0) for t in range(first, end_ms, _MINUTE_MS)][:3]
