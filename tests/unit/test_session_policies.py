"""
Connection-runtime policies against a clock the test drives (ManualClock):
backoff (growth, cap, reset only after a live connection, attempts shown in
/status), stall detection, auth retry.
"""

from __future__ import annotations

import json

import pytest

from mdgate._clock import ManualClock
from mdgate._errors import AuthenticationError, ProviderConnectionError, RateLimitedError
from tests.unit._scripted import Script, make_session, running

pytestmark = pytest.mark.anyio


def frame(code: str = "AAA", price: float = 1.0) -> str:
    return json.dumps([{"s": code, "p": price}])


def last_wait(clock: ManualClock) -> float:
    return clock.requested[-1]


# ---------------------------------------------------------------- backoff


async def test_backoff_grows_to_cap_while_unreachable_and_status_counts_attempts():
    clock, script = ManualClock(), Script()
    session = make_session(script, clock, backoff_initial=1.0, backoff_max=8.0)
    async with running(session, clock):
        delays = []
        for _ in range(7):
            delays.append(last_wait(clock))
            await clock.advance(delays[-1])
        assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
        st = session.status()
        assert (st["state"], st["attempts"], script.opens) == ("reconnecting", 8, 8)
        assert st["reconnects"] == 7 and "refused" in st["last_error"]


async def test_backoff_resets_after_a_live_connection_only():
    clock, script = ManualClock(), Script()
    session = make_session(script, clock, backoff_initial=1.0, backoff_max=64.0)
    session.add("AAA", "FAKE:AAA")
    async with running(session, clock):
        for _ in range(4):  # 1, 2, 4, 8
            await clock.advance(last_wait(clock))
        assert last_wait(clock) == 16.0
        # it accepts, but closes before sending anything: not live, the backoff keeps growing
        script.refuse = None
        await clock.advance(16.0)
        assert session.state == "connected" and session.status()["attempts"] == 0
        script.transport.drop()
        await clock.advance(0)
        assert session.state == "reconnecting" and last_wait(clock) == 32.0
        assert session.status()["attempts"] == 6
        # this time a frame arrives before the drop: the next delay starts from initial again
        await clock.advance(32.0)
        script.transport.push(frame())
        await clock.advance(0.1)
        script.transport.drop()
        await clock.advance(0)
        assert session.state == "reconnecting"
        assert last_wait(clock) == 1.0
        assert session.status()["attempts"] == 1


async def test_rate_limited_waits_near_the_cap():
    clock, script = ManualClock(), Script()
    script.refuse = RateLimitedError("fake", "handshake refused with HTTP 429")
    session = make_session(script, clock, backoff_initial=1.0, backoff_max=30.0, random=lambda: 0.0)
    async with running(session, clock):
        assert last_wait(clock) == 15.0
        await clock.advance(14.9)
        assert script.opens == 1
        await clock.advance(0.2)
        assert script.opens == 2


# ---------------------------------------------------------------- stall


async def test_subscribed_connection_silent_for_stall_timeout_is_stalled_not_before():
    clock, script = ManualClock(), Script(stall_timeout=4.0)
    script.refuse = None
    session = make_session(script, clock, backoff_initial=10.0, backoff_max=10.0, random=lambda: 0.5)
    session.add("AAA", "FAKE:AAA")
    async with running(session, clock):
        assert session.state == "connected"
        await clock.advance(3.9)
        script.transport.push(frame())  # data at 3.9 s: the silence starts again
        await clock.advance(3.9)
        assert session.state == "connected" and script.opens == 1
        await clock.advance(1.2)  # 5.1 s since the last frame (checked every second)
        assert session.state == "stalled"
        assert "stalled: no data for 4 s" in session.last_error
        await clock.advance(5.0)  # backoff 10 * 0.5
        assert script.opens == 2 and session.state == "connected"


async def test_connection_without_subscriptions_never_stalls():
    clock, script = ManualClock(), Script(stall_timeout=4.0)
    script.refuse = None
    session = make_session(script, clock)
    async with running(session, clock):
        await clock.advance(40.0)
        assert session.state == "connected" and script.opens == 1


# ---------------------------------------------------------------- auth retry


async def test_auth_failed_no_new_attempt_before_auth_retry_then_one():
    clock, script = ManualClock(), Script()
    script.refuse = AuthenticationError("fake", "token refused", hint="set a new token")
    session = make_session(script, clock, auth_retry=60.0, backoff_initial=0.01)
    async with running(session, clock):
        assert session.state == "auth_failed" and session.hint == "set a new token"
        await clock.advance(59.9)
        assert script.opens == 1
        await clock.advance(0.2)  # the second attempt came at 60.0 s
        assert script.opens == 2
        await clock.advance(59.8)
        assert script.opens == 2
        await clock.advance(0.2)
        assert script.opens == 3


async def test_auth_failed_retries_at_once_on_a_config_change():
    clock, script = ManualClock(), Script()
    script.refuse = AuthenticationError("fake", "token refused")
    session = make_session(script, clock, auth_retry=60.0, config={"token": "old"})
    async with running(session, clock):
        await clock.advance(10.0)
        assert script.opens == 1
        session.update_config({"token": "old"}, None)  # nothing changed: keep waiting
        await clock.advance(0)
        assert script.opens == 1
        script.refuse = None
        session.update_config({"token": "new"}, None)
        await clock.advance(0)
        assert script.opens == 2 and session.state == "connected"


async def test_connection_error_after_auth_failure_backs_off_from_initial():
    clock, script = ManualClock(), Script()
    script.refuse = AuthenticationError("fake", "token refused")
    session = make_session(script, clock, auth_retry=60.0, backoff_initial=1.0, backoff_max=8.0)
    async with running(session, clock):
        script.refuse = ProviderConnectionError("fake", "cannot connect")
        await clock.advance(60.0)
        assert script.opens == 2 and session.state == "reconnecting"
        assert last_wait(clock) == 1.0
