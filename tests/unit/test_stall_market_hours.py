"""
The stall watchdog asks the calendars (ProviderSession.market_open): a
closed market never stalls a connection; an open one does, the silence
counted from the later of the last frame and the moment the market opened.
Against a ManualClock and a wall clock derived from it.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mdgate._calendar import Calendars, parse_calendars
from mdgate._clock import ManualClock
from tests.unit._scripted import Script, make_session, running

pytestmark = pytest.mark.anyio

#: Thursday 2026-12-03 09:10 IST (NSE opens at 09:15), in Unix seconds.
BEFORE_OPEN = datetime(2026, 12, 3, 9, 10, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp()


def frame(code: str = "AAA") -> str:
    return json.dumps([{"s": code, "p": 1.0}])


def calendar_market_open(clock: ManualClock, wall0: float, cals: Calendars):
    """A ``market_open`` for instruments named ``NSE:*`` with the wall clock following ``clock``."""
    start = clock.time

    def market_open(instruments):
        at = wall0 + clock.time - start
        best = None
        for name in instruments:
            opened = cals.open_since(name.partition(":")[0], at)
            if opened is not None:
                mono = clock.time - (at - opened)
                best = mono if best is None else min(best, mono)
        return best

    return market_open


async def test_closed_market_silent_connection_never_stalls():
    clock, script = ManualClock(), Script(stall_timeout=4.0)
    script.refuse = None
    session = make_session(script, clock)
    session.market_open = calendar_market_open(clock, BEFORE_OPEN, Calendars())
    session.add("AAA", "NSE:AAA")
    async with running(session, clock):
        for _ in range(290):  # 09:10 -> 09:14:50, silent all along
            await clock.advance(1.0)
        assert session.state == "connected" and script.opens == 1


async def test_silence_counts_from_the_open_then_stalls():
    clock, script = ManualClock(), Script(stall_timeout=4.0)
    script.refuse = None
    session = make_session(script, clock, backoff_initial=100.0, backoff_max=100.0)
    session.market_open = calendar_market_open(clock, BEFORE_OPEN, Calendars())
    session.add("AAA", "NSE:AAA")
    async with running(session, clock):
        await clock.advance(300.0)  # 09:15:00, the open: silent for 5 minutes, but not stalled
        await clock.advance(3.0)
        assert session.state == "connected"
        await clock.advance(2.0)  # 5 s after the open, checked every second
        assert session.state == "stalled" and script.opens == 1
        assert "market open" in session.last_error


async def test_one_open_market_is_enough_to_stall():
    clock, script = ManualClock(), Script(stall_timeout=4.0)
    script.refuse = None
    cals = Calendars(parse_calendars({"EX24": {"timezone": "UTC", "open": "00:00", "close": "23:59"}}))
    session = make_session(script, clock, backoff_initial=100.0, backoff_max=100.0)
    session.market_open = calendar_market_open(clock, BEFORE_OPEN, cals)
    session.add("AAA", "NSE:AAA")  # closed
    session.add("BBB", "EX24:BBB")  # open
    async with running(session, clock):
        script.transport.push(frame())
        await clock.advance(4.5)
        assert session.state == "connected"
        await clock.advance(1.0)
        assert session.state == "stalled"


async def test_market_closing_mid_silence_stops_the_stall_count():
    # NSE closes at 15:30: a feed silent from 15:29 is not a stall at 15:31
    clock, script = ManualClock(), Script(stall_timeout=120.0)
    script.refuse = None
    session = make_session(script, clock)
    session.market_open = calendar_market_open(clock, BEFORE_OPEN + 6 * 3600 + 19 * 60, Calendars())  # 15:29
    session.add("AAA", "NSE:AAA")
    async with running(session, clock):
        for _ in range(300):
            await clock.advance(1.0)
        assert session.state == "connected" and script.opens == 1


async def test_a_failing_calendar_counts_as_open_so_stalls_are_still_seen():
    clock, script = ManualClock(), Script(stall_timeout=4.0)
    script.refuse = None
    session = make_session(script, clock, backoff_initial=100.0, backoff_max=100.0)

    def broken(instruments):
        raise RuntimeError("calendar bug")

    session.market_open = broken
    session.add("AAA", "NSE:AAA")
    async with running(session, clock):
        await clock.advance(5.0)
        assert session.state == "stalled" and "market open" in session.last_error
        assert session.faults.status() == {}  # not mistaken for a plugin fault
