"""
Market hours at run time: which markets are open now, and each served
instrument's state (``live``, ``stale``, ``closed``).

:class:`MarketHours` holds the :class:`~mdgate._calendar.Calendars` in use
(built-in tables, the config's ``[calendars]``, PostgreSQL's
``mdgate_calendar_sessions`` rows from the route source) and

* answers the provider sessions' stall watchdogs (``ProviderSession.market_open``):
  a connection whose instruments' markets are all closed never stalls;
* once a second (on the sessions' clock) looks at the latest tick of every
  served instrument and gives it a state: ``closed`` (its market is closed by
  the calendar), ``stale`` (its market open and no tick for ``stale_after``
  seconds, the silence counted from the latest of its last tick, its
  session's open, its subscription and the gateway's start) or ``live``.
  A move to ``stale`` is logged once (``instrument_stale``, saying whether
  other instruments on the same connection flow).

Nothing here runs per tick: the look is one pass over the served
instruments per second, comparing the pipeline's latest-tick table with
what it held a second before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from mdgate._calendar import ALWAYS_OPEN, CalendarOverride, Calendars, DaySession
from mdgate._clock import MONOTONIC, Clock
from mdgate._config import RuntimeSettings
from mdgate._latest import LatestTicks
from mdgate._providers.session import ProviderSession
from mdgate._routing.subscriptions import SubscriptionManager

__all__ = ["CLOSED", "LIVE", "STALE", "MarketHours"]

log = structlog.get_logger(__name__)

LIVE: Final = "live"
STALE: Final = "stale"
CLOSED: Final = "closed"
#: Transitions logged one by one per look; the rest are counted in one line.
MAX_LINES: Final = 20

#: Where an instrument is carried: (provider, connection index), or None while no provider has it.
Carrier = tuple[str, "int | None"] | None


class MarketHours:
    """
    The calendars in use and the instruments' states.

    Args:
        overrides: the config's ``[calendars]``.
        runtime: ``[runtime]`` (``stale_after``, ``stall_timeout``).
        sessions: the provider sessions (their ``market_open`` is set here).
        subs: the subscription manager (which instruments are served, by whom).
        latest: the pipeline's latest tick per instrument.
        clock: the sessions' clock (monotonic seconds).
        wall: Unix seconds, for the calendars (a test fakes both).
        step: seconds between two looks at the instruments.
    """

    def __init__(
        self, overrides: Mapping[str, CalendarOverride], runtime: RuntimeSettings,
        sessions: Mapping[str, ProviderSession], subs: SubscriptionManager, latest: LatestTicks, *,
        clock: Clock = MONOTONIC, wall: Callable[[], float] = time.time, step: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.sessions = sessions
        self.subs = subs
        self.latest = latest
        self.clock = clock
        self.wall = wall
        self.step = step
        self._overrides = overrides
        self._rows: tuple[DaySession, ...] = ()
        self.calendars = self._build()
        self.started = clock.now()
        #: instrument -> (the latest tick seen, when it was first seen: monotonic seconds)
        self._seen: dict[str, tuple[object, float]] = {}
        #: instrument -> its state at the last look; each stale one's seconds of silence; how many are stale.
        self.states: dict[str, str] = {}
        self.silent: dict[str, float] = {}
        self.stale = 0
        self._year = 0
        for session in sessions.values():
            session.market_open = self.market_open

    # -- calendars -----------------------------------------------------------------------------

    def _build(self) -> Calendars:
        cals = Calendars(self._overrides, self._rows)
        for problem in cals.problems:
            log.warning("calendar_problem", problem=problem)
        self._year = 0  # check the tables' coverage again
        return cals

    def apply(self, overrides: Mapping[str, CalendarOverride], runtime: RuntimeSettings) -> None:
        """Take a reloaded configuration's ``[calendars]`` and ``[runtime]``."""
        self.runtime = runtime
        if overrides != self._overrides:
            self._overrides = overrides
            self.calendars = self._build()
            log.info("calendars_reloaded", source="config", exchanges=sorted(overrides))

    def use_rows(self, rows: object) -> None:
        """Take the day overrides a route source read from PostgreSQL (checked: a plugin's answer)."""
        if not isinstance(rows, list | tuple) or not all(isinstance(r, DaySession) for r in rows):
            log.error("calendar_rows_rejected", using="the calendars in use",
                      error=f"expected a list of DaySession, got {type(rows).__name__}")
            return
        if tuple(rows) != self._rows:
            self._rows = tuple(rows)
            self.calendars = self._build()
            log.info("calendars_reloaded", source="database", rows=len(rows))

    def follow(self, source: object) -> None:
        """Have ``source`` (a route source that reads calendar rows: ``on_calendar``) hand its rows here."""
        if source is not None and hasattr(source, "on_calendar"):
            source.on_calendar = self.use_rows

    def _opened(self, exchange: str, at: float, now: float) -> float | None:
        """When ``exchange``'s current session began, on the monotonic clock; None while it is closed."""
        opened = self.calendars.open_since(exchange, at)
        if opened is None or opened == ALWAYS_OPEN:
            return opened
        return now - (at - opened)

    def market_open(self, instruments: Iterable[str]) -> float | None:
        """
        ``ProviderSession.market_open``: None when the market of every one of
        ``instruments`` is closed, else since when (monotonic seconds) the
        earliest-opened of the open ones has been open.
        """
        at, now = self.wall(), self.clock.now()
        best: float | None = None
        asked: set[str] = set()
        for name in instruments:
            exchange = name.partition(":")[0]
            if exchange in asked:
                continue
            asked.add(exchange)
            opened = self._opened(exchange, at, now)
            if opened is not None and (best is None or opened < best):
                best = opened
        return best

    # -- instrument states ---------------------------------------------------------------------

    def _carriers(self) -> dict[str, Carrier]:
        out: dict[str, Carrier] = {}
        for name, act in self.subs.active.items():
            cur = act.current
            session = None if cur is None else self.sessions.get(cur.provider)
            if cur is None or session is None:
                out[name] = None
                continue
            out[name] = (cur.provider, next((c.index for c in session.conns if cur.code in c.codes), None))
        return out

    def _stale_after(self, provider: str | None) -> float:
        rt = self.runtime
        session = None if provider is None else self.sessions.get(provider)
        own = session.stall_timeout if session is not None else None
        return rt.stale_after or own or rt.stall_timeout

    def look(self) -> None:
        """Give every served instrument its state now, and log the moves to ``stale``."""
        now, at = self.clock.now(), self.wall()
        self._check_coverage(at)
        table = self.latest.table
        carriers = self._carriers()
        opened: dict[str, float | None] = {}
        limits: dict[str | None, float] = {}  # per provider, worked out once per look
        states: dict[str, str] = {}
        silent: dict[str, float] = {}
        fresh_seen = (None, now)  # one tuple for every instrument subscribed now that has no tick yet
        for name, carrier in carriers.items():
            tick = table.get(name)
            seen = self._seen.get(name)
            if seen is None or seen[0] is not tick:  # subscribed now, or a new tick since the last look
                seen = self._seen[name] = fresh_seen if tick is None else (tick, now)
            exchange = name.partition(":")[0]
            if exchange not in opened:
                opened[exchange] = self._opened(exchange, at, now)
            since = opened[exchange]
            provider = None if carrier is None else carrier[0]
            if provider not in limits:
                limits[provider] = self._stale_after(provider)
            if since is None:  # closed by the calendar: live only while ticks still come (a replay,
                # extended hours, a calendar behind the exchange), never stale
                fresh = tick is not None and at * 1000 - tick.recv_ts <= limits[provider] * 1000
                states[name] = LIVE if fresh else CLOSED
                continue
            quiet = now - max(seen[1], since, self.started)
            if quiet > limits[provider]:
                states[name] = STALE
                silent[name] = quiet  # kept for the stale ones only: they are the ones shown
            else:
                states[name] = LIVE
        for name in self._seen.keys() - carriers.keys():
            del self._seen[name]
        before, self.states, self.silent = self.states, states, silent
        self.stale = sum(1 for s in states.values() if s == STALE)
        self._log_moves(before, carriers)

    def _log_moves(self, before: Mapping[str, str], carriers: Mapping[str, Carrier]) -> None:
        states = self.states
        moved = [n for n, s in states.items() if s == STALE and before.get(n) != STALE]
        flowing: dict[Carrier, int] = {}
        for name, state in states.items():
            if state == LIVE and carriers.get(name) is not None:
                flowing[carriers[name]] = flowing.get(carriers[name], 0) + 1
        for name in moved[:MAX_LINES]:
            carrier = carriers.get(name)
            others = flowing.get(carrier, 0) if carrier is not None else 0
            log.warning("instrument_stale", instrument=name, provider=carrier[0] if carrier else None,
                        connection=carrier[1] if carrier else None, silent_s=round(self.silent[name], 1),
                        others_flowing=others, connection_flows=others > 0)
        if len(moved) > MAX_LINES:
            log.warning("instruments_stale", count=len(moved), logged=MAX_LINES)
        back = [n for n, s in states.items() if s != STALE and before.get(n) == STALE]
        for name in back[:MAX_LINES]:
            log.info("instrument_resumed", instrument=name, state=states[name])

    def _check_coverage(self, at: float) -> None:
        year = datetime.fromtimestamp(at, UTC).year
        if year != self._year:
            self._year = year
            for exchange in self.calendars.outdated(year):
                log.warning("calendar_table_outdated", exchange=exchange, year=year,
                            effect="its holidays that year are unknown: every weekday counts as open",
                            fix=f"list them in [calendars.{exchange}] holidays or mdgate_calendar_sessions")

    async def run(self) -> None:
        """Look at the instruments every ``step`` seconds until cancelled (a failure is logged, not fatal)."""
        while True:
            await self.clock.sleep(self.step)
            try:
                self.look()
            except Exception as exc:  # a bug here must not stop the gateway
                log.exception("market_hours_failed", error=f"{type(exc).__name__}: {exc}")

    # -- status ----------------------------------------------------------------------------------

    def annotate(self, instruments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """
        Add ``state`` (and ``silent_s`` while stale) to ``/status?instruments=1``'s
        entries, as the last look (at most ``step`` seconds ago) found them.
        """
        for name, entry in instruments.items():
            state = self.states.get(name, LIVE)
            entry["state"] = state
            if state == STALE:
                entry["silent_s"] = round(self.silent[name], 1)
        return instruments

    def status(self) -> dict[str, Any]:
        """For ``/status`` ``routing``: ``stale`` (instruments stale now) and each market open or closed."""
        now = self.calendars.status(self.wall())
        markets = {x: "open" if m["open"] else "closed" for x, m in now.items()}
        return {"stale": self.stale, "markets": markets}
