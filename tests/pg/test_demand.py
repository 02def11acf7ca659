"""
The demand registry (:mod:`mdgate._fleet.demand`, migration 4) against a real
PostgreSQL: the publisher's reference counts, linger and batched writes (on a
:class:`~mdgate._clock.ManualClock`), NOTIFY waking the follower, expired
heartbeats ignored, both surviving a database restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import psycopg
import pytest
from structlog.testing import capture_logs
from tests.pg.test_leases import drive, eventually, group, query

from mdgate._clock import ManualClock
from mdgate._fleet.demand import DemandFollower, DemandPublisher
from mdgate.plugins.pg_routes.migrations import upgrade
from mdgate.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration


async def rows(dsn: str, instance: str = "f1") -> set[str]:
    got = await query(dsn, "SELECT instrument FROM mdgate_demand WHERE instance = %s", instance)
    return {r[0] for r in got}


class Seen:
    """The follower's on_change calls."""

    def __init__(self) -> None:
        self.calls: list[frozenset[str]] = []

    def __call__(self, demand: frozenset[str]) -> None:
        self.calls.append(demand)

    @property
    def last(self) -> set[str] | None:
        return set(self.calls[-1]) if self.calls else None


async def test_publisher_refcounts_and_lingers(dsn: str) -> None:
    clock = ManualClock()
    pub = DemandPublisher(dsn, "f1", linger=5.0, clock=clock)
    async with group() as tg:
        await tg.start(pub.run)
        assert pub.acquire("NSE:A") and pub.acquire("NSE:A") and pub.acquire("NSE:B")
        await eventually(lambda: pub.status()["written"] == 2)
        assert await rows(dsn) == {"NSE:A", "NSE:B"}
        pub.release("NSE:A")  # one client left, one still there
        pub.release("NSE:B")  # the last one: lingers
        assert pub.wanted() == {"NSE:A", "NSE:B"} and pub.status()["lingering"] == 1
        await clock.advance(4.99)
        await anyio.sleep(0.1)
        assert pub.wanted() == {"NSE:A", "NSE:B"} and await rows(dsn) == {"NSE:A", "NSE:B"}
        await clock.advance(0.01)  # linger over: removed
        assert pub.wanted() == {"NSE:A"}
        await eventually(lambda: pub.status()["written"] == 1)
        assert await rows(dsn) == {"NSE:A"}
        # a client coming back while it lingers keeps it: nothing is written
        pub.release("NSE:A")
        await clock.advance(3.0)
        batches = pub.batches
        assert pub.acquire("NSE:A")
        await clock.advance(10.0)
        await anyio.sleep(0.1)
        assert pub.wanted() == {"NSE:A"} and await rows(dsn) == {"NSE:A"} and pub.batches == batches
        pub.release("NSE:X")  # never acquired: ignored
        assert pub.wanted() == {"NSE:A"}


async def test_publisher_writes_in_batches(dsn: str) -> None:
    clock = ManualClock()
    pub = DemandPublisher(dsn, "f1", linger=0.0, clock=clock, batch=0.1)
    async with group() as tg:
        await tg.start(pub.run)
        for i in range(200):
            pub.acquire(f"NSE:S{i}")
        await eventually(lambda: pub.status()["written"] == 200)
        assert pub.batches == 1 and len(await rows(dsn)) == 200
        pub.acquire("NSE:LATE")
        pub.release("NSE:S0")
        await anyio.sleep(0.3)  # real time passes; the batch interval (0.1 s on the clock) does not
        assert pub.batches == 1 and "NSE:LATE" not in await rows(dsn)
        await clock.advance(0.1)
        await eventually(lambda: pub.batches == 2)
        got = await rows(dsn)
        assert "NSE:LATE" in got and "NSE:S0" not in got and len(got) == 200


