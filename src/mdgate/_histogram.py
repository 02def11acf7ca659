"""
A fixed-bucket histogram cheap enough for the tick path.

``prometheus_client``'s own ``Histogram.observe`` takes a lock and walks its
buckets (about a microsecond); these count with one ``bisect`` and two
additions, in the unit the caller already has (integer milliseconds for tick
times), and are turned into Prometheus histograms (seconds) only when
``/metrics`` is scraped (:mod:`mdgate._metrics`). Single-threaded by design:
everything that observes runs on the gateway's event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["MS_BOUNDS", "SECONDS_BOUNDS", "Histogram"]

#: Bucket upper bounds for tick latencies and ages, in milliseconds.
MS_BOUNDS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
#: Bucket upper bounds for store writes, in seconds.
SECONDS_BOUNDS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations per bucket (``value <= bound``; the last bucket is +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "scale", "total")

    def __init__(self, bounds: Sequence[float], *, scale: float = 1.0) -> None:
        """
        Args:
            bounds: increasing upper bounds, in the unit observations come in.
            scale: what turns that unit into seconds on export (0.001 for milliseconds).
        """
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total: float = 0
        self.scale = scale

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: Iterable[float]) -> None:
        """Count several observations (one call per batch)."""
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for v in values:
            counts[bisect_left(bounds, v)] += 1
            total += v
        self.total += total

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs in seconds, ending with ``+Inf``, as Prometheus wants them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_le(bound * self.scale), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out

    def seconds_sum(self) -> float:
        """The sum of observations, in seconds."""
        return self.total * self.scale


def _le(value: float) -> str:
    return repr(round(value, 6))
