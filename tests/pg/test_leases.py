"""
Connection-slot leases with fencing tokens (:mod:`mdgate._fleet.leases`,
migration 4) against a real PostgreSQL: fair share and hand-over, takeover
of a dead holder's slot after the database expiry, local expiry before the
database expiry when renewals fail, stale tokens, all-or-none slots, never
two holders of a slot, reconnection after a restart.

Time rules run on a :class:`~mdgate._clock.ManualClock` where the database's
own expiry (``now() + ttl``) must not interfere; tests that need it to pass
use a short ttl on the real clock.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
import psycopg
import pytest
from anyio.abc import TaskGroup, TaskStatus
from structlog.testing import capture_logs

from mdgate._clock import MONOTONIC, Clock, ManualClock
from mdgate._fleet.leases import LeaseKeeper, Reconnecting
from mdgate.plugins.pg_routes.migrations import upgrade
from mdgate.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration

UNITS = [("example", "default"), ("yahoo", "k2")]


class Recorder:
    """on_gain / on_lose of one keeper, in order."""

    def __init__(self, name: str, dsn: str | None = None) -> None:
        self.name = name
        self.dsn = dsn
        self.events: list[tuple[Any, ...]] = []
        #: Rows of the slot (holder, token) as on_lose saw them (when ``dsn`` is given).
        self.rows_at_lose: dict[int, list[tuple[str, int]]] = {}

    async def on_gain(self, slot: int, token: int, taken_over: bool) -> None:
        self.events.append(("gain", slot, token, taken_over, time.time()))

    async def on_lose(self, slot: int) -> None:
        if self.dsn is not None:
            self.rows_at_lose[slot] = await query(
                self.dsn, "SELECT holder, token FROM mdgate_leases WHERE slot = %s", slot)
        self.events.append(("lose", slot))

    def gains(self) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == "gain"]


def keeper(dsn: str, rec: Recorder, *, slots: int = 2, ttl: float = 10.0, clock: Clock = MONOTONIC,
           **kw: Any) -> LeaseKeeper:
    return LeaseKeeper(dsn, rec.name, UNITS, slots, ttl, clock=clock, on_gain=rec.on_gain,
                       on_lose=rec.on_lose, **kw)


async def query(dsn: str, sql: str, *args: Any) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(sql.encode(), args or None)
        return await cur.fetchall() if cur.description else []


async def holders(dsn: str) -> dict[int, set[tuple[str, int]]]:
    """slot -> {(holder, token)} of the live rows."""
    out: dict[int, set[tuple[str, int]]] = {}
    for slot, holder, token in await query(
            dsn, "SELECT slot, holder, token FROM mdgate_leases WHERE expires_at > now()"):
        out.setdefault(slot, set()).add((holder, token))
    return out


async def start(tg: TaskGroup, k: LeaseKeeper) -> anyio.CancelScope:
    """Run ``k`` in ``tg``; cancelling the returned scope is the keeper's death (nothing released)."""
    scope = anyio.CancelScope()

    async def go(*, task_status: TaskStatus[None]) -> None:
        with scope:
            await k.run(task_status=task_status)

    await tg.start(go)
    return scope


async def eventually(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.01)


async def drive(
    clock: ManualClock, pred: Callable[[], bool], step: float = 0.5, timeout: float = 10.0
) -> None:
    """Advance ``clock`` by ``step`` (and let the database answer) until ``pred`` holds."""
    with anyio.fail_after(timeout):
        while not pred():
            await clock.advance(step)
            await anyio.sleep(0.03)


@asynccontextmanager
async def group() -> AsyncIterator[TaskGroup]:
    async with anyio.create_task_group() as tg:
        yield tg
        tg.cancel_scope.cancel()


