"""
Failover, fail-back hold-down and linger of the SubscriptionManager against
a clock the test moves (ManualClock): the rules hold at their exact
boundaries, not "eventually".
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mdgate._clock import ManualClock
from mdgate._config import RuntimeSettings, SubscriptionSettings
from mdgate._provider import ProviderSpec
from mdgate._providers.session import ProviderSession
from mdgate._providers.states import ProviderState
from mdgate._queue import TickQueue
from mdgate._routing.subscriptions import SubscriptionManager
from mdgate._routing.table import Route

pytestmark = pytest.mark.anyio

RT = RuntimeSettings(failover_after=10.0, failback_after=30.0)


class Hooks:
    def __init__(self, name: str) -> None:
        self.spec = ProviderSpec(name, name[0].upper(), ("DUO",))
        self.plugin = "duo"


class TwoCandidates:
    """The router: every DUO instrument has alpha (primary) then beta (backup)."""

    def resolve(self, instrument: str) -> list[Route]:
        code = instrument.split(":")[1]
        return [Route(instrument, "alpha", code, 0, True, "primary"),
                Route(instrument, "beta", code, 1, False, "backup")]


class Duo:
    def __init__(self, *, linger: float = 0.0) -> None:
        self.clock = ManualClock()
        self.sessions = {
            n: ProviderSession(Hooks(n), None, None, TickQueue(10), RT, clock=self.clock)  # type: ignore[arg-type]
            for n in ("alpha", "beta")
        }
        self.subs = SubscriptionManager(TwoCandidates(), self.sessions, RT, linger,  # type: ignore[arg-type]
                                        clock=self.clock.now)

    def state(self, provider: str, state: str) -> None:
        self.sessions[provider].conns[0]._set_state(ProviderState(state))

    def after(self, seconds: float) -> None:
        self.clock.time += seconds
        self.subs.check()

    def carrier(self, instrument: str = "DUO:FOO") -> Any:
        act = self.subs.active[instrument]
        assert act.current is not None
        codes = {n: "FOO" in s.conns[0].codes for n, s in self.sessions.items()}
        assert list(codes.values()).count(True) == 1, codes  # carried by exactly one provider
        assert codes[act.current.provider]
        return act.current.provider


async def test_primary_counts_as_down_only_after_failover_after_seconds_disconnected():
    d = Duo()
    d.state("alpha", "connected")
    d.state("beta", "connected")
    assert d.subs.acquire("DUO:FOO") is True
    assert d.carrier() == "alpha"
    d.state("alpha", "reconnecting")
    d.after(9.9)
    assert d.carrier() == "alpha"
    d.after(0.2)
    assert d.carrier() == "beta"
    sw = d.subs.switches[-1]
    assert (sw.from_provider, sw.to_provider) == ("alpha", "beta") and "failover" in sw.reason


async def test_a_short_outage_does_not_fail_over():
    d = Duo()
    d.state("alpha", "connected")
    d.state("beta", "connected")
    d.subs.acquire("DUO:FOO")
    for _ in range(5):  # 9 s down, 1 s up, again and again
        d.state("alpha", "stalled")
        d.after(9.0)
        d.state("alpha", "connected")
        d.after(1.0)
    assert d.carrier() == "alpha"


@pytest.mark.parametrize("fatal", ["auth_failed", "failed", "disabled"])
async def test_fatal_state_fails_over_at_once(fatal):
    d = Duo()
    d.state("alpha", "connected")
    d.state("beta", "connected")
    d.subs.acquire("DUO:FOO")
    d.state("alpha", fatal)
    d.after(0.0)
    assert d.carrier() == "beta"


async def test_no_failover_to_a_backup_that_is_not_connected():
    d = Duo()
    d.state("alpha", "connected")
    d.subs.acquire("DUO:FOO")
    d.state("alpha", "reconnecting")
    d.after(60.0)  # beta never connected
    assert d.carrier() == "alpha"
    d.state("beta", "connected")
    d.after(0.0)
    assert d.carrier() == "beta"


async def test_recovered_primary_gets_its_instrument_back_only_after_failback_after_healthy():
    d = Duo()
    d.state("alpha", "connected")
    d.state("beta", "connected")
    d.subs.acquire("DUO:FOO")
    d.state("alpha", "reconnecting")
    d.after(10.0)
    assert d.carrier() == "beta"
    d.state("alpha", "connected")
    d.after(29.9)
    assert d.carrier() == "beta"
    d.after(0.2)
    assert d.carrier() == "alpha"
    sw = d.subs.switches[-1]
    assert (sw.from_provider, sw.to_provider) == ("beta", "alpha") and "fail-back" in sw.reason
    assert d.subs.refs("DUO:FOO") == 1  # the client never had to resubscribe


async def test_failback_hold_down_restarts_when_the_primary_flaps():
    d = Duo()
    d.state("alpha", "connected")
    d.state("beta", "connected")
    d.subs.acquire("DUO:FOO")
    d.state("alpha", "failed")
    d.after(0.0)
    assert d.carrier() == "beta"
    d.state("alpha", "connected")
    d.after(25.0)
    d.state("alpha", "reconnecting")  # a blip 25 s into the hold-down
    d.after(1.0)
    d.state("alpha", "connected")
    d.after(29.0)  # 55 s since first recovered, but only 29 s healthy in a row
    assert d.carrier() == "beta"
    d.after(1.1)
    assert d.carrier() == "alpha"


async def test_released_instrument_lingers_for_linger_seconds_then_goes():
    d = Duo(linger=30.0)
    d.state("alpha", "connected")
    d.subs.acquire("DUO:FOO")
    d.subs.release("DUO:FOO")
    d.after(29.9)
    assert "DUO:FOO" in d.subs.active and d.sessions["alpha"].subscriptions == 1
    d.after(0.2)
    assert "DUO:FOO" not in d.subs.active and d.sessions["alpha"].subscriptions == 0


async def test_interest_within_linger_keeps_the_subscription():
    d = Duo(linger=30.0)
    d.state("alpha", "connected")
    d.subs.acquire("DUO:FOO")
    d.subs.release("DUO:FOO")
    d.after(20.0)
    d.subs.acquire("DUO:FOO")  # a client comes back
    d.after(60.0)
    assert d.subs.refs("DUO:FOO") == 1 and d.sessions["alpha"].subscriptions == 1
    d.subs.release("DUO:FOO")
    d.after(29.9)
    assert "DUO:FOO" in d.subs.active  # linger counts from the last release
    d.after(0.2)
    assert "DUO:FOO" not in d.subs.active


async def test_always_instrument_dropped_from_config_lingers_then_goes():
    d = Duo(linger=30.0)
    d.state("alpha", "connected")
    assert d.subs.set_always(["DUO:FOO"]) == []
    d.after(100.0)
    assert "DUO:FOO" in d.subs.active
    d.subs.set_always([])
    d.after(29.9)
    assert "DUO:FOO" in d.subs.active
    d.after(0.2)
    assert "DUO:FOO" not in d.subs.active


async def test_start_routes_the_always_list_in_chunks_letting_the_loop_run_between():
    d = Duo(linger=5.0)
    d.state("alpha", "connected")
    seen: list[int] = []  # instruments active each time the loop got a turn
    names = [f"DUO:S{i}" for i in range(5)]

    async def watch() -> None:
        while len(seen) < 10:
            seen.append(len(d.subs.active))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.lowlevel.checkpoint()
        settings = SubscriptionSettings(always=(*names, "bad name"), linger=7.0)
        errors = await d.subs.start(settings, lambda: True, chunk=2)
    assert len(errors) == 1 and "bad name" in errors[0]
    assert set(d.subs.active) == set(names) and all(a.always for a in d.subs.active.values())
    assert d.subs.linger == 7.0
    assert {2, 4} <= set(seen)  # the loop ran after each chunk of 2, before the last


async def test_start_stops_once_newer_settings_were_applied_whole():
    d = Duo()
    d.state("alpha", "connected")
    turns = iter([True, False])
    settings = SubscriptionSettings(always=("DUO:A", "DUO:B", "DUO:C"))
    assert await d.subs.start(settings, lambda: next(turns), chunk=2) == []
    assert set(d.subs.active) == {"DUO:A", "DUO:B"}  # the reload's own list is the one that counts
