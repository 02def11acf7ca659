"""
The demand registry in PostgreSQL: which instruments the fan-out tier's clients want.

A :class:`DemandPublisher` runs in every fan-out instance, as the client
server's :class:`~mdgate._serve.backends.Interest`: it counts references per
instrument, keeps an instrument ``linger`` seconds after its last client went,
and writes the changes into ``mdgate_demand`` (its own rows) in batches, at
most one every ``batch`` seconds, with a ``NOTIFY mdgate_demand`` in the same
transaction. Its heartbeat (``mdgate_fleet_instances``, role ``fanout``) is
renewed every ``ttl/3``.

A :class:`DemandFollower` runs in the ingest instances: ``LISTEN
mdgate_demand``, plus a poll every ``poll`` seconds (heartbeats expire without
a notification), reading the union of the demand of the *live* instances
(``expires_at > now()``); it calls ``on_change`` once at start and whenever
that set changes.

Both reconnect with backoff while the database is down; a publisher rewrites
all its rows after reconnecting. Every time rule runs on a
:class:`~mdgate._clock.Clock`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import psycopg
import structlog

from mdgate._backoff import Backoff
from mdgate._clock import MONOTONIC, Clock
from mdgate._fleet.leases import DB_ERRORS, HEARTBEAT_SQL, Reconnecting

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

__all__ = ["CHANNEL", "ROLE_FANOUT", "DemandFollower", "DemandPublisher"]

log = structlog.get_logger(__name__)

#: The NOTIFY channel of demand changes.
CHANNEL: Final = "mdgate_demand"
#: ``mdgate_fleet_instances.role`` of demand publishers.
ROLE_FANOUT: Final = "fanout"

_ADD_SQL: Final = """
INSERT INTO mdgate_demand (instance, instrument)
SELECT %(instance)s, i FROM unnest(%(instruments)s::text[]) AS i
ON CONFLICT DO NOTHING
"""
_REMOVE_SQL: Final = """
DELETE FROM mdgate_demand WHERE instance = %(instance)s AND instrument = ANY(%(instruments)s::text[])
"""
_KEEP_ONLY_SQL: Final = """
DELETE FROM mdgate_demand WHERE instance = %(instance)s AND NOT (instrument = ANY(%(instruments)s::text[]))
"""
_UNION_SQL: Final = """
SELECT DISTINCT d.instrument FROM mdgate_demand d
JOIN mdgate_fleet_instances f ON f.instance = d.instance
WHERE f.expires_at > now()
"""


def _is_down(exc: BaseException) -> bool:
    return not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.OperationalError)


class DemandPublisher:
    """
    This fan-out instance's demand, refcounted, lingering, written in batches.

    Args:
        dsn: the PostgreSQL database (schema version 4 or later).
        instance: this instance's name (unique in the fleet).
        linger: seconds an instrument stays wanted after its last release.
        clock: linger, batching, heartbeat and backoff waits.
        ttl: seconds the heartbeat lives without renewal (renewed every ``ttl/3``).
        batch: shortest time between two writes of changes, in seconds.
        connect_timeout: seconds for connecting and for each round trip.
        backoff_initial: first reconnection delay ceiling, in seconds.
        backoff_max: largest reconnection delay, in seconds.
    """

    def __init__(
        self,
        dsn: str,
        instance: str,
        linger: float,
        *,
        clock: Clock = MONOTONIC,
        ttl: float = 10.0,
        batch: float = 0.1,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        if not instance:
            raise ValueError("DemandPublisher: instance must not be empty")
        if not ttl > 0:
            raise ValueError(f"DemandPublisher: ttl must be > 0, got {ttl}")
        self.instance = instance
        self.linger = linger
        self.ttl = float(ttl)
        self.batch = batch
        self._clock = clock
        self._db = Reconnecting(dsn, connect_timeout)
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._refs: Counter[str] = Counter()
        self._lingering: dict[str, float] = {}  # instrument -> clock time it goes
        self._written: set[str] | None = None  # what the database holds for us (None: unknown)
        self._changed: anyio.Event | None = None
        self._state = "starting"
        self._last_error: str | None = None
        #: Transactions that wrote changes (not counting heartbeat-only ones).
        self.batches = 0

    # ------------------------------------------------------------- interest

    def acquire(self, instrument: str) -> bool:
        """Add one client's interest in ``instrument`` (always True: the ingest tier serves it)."""
        self._refs[instrument] += 1
        if self._lingering.pop(instrument, None) is None and self._refs[instrument] == 1:
            self._signal()
        return True

    def release(self, instrument: str) -> None:
        """Drop one client's interest; after the last one the instrument lingers, then goes."""
        if self._refs[instrument] <= 0:
            self._refs.pop(instrument, None)
            return
        self._refs[instrument] -= 1
        if self._refs[instrument] == 0:
            del self._refs[instrument]
            self._lingering[instrument] = self._clock.now() + self.linger
            self._signal()

    def wanted(self) -> set[str]:
        """Instruments wanted now (referenced or lingering)."""
        return set(self._refs) | set(self._lingering)

    def status(self) -> dict[str, Any]:
        """``/status``: database state, instruments referenced / lingering, batches written."""
        return {
            "instance": self.instance,
            "state": self._state,
            "last_error": self._last_error,
            "instruments": len(self._refs),
            "lingering": len(self._lingering),
            "written": None if self._written is None else len(self._written),
            "batches": self.batches,
        }

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    def _expire(self, now: float) -> float | None:
        """Drop lingering instruments whose time is up; return the next such time."""
        for instrument, until in list(self._lingering.items()):
            if until <= now:
                del self._lingering[instrument]
        return min(self._lingering.values(), default=None)

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write demand and heartbeat until cancelled; started after the first attempt."""
        self._changed = anyio.Event()
        started = False
        next_beat = self._clock.now()
        last_write = -float("inf")
        try:
            while True:
                now = self._clock.now()
                next_linger = self._expire(now)
                target = self.wanted()
                dirty = target != self._written
                if now >= next_beat or (dirty and now >= last_write + self.batch):
                    try:
                        changed = await self._write(target)
                    except DB_ERRORS as exc:
                        await self._db.reset()
                        self._written = None
                        self._failed(exc)
                        if not started:
                            task_status.started()
                            started = True
                        await self._clock.sleep(self._backoff.next())
                        continue
                    self._backoff.reset()
                    self._ok()
                    next_beat = now + self.ttl / 3
                    if changed:
                        last_write = now
                if not started:
                    task_status.started()
                    started = True
                wake = [next_beat]
                if next_linger is not None:
                    wake.append(next_linger)
                if self.wanted() != self._written:
                    wake.append(last_write + self.batch)
                assert self._changed is not None
                await self._clock.wait(self._changed.wait, max(0.0, min(wake) - self._clock.now()))
        finally:
            await self._db.reset()

    async def _write(self, target: set[str]) -> bool:
        """
        Heartbeat and the demand diff (everything after a reconnect), NOTIFY when it
        changed; return whether it did.
        """
        conn = await self._db.get()
        args: dict[str, Any] = {"instance": self.instance, "role": ROLE_FANOUT, "ttl": self.ttl}
        with anyio.fail_after(self._db.timeout):
            async with conn.transaction():
                await conn.execute(HEARTBEAT_SQL, args)
                if target == self._written:
                    return False
                changed = 0
                if self._written is None:
                    cur = await conn.execute(_KEEP_ONLY_SQL, {**args, "instruments": sorted(target)})
                    changed += cur.rowcount
                    add = target
                else:
                    gone = self._written - target
                    if gone:
                        cur = await conn.execute(_REMOVE_SQL, {**args, "instruments": sorted(gone)})
                        changed += cur.rowcount
                    add = target - self._written
                if add:
                    cur = await conn.execute(_ADD_SQL, {**args, "instruments": sorted(add)})
                    changed += cur.rowcount
                if changed:
                    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.instance))
        self._written = target
        if changed:
            self.batches += 1
        return changed > 0

    def _ok(self) -> None:
        if self._state == "down":
            log.info("demand_db_reconnected", instance=self.instance)
        self._state, self._last_error = "ok", None

    def _failed(self, exc: BaseException) -> None:
        error = self._db.describe(exc)
        state = "down" if _is_down(exc) else "error"
        if state != self._state:
            log.warning("demand_db_failed", instance=self.instance, state=state, error=error)
        self._state, self._last_error = state, error


class DemandFollower:
    """
    Follows the union of the live fan-out instances' demand.

    Args:
        dsn: the PostgreSQL database (schema version 4 or later).
        on_change: called with the whole set, once at start and on every change.
        poll: seconds between reads without a notification (expired heartbeats).
        clock: poll and backoff waits.
        connect_timeout: seconds for connecting and for each round trip.
        backoff_initial: first reconnection delay ceiling, in seconds.
        backoff_max: largest reconnection delay, in seconds.
    """

    def __init__(
        self,
        dsn: str,
        on_change: Callable[[frozenset[str]], None],
        *,
        poll: float = 2.0,
        clock: Clock = MONOTONIC,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self._on_change = on_change
        self.poll = poll
        self._clock = clock
        self._db = Reconnecting(dsn, connect_timeout)
        self._backoff = Backoff(backoff_initial, backoff_max)
        #: The demand as last read (None before the first read).
        self.demand: frozenset[str] | None = None
        self._state = "starting"
        self._last_error: str | None = None
        #: Reads of the demand so far.
        self.reads = 0

    def status(self) -> dict[str, Any]:
        """``/status``: database state and the number of instruments wanted."""
        return {
            "state": self._state,
            "last_error": self._last_error,
            "instruments": None if self.demand is None else len(self.demand),
            "reads": self.reads,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the demand until cancelled; started after the first attempt."""
        started = False
        try:
            while True:
                try:
                    conn = await self._db.get()
                    with anyio.fail_after(self._db.timeout):
                        await conn.execute(f"LISTEN {CHANNEL}")
                    await self._read(conn)
                    if self._state == "down":
                        log.info("demand_db_reconnected")
                    self._state, self._last_error = "ok", None
                    self._backoff.reset()
                    if not started:
                        task_status.started()
                        started = True
                    await self._follow(conn)
                except DB_ERRORS as exc:
                    await self._db.reset()
                    error = self._db.describe(exc)
                    state = "down" if _is_down(exc) else "error"
                    if state != self._state:
                        log.warning("demand_db_failed", state=state, error=error)
                    self._state, self._last_error = state, error
                    if not started:
                        task_status.started()
                        started = True
                    await self._clock.sleep(self._backoff.next())
        finally:
            await self._db.reset()

    async def _follow(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Re-read at every notification, and every ``poll`` seconds without one."""
        while True:
            await self._clock.wait(lambda: _notified(conn), self.poll)
            await self._read(conn)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with anyio.fail_after(self._db.timeout):
            rows = await (await conn.execute(_UNION_SQL)).fetchall()
        self.reads += 1
        demand = frozenset(row[0] for row in rows)
        if demand == self.demand:
            return
        self.demand = demand
        try:
            self._on_change(demand)
        except Exception as exc:  # the runtime's callback must not stop the follower
            log.error("demand_callback_failed", error=f"{type(exc).__name__}: {exc}")


async def _notified(conn: psycopg.AsyncConnection[Any]) -> None:
    """Return at the next notification (then drain the ones already there)."""
    async for _ in conn.notifies(stop_after=1):
        pass
    async for _ in conn.notifies(timeout=0.01):
        pass
