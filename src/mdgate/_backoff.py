"""
The one backoff policy of every retry loop: provider connections, the Redis
store's writer and feed reader, the PostgreSQL route source.

Capped exponential growth with full jitter: before retry ``n`` (counting
from 0 since the last success) the loop waits a uniformly random time in
``[floor, min(cap, initial * 2**n)]``. The exponent stops growing once the
ceiling has reached the cap, so the arithmetic never overflows, whatever the
number of attempts (a provider can be unreachable for days). Callers
:meth:`~Backoff.reset` after a success: the next failure starts again from
``initial``.
"""

from __future__ import annotations

import random as _random
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["Backoff"]

#: Highest exponent ever used: 2**64 times any sane ``initial`` is past any sane cap.
_MAX_EXPONENT: Final = 64


def _seconds(value: float) -> float:
    """``value`` as a usable number of seconds: NaN and negatives are 0, infinity the largest float."""
    value = float(value)
    if not value > 0.0:
        return 0.0
    return min(value, sys.float_info.max)


class Backoff:
    """
    Capped, fully jittered exponential backoff for one retry loop.

    Args:
        initial: ceiling of the first delay, in seconds.
        cap: the largest delay, in seconds (wins over ``initial`` when smaller).
        floor: the smallest delay, in seconds, for loops that must never spin
            (0 by default; wins over ``cap`` when larger).
        random: the jitter source, a callable returning floats in ``[0, 1)``
            (``random.random`` by default; tests inject their own).
    """

    __slots__ = ("_random", "attempts", "cap", "floor", "initial")

    def __init__(
        self, initial: float, cap: float, *, floor: float = 0.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.initial = _seconds(initial)
        self.cap = _seconds(cap)
        self.floor = _seconds(floor)
        self._random = random
        #: Failed attempts since the last :meth:`reset` (each got a delay from :meth:`next`).
        self.attempts = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay drawn before retry number ``attempt`` (0-based)."""
        grown = self.initial * float(1 << min(max(attempt, 0), _MAX_EXPONENT))
        return max(self.floor, min(self.cap, grown))

    def next(self) -> float:
        """Count one failed attempt and return the delay before the next one."""
        high = self.ceiling(self.attempts)
        self.attempts += 1
        return self.floor + (high - self.floor) * self._random()

    def hard(self) -> float:
        """
        Count one failed attempt and return a delay near the cap (half to all
        of it): for a provider that told us to slow down (rate limited).
        """
        self.attempts += 1
        return max(self.floor, self.cap * (0.5 + self._random() / 2))

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0
