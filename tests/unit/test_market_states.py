"""
Instrument states (mdgate._market.MarketHours) against a ManualClock and a
wall clock derived from it: live / stale / closed, when silence starts,
``stale_after``, the log lines (once per move, capped), faults contained.
"""

from __future__ import annotations

from datetime import date, datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from structlog.testing import capture_logs

from mdgate._calendar import DaySession, parse_calendars
from mdgate._clock import ManualClock
from mdgate._config import RuntimeSettings
from mdgate._latest import LatestTicks
from mdgate._market import MAX_LINES, MarketHours
from mdgate._model import Tick

pytestmark = pytest.mark.anyio

IST = ZoneInfo("Asia/Kolkata")
#: Thursday 2026-12-03 11:00 IST: NSE open.
OPEN_DAY = datetime(2026, 12, 3, 11, 0, tzinfo=IST).timestamp()


class World:
    """One provider ``p`` carrying the given instruments on connection 0, and market hours over it."""

    def __init__(self, names: list[str], wall0: float = OPEN_DAY, stall: float = 4.0,
                 calendars: dict[str, Any] | None = None, **runtime: Any) -> None:
        self.clock = ManualClock()
        start = self.clock.time
        self.conn = SimpleNamespace(index=0, codes={})
        self.session = SimpleNamespace(conns=[self.conn], stall_timeout=stall, market_open=None)
        self.subs = SimpleNamespace(active={})
        self.latest = LatestTicks()
        for name in names:
            self.add(name)
        sessions: Any = {"p": self.session}
        self.hours = MarketHours(parse_calendars(calendars or {}), RuntimeSettings(**runtime), sessions,
                                 self.subs, self.latest,  # type: ignore[arg-type]
                                 clock=self.clock, wall=lambda: wall0 + self.clock.time - start)
        self.hours.look()  # the subscription moment

    def add(self, name: str) -> None:
        code = name.lower()
        self.conn.codes[code] = name
        self.subs.active[name] = SimpleNamespace(current=SimpleNamespace(provider="p", code=code))

    def tick(self, name: str) -> None:
        self.latest.advance([Tick(name, 1.0, int(self.clock.time * 1000), int(self.clock.time * 1000), "P")])

    async def at(self, seconds: float) -> dict[str, str]:
        """Move ``seconds`` on, looking every second as ``MarketHours.run`` does; the states then."""
        for _ in range(int(seconds)):
            await self.clock.advance(1.0)
            self.hours.look()
        return dict(self.hours.states)


async def test_session_market_open_is_the_calendar_on_the_session_clock():
    w = World(["NSE:AAA"])
    opened = w.session.market_open(["NSE:AAA", "NSE:BBB"])
    nse_open = datetime(2026, 12, 3, 9, 15, tzinfo=IST).timestamp()
    assert opened == pytest.approx(w.clock.time - (OPEN_DAY - nse_open))
    assert w.session.market_open(["NYSE:AAA"]) is None  # 00:30 in New York
    assert w.session.market_open(["LSE:AAA"]) == float("-inf")  # no calendar: open since ever


async def test_session_market_open_is_the_earliest_open_of_the_open_markets():
    # 11:00 IST = 05:30 UTC: NSE open since 09:15 IST (03:45 UTC), EX5 since 05:00 UTC
    w = World(["NSE:AAA"], calendars={"EX5": {"timezone": "UTC", "open": "05:00", "close": "23:00"}})
    assert w.session.market_open(["EX5:B", "NSE:A"]) == pytest.approx(w.clock.time - 105 * 60)
    assert w.session.market_open(["EX5:B"]) == pytest.approx(w.clock.time - 30 * 60)


async def test_live_until_stall_timeout_of_silence_then_stale_and_live_again_on_a_tick():
    w = World(["NSE:AAA"])
    assert await w.at(4.0) == {"NSE:AAA": "live"}
    assert await w.at(1.0) == {"NSE:AAA": "stale"}
    assert w.hours.stale == 1
    w.tick("NSE:AAA")
    with capture_logs() as logs:
        assert await w.at(1.0) == {"NSE:AAA": "live"}
    assert [e["event"] for e in logs] == ["instrument_resumed"]


