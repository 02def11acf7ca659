"""
An ingest instance's slot gate (ManualClock, scripted provider): a connection runs only
while its slot is held, each instrument goes on its slot's connection, and revoking a slot
returns only once its connections are closed.
"""

from __future__ import annotations

import json

import anyio
import pytest

from mdgate._clock import ManualClock
from mdgate._fleet.shards import shard_of
from mdgate._fleet.slots import SlotGate
from tests.unit._scripted import Script, make_session, running

pytestmark = pytest.mark.anyio


def _names_per_shard(n: int) -> dict[int, str]:
    """One instrument name per shard."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < n:
        name = f"FAKE:S{i}"
        out.setdefault(shard_of(name, n), name)
        i += 1
    return out


def test_shard_of_is_stable_and_spread() -> None:
    assert shard_of("NSE:RELIANCE", 4) == shard_of("NSE:RELIANCE", 4)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"NSE:X{i}", 4)] += 1
    assert min(counts) > 800  # about a quarter each


async def test_connection_waits_for_its_slot_and_instruments_go_on_their_slot() -> None:
    clock, script = ManualClock(), Script(max_connections=2)
    script.refuse = None
    session = make_session(script, clock)
    gate = session.gate = SlotGate(2)
    names = _names_per_shard(2)
    session.add("A0", names[0])
    session.add("A1", names[1])
    assert [sorted(c.codes) for c in session.conns] == [["A0"], ["A1"]]
    async with running(session, clock):
        await clock.advance(1)
        assert script.opens == 0  # no slot held: no connection at all
        gate.grant(1)
        await clock.advance(0.1)
        assert script.opens == 1 and session.conns[1].state == "connected"
        assert session.conns[0].state != "connected"
        # the provider's state counts only the connections of held slots
        assert session.state == "connected"


async def test_revoke_closes_the_slot_connections_before_it_returns() -> None:
    clock, script = ManualClock(), Script(max_connections=2)
    script.refuse = None
    session = make_session(script, clock)
    gate = session.gate = SlotGate(2)
    names = _names_per_shard(2)
    session.add("A0", names[0])
    async with running(session, clock):
        gate.grant(0)
        await clock.advance(0.1)
        transport = script.transport
        assert not transport.closed and gate.status()["connections"] == {"0": 1}
        await gate.revoke(0)
        assert transport.closed  # closed before revoke returned: the lease may go now
        assert gate.status()["connections"] == {}
        await clock.advance(5)
        assert script.opens == 1  # and it does not come back while the slot is not held
        gate.grant(0)
        await clock.advance(0.1)
        assert script.opens == 2 and not script.transport.closed
        script.transport.push(json.dumps([{"s": "A0", "p": 1.0}]))
        await clock.advance(0.1)
        assert session.ticks == 1


async def test_a_connection_with_nothing_to_carry_never_connects_under_a_gate() -> None:
    clock, script = ManualClock(), Script(max_connections=2)
    script.refuse = None
    session = make_session(script, clock)
    gate = session.gate = SlotGate(2)
    gate.grant(0)
    gate.grant(1)
    async with running(session, clock):
        await clock.advance(3)
        assert script.opens == 0  # slot held, but no instrument on it: no upstream session


async def test_wait_returns_when_granted() -> None:
    gate = SlotGate(3)
    done = []

    async def waiter() -> None:
        await gate.wait(2)
        done.append(2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.01)
        gate.grant(1)
        await anyio.sleep(0.01)
        assert done == []
        gate.grant(2)
    assert done == [2]
