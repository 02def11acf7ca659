"""
ProviderState: the one home of the session states. The ranking (a provider
shows its worst connection's state), which states are fatal (failover at
once) and which make ``/status`` degraded, and that ``/status`` still carries
each state as a plain string.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from mdgate._app import Gateway
from mdgate._clock import ManualClock
from mdgate._config import Settings
from mdgate._model import encode
from mdgate._providers.registry import load_registry
from mdgate._providers.states import ProviderState
from tests.unit._scripted import Script, make_session, running

#: Worst first, as the documentation and the failover rules read them.
WORST_FIRST = ["auth_failed", "failed", "disabled", "stalled", "reconnecting", "connecting", "connected"]


def test_states_are_their_strings_worst_first() -> None:
    assert [s.value for s in ProviderState] == WORST_FIRST
    assert [s.rank for s in ProviderState] == list(range(len(WORST_FIRST)))
    for name in WORST_FIRST:
        state = ProviderState(name)
        assert state == name and isinstance(state, str) and f"{state}" == name


def test_worst_of_any_two_states_is_the_one_listed_first() -> None:
    for a, b in itertools.combinations(WORST_FIRST, 2):  # a is worse than b
        assert ProviderState.worst([ProviderState(a), ProviderState(b)]) is ProviderState(a)
        assert ProviderState.worst([ProviderState(b), ProviderState(a)]) is ProviderState(a)
    assert ProviderState.worst([]) is ProviderState.CONNECTING


def test_fatal_and_bad_states() -> None:
    assert {s.value for s in ProviderState if s.fatal} == {"auth_failed", "failed", "disabled"}
    # switched off on purpose is not "degraded"; the first attempt under way is not either
    assert {s.value for s in ProviderState if s.bad} == {"auth_failed", "failed", "stalled", "reconnecting"}


def two_connection_session(clock: ManualClock, script: Script | None = None) -> Any:
    """A session whose two codes sit on two connections (one code per connection)."""
    session = make_session(script or Script(max_per_connection=1, max_connections=2), clock)
    session.add("A", "FAKE:A")
    session.add("B", "FAKE:B")
    assert len(session.conns) == 2
    return session


@pytest.mark.parametrize("worse", ["auth_failed", "failed", "disabled", "stalled", "reconnecting"])
def test_provider_shows_its_worst_connections_state(worse: str) -> None:
    clock = ManualClock()
    session = two_connection_session(clock)
    first, second = session.conns
    first._set_state(ProviderState.CONNECTED)
    second._set_state(ProviderState.CONNECTED)
    assert session.state is ProviderState.CONNECTED and session.healthy_since == clock.now()
    clock.time += 5
    second._set_state(ProviderState(worse))
    assert session.state == worse and session.status()["state"] == worse
    assert session.healthy_since is None and session.down_since == clock.now()
    assert session.is_down(after=3600) is ProviderState(worse).fatal
    second._set_state(ProviderState.CONNECTED)
    assert session.state is ProviderState.CONNECTED


def test_a_further_connection_counts_only_while_it_carries_codes() -> None:
    session = two_connection_session(ManualClock())
    first, second = session.conns
    first._set_state(ProviderState.CONNECTED)
    second._set_state(ProviderState.RECONNECTING)
    assert session.state == "reconnecting"
    session.remove("B")  # its connection, still reconnecting, no longer counts
    assert session.state is ProviderState.CONNECTED and session.status()["state"] == "connected"


def test_status_json_carries_states_as_plain_strings() -> None:
    assert encode({"state": ProviderState.AUTH_FAILED}) == b'{"state":"auth_failed"}'
    session = make_session(Script(), ManualClock())
    session.conns[0]._set_state(ProviderState.STALLED)
    doc = json.loads(encode(session.status()))
    assert doc["state"] == "stalled" and type(doc["state"]) is str


@pytest.mark.parametrize(("state", "degraded"), [
    ("connected", False), ("connecting", False), ("disabled", False),
    ("reconnecting", True), ("stalled", True), ("auth_failed", True), ("failed", True),
])
def test_gateway_status_degraded_by_bad_provider_states(
    state: str, degraded: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = Gateway(Settings(), load_registry({}, entry_points=False))
    # isolate the providers' part of the rule: no routes here, which alone would degrade
    monkeypatch.setattr("mdgate._app.routing_health", lambda table, source: {"state": "ok"})
    assert gw.status()["status"] == "ok"
    gw.sessions["fake"] = session = make_session(Script(), ManualClock())
    session.conns[0]._set_state(ProviderState(state))
    doc = json.loads(encode(gw.status()))
    assert doc["providers"]["fake"]["state"] == state
    assert doc["status"] == ("degraded" if degraded else "ok")


@pytest.mark.anyio
async def test_status_adds_up_each_connections_own_counters() -> None:
    clock, script = ManualClock(), Script(max_per_connection=1, max_connections=2, stall_timeout=0)
    script.refuse = None
    session = two_connection_session(clock, script)
    async with running(session, clock):
        await clock.advance(0)
        first, second = script.transports
        first.push(json.dumps([{"s": "A", "p": 1.0}, {"s": "A", "p": 2.0}]))
        second.push(json.dumps([{"s": "B", "p": 3.0}]))
        second.push(json.dumps([]))
        await clock.advance(0)
        assert [(c.frames, c.ticks) for c in session.conns] == [(1, 2), (2, 1)]
        second.drop()  # the second connection comes back after its backoff
        await clock.advance(10)
        st = session.status()
        assert (st["state"], st["frames"], st["ticks"], st["reconnects"]) == ("connected", 3, 3, 1)
        assert st["url"] == "scripted://fake" and script.opens == 3