async def test_two_keepers_share_two_slots_hand_over_loses_first(dsn: str) -> None:
    clock = ManualClock()
    ra, rb = Recorder("a", dsn), Recorder("b", dsn)
    a, b = keeper(dsn, ra, clock=clock), keeper(dsn, rb, clock=clock)
    async with group() as tg:
        await start(tg, a)
        await eventually(lambda: len(a.held) == 2)  # alone: the fair share is both
        assert a.share == 2 and [e[3] for e in ra.gains()] == [False, False]
        await start(tg, b)
        await drive(clock, lambda: len(a.held) == 1 and len(b.held) == 1)
        assert a.share == b.share == 1 and a.live_instances == 2
        (moved,) = set(range(2)) - set(a.held)
        # a's on_lose ran while its rows were still there, with its token; then they were released
        assert ra.events[-1] == ("lose", moved)
        assert ra.rows_at_lose[moved] == [("a", ra.gains()[-1][2] if ra.gains()[-1][1] == moved
                                           else ra.gains()[0][2])] * len(UNITS)
        assert a.status()["handed_over"] == 1
        (gain,) = rb.gains()
        assert gain[1] == moved and gain[3] is False  # released, not taken over
        rows = await holders(dsn)
        assert rows == {s: {(k.instance, k.held[s])} for k in (a, b) for s in k.held}
        assert len(await query(dsn, "SELECT * FROM mdgate_leases")) == 2 * len(UNITS)
        # every acquisition took a new, larger token
        tokens = [e[2] for e in sorted(ra.gains() + rb.gains(), key=lambda e: e[4])]
        assert tokens == sorted(set(tokens)) and len(tokens) == 3
        # nothing moves any more
        await drive(clock, lambda: clock.time > 1010)
        assert len(ra.gains()) == 2 and len(rb.gains()) == 1


async def test_token_strictly_increases_over_every_acquisition(dsn: str) -> None:
    tokens: list[int] = []
    for _ in range(4):
        rec = Recorder("solo")
        k = keeper(dsn, rec, slots=3)
        async with group() as tg:
            await start(tg, k)
            await eventually(lambda k=k: len(k.held) == 3)  # type: ignore[misc]
            await k.aclose()
        assert [e[0] for e in rec.events] == ["gain"] * 3 + ["lose"] * 3
        tokens += [e[2] for e in rec.gains()]
    assert tokens == sorted(set(tokens)) and len(tokens) == 12
    assert await query(dsn, "SELECT * FROM mdgate_leases") == []  # aclose released them
    assert await query(dsn, "SELECT * FROM mdgate_fleet_instances") == []


async def test_dead_keeper_slot_taken_over_after_db_expiry(dsn: str) -> None:
    ra, rb = Recorder("a"), Recorder("b")
    a = keeper(dsn, ra, ttl=1.0, poll=0.05)
    b = keeper(dsn, rb, ttl=1.0, poll=0.05)
    async with group() as tg:
        scope_a = await start(tg, a)
        await eventually(lambda: len(a.held) == 2)
        await start(tg, b)
        await eventually(lambda: len(a.held) == 1 and len(b.held) == 1)
        (dead_slot,) = a.held
        scope_a.cancel()  # death: no on_lose, nothing released, no more renewals
        await anyio.sleep(0.05)
        ((expires,),) = await query(
            dsn, "SELECT max(expires_at) FROM mdgate_leases WHERE holder = 'a'")
        assert isinstance(expires, datetime)
        await eventually(lambda: len(b.held) == 2, timeout=5)
        gain = rb.gains()[-1]
        assert gain[1] == dead_slot and gain[3] is True  # a takeover
        assert gain[4] >= expires.timestamp() - 0.05  # not before the database expiry
        assert gain[4] <= expires.timestamp() + 1.0  # and promptly after it
        assert gain[2] > max(e[2] for e in ra.gains())
        assert b.status()["taken_over"] == 1
        assert ("lose", dead_slot) not in ra.events  # the dead keeper was told nothing


async def _fresh_server(server: PostgresServer) -> str:
    dsn = server.create_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        upgrade(conn)
    return dsn