async def test_notify_wakes_follower_promptly_and_expired_instances_are_ignored(dsn: str) -> None:
    # a dead instance's demand stays in the table; its heartbeat expired
    await query(dsn, "INSERT INTO mdgate_fleet_instances VALUES ('dead', 'fanout', now() - interval '1 s')")
    await query(dsn, "INSERT INTO mdgate_demand VALUES ('dead', 'NSE:GHOST')")
    clock = ManualClock()
    seen = Seen()
    follower = DemandFollower(dsn, seen, poll=3600.0, clock=clock)  # only NOTIFY can wake it
    pub1 = DemandPublisher(dsn, "f1", linger=0.0)  # real clock: batches 0.1 s apart
    pub2 = DemandPublisher(dsn, "f2", linger=0.0)
    async with group() as tg:
        await tg.start(follower.run)
        assert seen.calls == [frozenset()]  # once at start
        await tg.start(pub1.run)
        await tg.start(pub2.run)
        pub1.acquire("NSE:A")
        await eventually(lambda: seen.last == {"NSE:A"}, timeout=2)
        pub2.acquire("NSE:A")
        pub2.acquire("NSE:B")
        await eventually(lambda: seen.last == {"NSE:A", "NSE:B"}, timeout=2)
        pub1.release("NSE:A")  # f2 still wants it
        await eventually(lambda: pub1.status()["written"] == 0)
        await anyio.sleep(0.2)
        assert seen.last == {"NSE:A", "NSE:B"}
        assert all("NSE:GHOST" not in c for c in seen.calls)
        assert len(seen.calls) == 3  # called on changes only
        # f2 dies: its rows stay, its heartbeat expires (no notification), the poll notices
        pub1.acquire("NSE:C")
        await eventually(lambda: seen.last == {"NSE:A", "NSE:B", "NSE:C"}, timeout=2)
        await query(dsn, "UPDATE mdgate_fleet_instances SET expires_at = now() - interval '1 second' "
                         "WHERE instance = 'f2'")
        tg.cancel_scope.cancel()
    async with group() as tg:
        await tg.start(follower.run)
        await drive(clock, lambda: seen.last == {"NSE:C"}, step=1800.0)


async def _fresh(server: PostgresServer) -> str:
    dsn = server.create_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        upgrade(conn)
    return dsn


async def test_publisher_and_follower_reconnect_after_database_restart(
    pg_factory: Callable[[], PostgresServer],
) -> None:
    server = pg_factory()
    dsn = await _fresh(server)
    seen = Seen()
    pub = DemandPublisher(dsn, "f1", linger=0.0, backoff_max=0.2, connect_timeout=2.0)
    follower = DemandFollower(dsn, seen, poll=0.2, backoff_max=0.2, connect_timeout=2.0)
    async with group() as tg:
        await tg.start(pub.run)
        await tg.start(follower.run)
        pub.acquire("NSE:A")
        await eventually(lambda: seen.last == {"NSE:A"}, timeout=5)
        await anyio.to_thread.run_sync(server.stop)
        await eventually(lambda: pub.status()["state"] == follower.status()["state"] == "down", timeout=5)
        pub.acquire("NSE:B")  # while the database is down
        pub.release("NSE:A")
        await anyio.to_thread.run_sync(server.start)
        await eventually(lambda: seen.last == {"NSE:B"}, timeout=10)
        assert pub.status()["state"] == follower.status()["state"] == "ok"
        assert await rows(dsn) == {"NSE:B"}  # rewritten whole after the reconnection


async def test_password_never_in_status_or_logs(unused_dsn: str) -> None:
    clock = ManualClock()
    with capture_logs() as logs:
        pub = DemandPublisher(unused_dsn, "f1", linger=0.0, clock=clock, connect_timeout=1.0)
        follower = DemandFollower(unused_dsn, Seen(), clock=clock, connect_timeout=1.0)
        async with group() as tg:
            await tg.start(pub.run)
            await tg.start(follower.run)
            for part in (pub, follower):
                status: dict[str, Any] = part.status()
                assert status["state"] == "down" and "***" in status["last_error"]
                assert "s3cret" not in str(status)
    assert logs and "s3cret" not in repr(logs)
