"""
The one rate limit of repeated log lines: at most one line per key per
``interval`` seconds, the next one carrying how many were held back
(``suppressed``). Used wherever something can repeat at the rate of the
network: provider disconnects, decode errors, plugin faults, refused clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["EveryLog"]


class EveryLog:
    """Log an event at most once per ``interval`` seconds per key, with the count suppressed."""

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}

    def __call__(self, key: Hashable, emit: Callable[[int], None]) -> bool:
        """
        Call ``emit(suppressed)`` unless ``key`` was logged less than ``interval``
        ago; ``suppressed`` counts the calls held back since. Returns whether it did.
        """
        now = self._clock()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last >= self.interval:
            self._last[key] = (now, 0)
            emit(suppressed)
            return True
        self._last[key] = (last, suppressed + 1)
        return False

    def log(self, key: Hashable, method: Callable[..., Any], event: str, **fields: Any) -> None:
        """Call ``method(event, suppressed=n, **fields)`` (a logger method) at most once per interval."""
        self(key, lambda n: method(event, suppressed=n, **fields))