async def test_renew_failing_loses_slot_by_local_expiry_before_db_expiry_then_reconnects(
    pg_factory: Callable[[], PostgresServer],
) -> None:
    server = pg_factory()
    dsn = await _fresh_server(server)
    clock = ManualClock()
    rec = Recorder("a")
    k = keeper(dsn, rec, slots=1, clock=clock, connect_timeout=2.0)
    async with group() as tg:
        await start(tg, k)
        await eventually(lambda: len(k.held) == 1)  # taken at clock 1000.0 (no renewal yet)
        token = k.held[0]
        ((expires,),) = await query(dsn, "SELECT max(expires_at) FROM mdgate_leases")
        await anyio.to_thread.run_sync(server.stop)
        await drive(clock, lambda: k.status()["state"] == "down", step=k.period)
        await clock.advance(1008.0 - 0.01 - clock.time)
        await anyio.sleep(0.05)
        assert k.held == {0: token} and rec.events == [("gain", 0, token, False, rec.events[0][4])]
        await clock.advance(0.02)  # ttl - ttl/5 after the acquisition started: lost here
        await eventually(lambda: rec.events[-1] == ("lose", 0))
        assert k.held == {} and k.status()["lost"] == 1
        assert time.time() < expires.timestamp()  # the database still had it for us
        await anyio.to_thread.run_sync(server.start)
        # our row outlived our claim: the database expiry was still ahead
        rows = await query(dsn, "SELECT holder, token, expires_at > now() FROM mdgate_leases")
        assert rows == [("a", token, True)] * len(UNITS)
        await drive(clock, lambda: len(k.held) == 1, step=0.25, timeout=20)
        assert k.status()["state"] == "ok"
        gain = rec.gains()[-1]
        assert gain[1] == 0 and gain[2] > token and gain[3] is False


async def test_renew_with_stale_token_reports_slot_lost(dsn: str) -> None:
    clock = ManualClock()
    rec = Recorder("a")
    k = keeper(dsn, rec, slots=1, clock=clock)
    async with group() as tg:
        await start(tg, k)
        await eventually(lambda: len(k.held) == 1)
        # another holder took the slot over (its token is newer)
        await query(dsn, "UPDATE mdgate_leases SET holder = 'intruder', "
                         "token = nextval('mdgate_lease_token')")
        await drive(clock, lambda: k.held == {}, step=k.period)
        assert rec.events[-1] == ("lose", 0) and k.status()["lost"] == 1
        await drive(clock, lambda: clock.time > 1005)
        assert {h for h, in await query(dsn, "SELECT holder FROM mdgate_leases")} == {"intruder"}
        assert len(rec.gains()) == 1  # the intruder's live rows are not taken


async def test_slot_is_taken_all_or_none(dsn: str) -> None:
    await query(dsn, "INSERT INTO mdgate_leases VALUES "
                     "('yahoo', 'k2', 0, 'other', 1, now() + interval '1 h')")
    clock = ManualClock()
    rec = Recorder("a")
    k = keeper(dsn, rec, slots=2, clock=clock)
    async with group() as tg:
        await start(tg, k)
        await drive(clock, lambda: clock.time > 1030, step=1.0, timeout=20)
        assert set(k.held) == {1}  # slot 0 is half another's: none of its rows are ours
        rows = await query(dsn, "SELECT slot, holder FROM mdgate_leases ORDER BY slot, provider")
        assert rows == [(0, "other"), (1, "a"), (1, "a")]
        # the acquisition itself (as when the other took it after this keeper's scan)
        db = Reconnecting(dsn, 5.0)
        try:
            assert await k._try_acquire(db, 0) is False
        finally:
            await db.reset()
        assert await query(dsn, "SELECT slot, holder FROM mdgate_leases ORDER BY slot, provider") == rows
        assert set(k.held) == {1} and len(rec.gains()) == 1