async def test_stale_after_overrides_the_providers_stall_timeout():
    w = World(["NSE:AAA"], stale_after=10.0)
    assert await w.at(9.0) == {"NSE:AAA": "live"}
    assert await w.at(2.0) == {"NSE:AAA": "stale"}


async def test_an_instrument_subscribed_late_is_not_stale_at_once():
    w = World(["NSE:AAA"])
    await w.at(30.0)
    w.add("NSE:BBB")
    assert (await w.at(1.0))["NSE:BBB"] == "live"  # first seen at this look
    assert (await w.at(4.0))["NSE:BBB"] == "live"
    assert (await w.at(1.0))["NSE:BBB"] == "stale"


async def test_closed_market_is_closed_never_stale_and_opening_starts_the_count():
    before_open = datetime(2026, 12, 3, 9, 14, tzinfo=IST).timestamp()
    w = World(["NSE:AAA", "NYSE:BBB"], wall0=before_open)
    assert await w.at(59.0) == {"NSE:AAA": "closed", "NYSE:BBB": "closed"}
    assert (await w.at(2.0))["NSE:AAA"] == "live"  # 09:15:01
    assert (await w.at(3.0))["NSE:AAA"] == "live"  # 09:15:04
    assert (await w.at(1.0))["NSE:AAA"] == "stale"  # 09:15:05
    assert w.hours.status()["markets"]["NYSE"] == "closed" and w.hours.status()["stale"] == 1


async def test_moves_to_stale_logged_once_each_and_capped_per_look():
    names = [f"NSE:S{i:02d}" for i in range(MAX_LINES + 5)]
    w = World(names)
    with capture_logs() as logs:
        await w.at(5.0)
        await w.at(1.0)
    stale = [e for e in logs if e["event"] == "instrument_stale"]
    assert len(stale) == MAX_LINES
    assert [e for e in logs if e["event"] == "instruments_stale"] == [
        {"event": "instruments_stale", "count": MAX_LINES + 5, "logged": MAX_LINES, "log_level": "warning"}]
    assert stale[0]["silent_s"] == 5.0 and stale[0]["connection_flows"] is False


async def test_a_wrong_answer_for_calendar_rows_is_refused_and_logged():
    w = World(["NSE:AAA"])
    before = w.hours.calendars
    with capture_logs() as logs:
        w.hours.use_rows("not rows")
        w.hours.use_rows([("NSE", "2026-12-03", None, None)])
    assert w.hours.calendars is before
    assert [e["event"] for e in logs] == ["calendar_rows_rejected"] * 2
    w.hours.use_rows([DaySession("NSE", date(2026, 12, 3))])
    assert await w.at(1.0) == {"NSE:AAA": "closed"}


async def test_a_failing_look_is_logged_and_the_next_one_runs():
    w = World(["NSE:AAA"])
    calls: list[int] = []
    real = w.hours.look

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        real()

    w.hours.look = flaky  # type: ignore[method-assign]
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.hours.run)
            await w.clock.advance(0)
            await w.clock.advance(2.0)
            tg.cancel_scope.cancel()
    assert len(calls) == 2 and w.hours.states == {"NSE:AAA": "live"}
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["market_hours_failed"]


async def test_a_year_past_the_built_in_table_is_logged_once():
    with capture_logs() as logs:
        w = World(["NSE:AAA"], wall0=datetime(2027, 1, 5, 11, 0, tzinfo=IST).timestamp())
        await w.at(1.0)
        await w.at(1.0)
    outdated = [e for e in logs if e["event"] == "calendar_table_outdated"]
    assert sorted(e["exchange"] for e in outdated) == ["BSE", "NSE"]


async def test_ticks_still_flowing_while_the_calendar_says_closed_are_live_then_closed():
    evening = datetime(2026, 12, 3, 20, 0, tzinfo=IST).timestamp()  # NSE closed (a replay, a late calendar)
    w = World(["NSE:AAA"], wall0=evening)
    assert await w.at(1) == {"NSE:AAA": "closed"}
    now_ms = int(w.hours.wall() * 1000)
    w.latest.advance([Tick("NSE:AAA", 1.0, now_ms, now_ms, "P")])
    assert await w.at(1) == {"NSE:AAA": "live"}
    assert await w.at(4) == {"NSE:AAA": "closed"}  # silent past stale_after (4 s): closed, not stale
