"""
Automatic backfill: after a gap, the missing one-minute bars from a provider's REST API.

:class:`Backfiller` listens to the :class:`~mdgate._gaps.GapDesk`. The listener
only enqueues (a bounded queue: past ``[backfill] max_pending`` the oldest gap
is dropped, counted and announced ``filled: false``, reason ``dropped``); the
work runs in :meth:`Backfiller.run`, a task of its own, never on the tick path:

1. wait until the minute holding the gap's end has closed, plus ``delay``
   seconds (the provider's REST API serves closed minutes only);
2. ask the first route of the instrument whose provider can backfill
   (``mdgate_backfill``) for ``[minute floor of from_ts, to_ts]``, at most
   ``max_window`` seconds of it, under a token bucket per provider (``rate``
   requests/s, ``burst`` back to back) and a ``timeout``;
3. merge the bars of closed minutes into the store (``merge_bars``: only
   minutes without a bar; live bars win);
4. announce ``{"type": "gap_filled", ...}`` to the instrument's clients and
   keep the outcome in the store (:meth:`~mdgate._gaps.GapDesk.filled`).

Gaps of reason ``reconnect``, ``stall`` and ``failover`` are backfilled.
``store`` gaps are not (the bars of those minutes were built in memory from
every tick; the lost ticks cannot come back as bars) and ``conflated`` gaps
are one slow client's, not a hole in the stream. Every failure (no route,
no provider that can backfill, a provider or plugin error, a timeout, the
store down) ends as ``filled: false`` with its ``reason``; nothing raises
into the daemon. Waits go through an injectable :class:`~mdgate._clock.Clock`
and wall clock, so tests control time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio
import structlog

from mdgate._clock import MONOTONIC, Clock
from mdgate._config import BackfillSettings
from mdgate._errors import MdgateError, PluginError, RateLimitedError, StoreUnavailable
from mdgate._gaps import Gap
from mdgate._model import Bar, now_ms
from mdgate._providers.faults import PluginFaults
from mdgate._ratelog import EveryLog
from mdgate._routing.table import Route

__all__ = ["BACKFILLED_REASONS", "MINUTE_MS", "Backfiller", "TokenBucket"]

log = structlog.get_logger(__name__)

MINUTE_MS: Final = 60_000
#: Gap reasons that are backfilled.
BACKFILLED_REASONS: Final = frozenset({"reconnect", "stall", "failover"})


class Ask(Protocol):
    """``mdgate._providers.calls.backfill`` with the registry bound: an awaitable list of bars, or None."""

    def __call__(self, provider: str, *, config: Any, instrument: str, code: str, start_ms: int,
                 end_ms: int) -> Awaitable[list[Bar]] | None: ...


class TokenBucket:
    """
    ``rate`` requests per second, up to ``burst`` back to back, on ``clock``.

    :meth:`reserve` takes a token and returns the seconds to wait before
    using it (a caller that must wait holds its place: tokens may go below 0).
    """

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self._stamp = clock.now()

    def reserve(self) -> float:
        """Take one token; return how long to wait before the request may go."""
        now = self.clock.now()
        self.tokens = min(float(self.burst), self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self) -> None:
        """Wait for a token."""
        wait = self.reserve()
        if wait > 0:
            await self.clock.sleep(wait)


@dataclass(slots=True)
class _Job:
    instrument: str
    from_ts: int
    to_ts: int


class Unfilled(Exception):
    """Why a gap stays unfilled: ``reason`` (a short code) and ``error`` (the detail)."""

    def __init__(self, reason: str, error: str, provider: str | None = None) -> None:
        error = error if len(error) <= 300 else error[:297] + "..."  # bounded, as every fault text
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.provider = provider


class Backfiller:
    """
    Backfills gaps in the background (see the module docstring).

    Args:
        settings: the ``[backfill]`` settings (replace :attr:`settings` to apply a reload).
        routes: the routes of an instrument, best first (``Router.resolve``).
        config: the parsed configuration of a provider, or None (disabled).
        ask: the contained ``mdgate_backfill`` call.
        store: the store; bars go to its optional ``merge_bars(instrument, bars) -> int``.
        done: called with every outcome (``GapDesk.filled``): instrument, from_ts, to_ts,
            filled, and extras.
        faults: where a store plugin's fault in ``merge_bars`` is recorded...
        store_plugin: ...under this name.
        clock: waits (settle delay, rate limit, timeout).
        wall: the wall clock, epoch ms (which minutes have closed).
    """

    def __init__(
        self, settings: BackfillSettings, *, routes: Callable[[str], Sequence[Route]],
        config: Callable[[str], object | None], ask: Ask, store: object,
        done: Callable[..., None], faults: PluginFaults, store_plugin: str,
        clock: Clock = MONOTONIC, wall: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.config = config
        self.ask = ask
        self.store = store
        self.done = done
        self.faults = faults
        self.store_plugin = store_plugin
        self.clock = clock
        self.wall = wall
        self._queue: deque[_Job] = deque()
        self._wake = anyio.Event()
        self._buckets: dict[str, TokenBucket] = {}
        self._busy = False
        self._log = EveryLog(60.0)
        #: Counters for ``/status`` ``routing.backfill``.
        self.counts = {"requested": 0, "filled": 0, "unfilled": 0, "dropped": 0, "bars": 0,
                       "open_bars_skipped": 0}
        #: Unfilled gaps by reason.
        self.reasons: dict[str, int] = {}

    # -- the listener (called by the GapDesk: enqueue only) -------------------

    def __call__(self, gap: Gap) -> None:
        """Queue ``gap`` for backfill (a GapDesk listener; never blocks, never raises)."""
        if not self.settings.enabled or gap.get("reason") not in BACKFILLED_REASONS:
            return
        try:
            job = _Job(str(gap["instrument"]), int(gap["from_ts"]), int(gap["to_ts"]))
        except (KeyError, TypeError, ValueError):
            return
        self.counts["requested"] += 1
        queue = self._queue
        if len(queue) >= self.settings.max_pending:
            old = queue.popleft()
            self.counts["dropped"] += 1
            self._log.log("dropped", log.warning, "backfill_queue_full",
                          max_pending=self.settings.max_pending)
            self._unfilled(old, Unfilled("dropped", f"more than {self.settings.max_pending} gaps "
                                                    "waited for backfill ([backfill] max_pending)"))
        queue.append(job)
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """``/status`` ``routing.backfill``: counters, gaps pending and unfilled reasons."""
        return {"enabled": self.settings.enabled, **self.counts,
                "pending": len(self._queue) + self._busy, "unfilled_reasons": dict(self.reasons)}

    # -- the task --------------------------------------------------------------

    async def run(self) -> None:
        """Backfill queued gaps, oldest first, until cancelled."""
        while True:
            if not self._queue:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            job = self._queue.popleft()
            self._busy = True
            try:
                await self._settle(job)
                await self._one(job)
            finally:
                self._busy = False

    async def _settle(self, job: _Job) -> None:
        """Wait until the minute holding the gap's end has closed, plus ``delay``."""
        due = job.to_ts - job.to_ts % MINUTE_MS + MINUTE_MS + int(self.settings.delay * 1000)
        wait = (due - self.wall()) / 1000
        if wait > 0:
            await self.clock.sleep(wait)

    async def _one(self, job: _Job) -> None:
        try:
            provider, bars, clipped = await self._fetch(job)
            added = await self._merge(job.instrument, bars)
        except Unfilled as why:
            self._unfilled(job, why)
            return
        except Exception as exc:  # a bug here must not stop the backfill task, nor the daemon
            log.exception("backfill_failed", instrument=job.instrument)
            self._unfilled(job, Unfilled("error", self.faults.describe(exc)))
            return
        self.counts["bars"] += added
        extra: dict[str, Any] = {"provider": provider, "bars": added}
        if clipped is not None:
            text = f"longer than [backfill] max_window: only from {clipped} on was backfilled"
            self._unfilled(job, Unfilled("too_long", text, provider), bars=added)
            return
        self.counts["filled"] += 1
        log.debug("gap_backfilled", instrument=job.instrument, provider=provider, bars=added)
        self.done(job.instrument, job.from_ts, job.to_ts, True, **extra)

    def _unfilled(self, job: _Job, why: Unfilled, **extra: Any) -> None:
        self.counts["unfilled"] += 1
        self.reasons[why.reason] = self.reasons.get(why.reason, 0) + 1
        if why.provider is not None:
            extra["provider"] = why.provider
        self._log.log(why.reason, log.warning, "gap_unfilled", instrument=job.instrument,
                      reason=why.reason, error=why.error)
        self.done(job.instrument, job.from_ts, job.to_ts, False, reason=why.reason, error=why.error, **extra)

    def _window(self, job: _Job) -> tuple[int, int, int | None]:
        """``[start, end)`` to ask for, and the clipped start when the gap is longer than ``max_window``."""
        start = job.from_ts - job.from_ts % MINUTE_MS
        end = max(job.to_ts, start) + 1
        longest = int(self.settings.max_window * 1000)
        if end - start > longest:
            start = end - longest
            start += -start % MINUTE_MS  # whole minutes, within the window
            return start, end, start
        return start, end, None

    def _candidates(self, job: _Job) -> Sequence[Route]:
        try:
            return self.routes(job.instrument)
        except MdgateError as exc:
            raise Unfilled("no_route", str(exc)) from None

    async def _fetch(self, job: _Job) -> tuple[str, list[Bar], int | None]:
        start, end, clipped = self._window(job)
        routes = self._candidates(job)
        for route in routes:
            config = self.config(route.provider)
            if config is None:
                continue
            try:
                pending = self.ask(route.provider, config=config, instrument=route.instrument,
                                   code=route.code, start_ms=start, end_ms=end)
            except PluginError as exc:
                raise Unfilled("plugin_fault", str(exc), route.provider) from None
            except MdgateError as exc:
                raise Unfilled("provider_error", str(exc), route.provider) from None
            if pending is None:
                continue
            bars = await self._await(route.provider, pending)
            return route.provider, bars, clipped
        names = ", ".join(r.provider for r in routes) or "none"
        raise Unfilled("no_backfill", f"no provider of {job.instrument} can backfill (candidates: {names})")

    async def _await(self, provider: str, pending: Awaitable[list[Bar]]) -> list[Bar]:
        """Await one provider request: rate-limited, bounded in time, errors as :class:`Unfilled`."""
        bucket = self._buckets.get(provider)
        s = self.settings
        if bucket is None or (bucket.rate, bucket.burst) != (s.rate, s.burst):
            bucket = self._buckets[provider] = TokenBucket(s.rate, s.burst, self.clock)
        got: list[list[Bar]] = []
        failed: list[Exception] = []

        async def request() -> None:
            try:
                got.append(await pending)
            except Exception as exc:  # raised below, outside the clock's wait (a task group in tests)
                failed.append(exc)

        try:
            await bucket.acquire()
            asked_at = self.wall()
            answered = await self.clock.wait(request, s.timeout)
            if failed:
                raise failed[0]
        except RateLimitedError as exc:
            raise Unfilled("rate_limited", str(exc), provider) from None
        except PluginError as exc:
            raise Unfilled("plugin_fault", str(exc), provider) from None
        except MdgateError as exc:
            raise Unfilled("provider_error", str(exc), provider) from None
        finally:
            close = getattr(pending, "close", None)  # never awaited (cancelled first): no warning
            if not got and not failed and callable(close):
                close()
        if not answered:
            raise Unfilled("timeout", f"{provider} did not answer within {s.timeout:g} s", provider)
        # a bar of a minute still open when the provider was asked is partial: it would
        # take the place of the live bar, so it is left out
        bars = [b for b in got[0] if b.start + MINUTE_MS <= asked_at]
        self.counts["open_bars_skipped"] += len(got[0]) - len(bars)
        return bars

    async def _merge(self, instrument: str, bars: list[Bar]) -> int:
        merge = getattr(self.store, "merge_bars", None)
        if not callable(merge):
            raise Unfilled("store_unsupported", "the store cannot merge bars (no merge_bars)")
        try:
            added = await merge(instrument, bars)
        except StoreUnavailable as exc:
            raise Unfilled("store_unavailable", str(exc)) from None
        except Exception as exc:  # a store plugin's bug
            self.faults.record(self.store_plugin, "store.merge_bars", exc)
            raise Unfilled("store_fault", self.faults.describe(exc)) from None
        if not isinstance(added, int):
            self.faults.record(self.store_plugin, "store.merge_bars", f"returned {type(added).__name__}, "
                                                                      "not an int")
            raise Unfilled("store_fault", "merge_bars returned no count")
        return added