async def test_acquisition_finishing_past_its_local_expiry_is_not_used(dsn: str) -> None:
    # a dead holder's expired rows, locked by somebody for a while
    await query(dsn, "INSERT INTO mdgate_leases SELECT p, c, 0, 'dead', 1, now() - interval '1 s' "
                     "FROM (VALUES ('example', 'default'), ('yahoo', 'k2')) AS u(p, c)")
    clock = ManualClock()
    rec = Recorder("a")
    k = keeper(dsn, rec, slots=1, clock=clock)
    async with await psycopg.AsyncConnection.connect(dsn) as locker, group() as tg:
        await locker.execute("SELECT * FROM mdgate_leases FOR UPDATE")
        with capture_logs() as logs:
            await start(tg, k)
            await anyio.sleep(0.3)  # the acquisition started at 1000.0 and waits on the lock
            await clock.advance(8.0)  # past its local expiry (ttl - ttl/5)
            await locker.rollback()
            await eventually(lambda: any(e["event"] == "lease_acquired_too_late" for e in logs))
            await anyio.sleep(0.1)
        assert rec.events == [] and k.held == {}  # never handed to on_gain
        await drive(clock, lambda: len(k.held) == 1)  # the next poll takes it properly
        assert [e[0] for e in rec.events] == ["gain"] and rec.events[0][3] is False


async def test_free_slot_above_share_after_a_whole_ttl_and_handed_to_newcomers_only(dsn: str) -> None:
    # a live instance that takes nothing: the fair share of 2 slots is 1
    await query(dsn, "INSERT INTO mdgate_fleet_instances VALUES ('ghost', 'ingest', now() + interval '1 h')")
    clock = ManualClock()
    rec = Recorder("a")
    k = keeper(dsn, rec, slots=2, clock=clock)
    async with group() as tg:
        await start(tg, k)
        await eventually(lambda: len(k.held) == 1)  # the first poll, at 1000.0: the other is free
        await drive(clock, lambda: len(k.held) == 2 or clock.time >= 1009.5)
        assert len(k.held) == 1 and k.share == 1
        await drive(clock, lambda: len(k.held) == 2, step=0.5)  # free for a whole ttl: taken
        assert clock.time == 1010.0
        await drive(clock, lambda: clock.time > 1040, step=1.0, timeout=20)
        assert len(k.held) == 2 and k.status()["handed_over"] == 0  # the ghost does not get it back
        await query(dsn, "INSERT INTO mdgate_fleet_instances VALUES "
                         "('newbie', 'ingest', now() + interval '1 h')")
        await drive(clock, lambda: len(k.held) == 1, step=0.5)
        assert k.status()["handed_over"] == 1


