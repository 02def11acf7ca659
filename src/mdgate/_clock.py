"""
Time for the connection runtime's policies (backoff, stall, auth retry,
failover, fail-back, linger).

:class:`Clock` reads ``time.monotonic`` and waits with anyio: what the daemon
uses. :class:`ManualClock` stands still until a test moves it with
:meth:`~ManualClock.advance`, firing every wait that falls due on the way, in
order, so that time-based rules are tested exactly, without sleeping and
hoping.

Every wait of the policies goes through :meth:`Clock.sleep` or
:meth:`Clock.wait`; the tick hot path only reads :attr:`Clock.now` (bound
once per connection, ``time.monotonic`` itself in production).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["MONOTONIC", "Clock", "ManualClock"]


class Clock:
    """Monotonic seconds, and waits measured in them (the real clock)."""

    def __init__(self) -> None:
        #: Current time in seconds (``time.monotonic``: a builtin, cheap per frame).
        self.now: Callable[[], float] = time.monotonic

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        await anyio.sleep(seconds)

    async def wait(self, until: Callable[[], Awaitable[Any]], timeout: float | None) -> bool:
        """
        Await ``until()`` for at most ``timeout`` seconds (``None``: no limit).

        Returns:
            True when ``until()`` finished, False when the time ran out first.
        """
        with anyio.move_on_after(timeout):
            await until()
            return True
        return False


#: The daemon's clock.
MONOTONIC = Clock()


class ManualClock(Clock):
    """
    A clock for tests: time moves only in :meth:`advance`.

    Args:
        start: the initial reading of :attr:`now`.
        settle: event-loop passes given to the woken tasks after each step of
            :meth:`advance` (enough for them to run until they wait again).
    """

    def __init__(self, start: float = 1000.0, *, settle: int = 30) -> None:
        super().__init__()
        self.time = start
        self.now = self._now
        self.settle_passes = settle
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        #: Every ``sleep``/``wait`` duration asked for, in order (for assertions).
        self.requested: list[float] = []

    def _now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`advance` has moved the clock ``seconds`` on."""
        self.requested.append(seconds)
        event = anyio.Event()
        heapq.heappush(self._timers, (self.time + max(seconds, 0.0), next(self._seq), event))
        await event.wait()

    async def wait(self, until: Callable[[], Awaitable[Any]], timeout: float | None) -> bool:
        """Await ``until()`` for at most ``timeout`` seconds of this clock."""
        if timeout is None:
            self.requested.append(float("inf"))
            await until()
            return True
        finished = False
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                nonlocal finished
                await until()
                finished = True
                tg.cancel_scope.cancel()

            tg.start_soon(waiter)
            await self.sleep(timeout)
            tg.cancel_scope.cancel()
        return finished

    @property
    def pending(self) -> int:
        """Number of waits not yet due."""
        return len(self._timers)

    async def settle(self) -> None:
        """Let woken tasks run until they wait again (a fixed number of loop passes)."""
        for _ in range(self.settle_passes):
            await anyio.lowlevel.checkpoint()

    async def advance(self, seconds: float) -> None:
        """
        Move the clock ``seconds`` on, firing every wait that falls due, in
        order of due time, and letting the woken tasks run after each one.
        """
        target = self.time + seconds
        await self.settle()
        for _ in range(1_000_000):
            if not self._timers or self._timers[0][0] > target:
                break
            due, _, event = heapq.heappop(self._timers)
            self.time = max(self.time, due)
            event.set()
            await self.settle()
        else:  # pragma: no cover - a task re-arming a zero wait for ever
            raise RuntimeError("ManualClock.advance: waits keep falling due")
        self.time = target
        await self.settle()