async def test_never_two_holders_in_random_interleavings(dsn: str) -> None:
    """
    Real clock, short ttl: keepers acquire, renew, hand over, die, restart,
    lose their connections and have slow callbacks, in a random order;
    a slot is never held (on_gain started, on_lose not finished) by two.

    The guarantee assumes a keeper's event loop is never stalled longer than the
    margin (ttl/5) before its local expiry; the ttl leaves 0.2 s of it, so that a
    loaded machine (the whole suite on 2 cores) does not break the assumption
    the test is not about. What a longer stall would let through, fencing refuses.
    """
    rng = random.Random(16)
    prefix = f"lk{os.getpid()}_"  # a login role per keeper (roles are server-wide)
    slots, ttl = 3, 1.0
    holding: dict[int, set[str]] = {s: set() for s in range(slots)}
    violations: list[str] = []
    tokens: dict[int, list[int]] = {s: [] for s in range(slots)}
    gains = takeovers = losses = 0

    def make(name: str) -> LeaseKeeper:
        async def on_gain(slot: int, token: int, taken_over: bool) -> None:
            nonlocal gains, takeovers
            if holding[slot]:
                violations.append(f"{name} gains {slot} held by {holding[slot]}")
            holding[slot].add(name)
            tokens[slot].append(token)
            gains += 1
            takeovers += taken_over
            await anyio.sleep(rng.random() * 0.03)

        async def on_lose(slot: int) -> None:
            nonlocal losses
            losses += 1
            await anyio.sleep(rng.random() * 0.03)
            holding[slot].discard(name)

        role = f"{prefix}{name}"
        return LeaseKeeper(dsn.replace("postgres@", f"{role}@"), name, UNITS, slots, ttl,
                           on_gain=on_gain, on_lose=on_lose, poll=rng.choice([0.02, 0.05, 0.1]),
                           connect_timeout=1.0, backoff_max=0.05)

    async with group() as tg:
        running: dict[str, tuple[LeaseKeeper, anyio.CancelScope]] = {}
        serial = 0

        async def spawn() -> None:
            nonlocal serial
            serial += 1
            await query(dsn, f"CREATE ROLE {prefix}k{serial} LOGIN SUPERUSER")
            k = make(f"k{serial}")
            running[k.instance] = (k, await start(tg, k))

        cut_off: set[str] = set()  # one partition per role at a time (two ALTER ROLE on one role race)

        async def partition(role: str) -> None:
            cut_off.add(role)
            await query(dsn, f"ALTER ROLE {role} NOLOGIN")
            await query(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE usename = %s", role)
            await anyio.sleep(0.5 + rng.random() * 2.0)  # past the local expiry (0.8 ttl), or not
            await query(dsn, f"ALTER ROLE {role} LOGIN")
            cut_off.discard(role)

        async def hold_locks(sql: str) -> None:
            async with await psycopg.AsyncConnection.connect(dsn, application_name="chaos") as conn:
                await conn.execute(sql.encode())
                await anyio.sleep(0.35 + rng.random() * 1.3)
                await conn.rollback()

        for _ in range(3):
            await spawn()
        deadline = time.monotonic() + 9.0
        while time.monotonic() < deadline:
            await anyio.sleep(rng.random() * 0.3)
            action = rng.choice(["kill", "close", "cut", "partition", "partition", "stall", "lock", "wait"])
            name = rng.choice(sorted(running))
            k, scope = running[name]
            if action == "kill":  # death: its connections die with it, nothing is released
                scope.cancel()
                del running[name]
                for owners in holding.values():
                    owners.discard(name)
                await spawn()
            elif action == "close":
                await k.aclose()
                del running[name]
                await spawn()
            elif action == "partition" and f"{prefix}{name}" not in cut_off:  # it cannot reach the database
                tg.start_soon(partition, f"{prefix}{name}")
            elif action == "stall":  # one keeper's renewals hang on its row locks: it expires locally
                tg.start_soon(hold_locks, f"SELECT 1 FROM mdgate_leases WHERE holder = '{name}' FOR UPDATE")
            elif action == "lock":  # nobody can renew or acquire for a while
                tg.start_soon(hold_locks, "LOCK TABLE mdgate_leases IN ACCESS EXCLUSIVE MODE")
            elif action == "cut":  # every keeper's connections are dropped at once
                await query(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                 "AND application_name <> 'chaos'")
        await anyio.sleep(2 * ttl)
        assert violations == []
        assert gains >= 6 and takeovers >= 1 and losses >= 3  # the run did churn
        # each slot's holders in turn: strictly larger tokens (fencing), and no token given twice
        assert all(t == sorted(set(t)) for t in tokens.values())
        assert len({t for ts in tokens.values() for t in ts}) == gains
        # settled: every slot held by one live keeper, the fair share each
        def settled() -> bool:
            shares = sorted(len(k.held) for k, _ in running.values())
            return (all(len(h) == 1 for h in holding.values()) and sum(shares) == slots
                    and shares[-1] <= math.ceil(slots / len(running)))

        await eventually(settled, timeout=10 * ttl)  # hand-overs for the fair share take a few ttl
    for i in range(1, serial + 1):
        await query(dsn, f"DROP ROLE IF EXISTS {prefix}k{i}")


async def test_password_never_in_status_or_logs(unused_dsn: str) -> None:
    clock = ManualClock()
    with capture_logs() as logs:
        k = keeper(unused_dsn, Recorder("a"), clock=clock, connect_timeout=1.0)
        async with group() as tg:
            await start(tg, k)
            await drive(clock, lambda: k.status()["state"] == "down")
            assert "s3cret" not in str(k.status()) and "***" in str(k.status()["last_error"])
    assert logs and "s3cret" not in repr(logs)
