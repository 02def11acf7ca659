"""
Connection-slot leases in PostgreSQL, with fencing tokens (the ingest role).

A :class:`LeaseKeeper` runs in every ingest instance. Slot ``i`` covers the
rows ``(provider, credential, i)`` of every *unit* (the provider credentials
the instance connects with) in ``mdgate_leases``; they are taken together, in
one transaction, with one new fencing token from the sequence
``mdgate_lease_token`` (so tokens strictly increase, over every acquisition
by any instance). The rules:

* **Heartbeat and renewal** every ``ttl/3`` (own clock): the instance's row in
  ``mdgate_fleet_instances`` (role ``ingest``) and the held rows get
  ``expires_at = now() + ttl`` (the database's clock at the start of the
  statement, never earlier than the start of the renewal on the instance's clock). A renewal matches
  ``holder = me AND token = T``: a slot whose rows were taken over (or are
  gone) is *lost* (``on_lose`` awaited).
* **Acquisition** every ``poll``: a slot whose rows are all absent, expired
  or this instance's own is taken; ``taken_over`` says another holder's row
  was there (it died or was cut off).
* **Fair share**: at most ``ceil(slots / live ingest instances)`` slots,
  unless a slot stayed free for a whole ``ttl``. Above its share while
  another live instance holds fewer than the share, an instance hands the
  extra slots over: ``on_lose`` first, then it deletes the rows.
* **Local expiry**: a slot whose last successful renewal *started* more than
  ``ttl - ttl/5`` ago (own clock) is lost (``on_lose`` awaited), before the
  database lets anybody else take it (at the renewal's ``expires_at``).

Rows of this instance that it no longer holds (lost locally, stale) are
deleted once their ``on_lose`` has returned. Requires the schema (migration 4:
``mdgate db upgrade``). The DSN's password never reaches logs or errors.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import psycopg
import structlog

from mdgate._backoff import Backoff
from mdgate._clock import MONOTONIC, Clock
from mdgate._redact import mask_url
from mdgate.plugins.pg_routes._connect import aconnect
from mdgate.plugins.pg_routes.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

__all__ = ["ROLE_INGEST", "LeaseKeeper", "Reconnecting"]

log = structlog.get_logger(__name__)

#: ``mdgate_fleet_instances.role`` of lease keepers.
ROLE_INGEST: Final = "ingest"

#: What a database round trip may raise when the database is gone or broken.
DB_ERRORS: Final = (psycopg.Error, DatabaseUnavailable, TimeoutError, OSError)

HEARTBEAT_SQL: Final = """
INSERT INTO mdgate_fleet_instances (instance, role, expires_at)
VALUES (%(instance)s, %(role)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (instance) DO UPDATE SET role = EXCLUDED.role, expires_at = EXCLUDED.expires_at
"""

_RENEW_SQL: Final = """
UPDATE mdgate_leases SET expires_at = now() + make_interval(secs => %(ttl)s)
WHERE holder = %(instance)s
  AND (slot, token) IN (SELECT * FROM unnest(%(slots)s::int[], %(tokens)s::bigint[]))
RETURNING slot
"""

_UNITS: Final = (
    "(provider, credential) IN (SELECT * FROM unnest(%(providers)s::text[], %(credentials)s::text[]))"
)

_SCAN_SQL: Final = f"""
SELECT slot, holder, token, expires_at > now() AS live FROM mdgate_leases
WHERE {_UNITS} AND slot < %(slots)s
"""

_LIVE_SQL: Final = """
SELECT instance FROM mdgate_fleet_instances WHERE role = %(role)s AND expires_at > now()
"""

_LOCK_SQL: Final = f"""
SELECT holder, expires_at > now() AS live FROM mdgate_leases
WHERE slot = %(slot)s AND {_UNITS} FOR UPDATE
"""

_TAKE_SQL: Final = """
INSERT INTO mdgate_leases (provider, credential, slot, holder, token, expires_at)
SELECT p, c, %(slot)s, %(instance)s, %(token)s, now() + make_interval(secs => %(ttl)s)
FROM unnest(%(providers)s::text[], %(credentials)s::text[]) AS u(p, c)
ON CONFLICT (provider, credential, slot) DO UPDATE
SET holder = EXCLUDED.holder, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
WHERE mdgate_leases.expires_at <= now() OR mdgate_leases.holder = %(instance)s
"""

_DELETE_SQL: Final = """
DELETE FROM mdgate_leases
WHERE holder = %(instance)s
  AND (slot, token) IN (SELECT * FROM unnest(%(slots)s::int[], %(tokens)s::bigint[]))
"""


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (libpq never echoes passwords)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class _Busy(Exception):
    """A row of the slot is held by another live instance: roll the acquisition back."""


class Reconnecting:
    """
    One autocommit connection, opened on demand and dropped after an error.

    Args:
        dsn: the database (its password is never logged).
        timeout: seconds allowed to connect, and for each round trip.
    """

    def __init__(self, dsn: str, timeout: float) -> None:
        self._dsn = dsn
        self.timeout = timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        """The open connection (connecting first if needed)."""
        if self._conn is None or self._conn.closed:
            self._conn = await aconnect(self._dsn, self.timeout, autocommit=True, keepalives=True)
        return self._conn

    async def reset(self) -> None:
        """Close the connection (after an error): the next :meth:`get` reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                try:
                    await conn.close()
                except (psycopg.Error, OSError):  # pragma: no cover - already broken
                    pass

    def describe(self, exc: BaseException) -> str:
        """``exc`` as one line naming the database, password masked."""
        if isinstance(exc, DatabaseUnavailable):
            return str(exc)
        return f"database at {mask_url(self._dsn)}: {first_line(exc)}"


class LeaseKeeper:
    """
    Holds this instance's fair share of the connection slots (see the module doc).

    Args:
        dsn: the PostgreSQL database (schema version 4 or later).
        instance: this instance's name (unique in the fleet).
        units: the (provider, credential) pairs this instance connects with.
        slots: connection slots per unit (``[fleet] slots``).
        ttl: seconds a lease lives without renewal (``[fleet] lease_ttl``).
        clock: every time rule (renewal period, local expiry, poll, backoff).
        on_gain: awaited with (slot, token, taken_over) once a slot is held.
        on_lose: awaited with the slot when it is no longer held; its rows are
            released (or may be taken by others) only after it returned.
        poll: seconds between attempts to take free slots.
        connect_timeout: seconds for connecting and for each round trip.
        backoff_initial: first reconnection delay ceiling, in seconds.
        backoff_max: largest reconnection delay (default: ``ttl/3``).
    """

    def __init__(
        self,
        dsn: str,
        instance: str,
        units: Sequence[tuple[str, str]],
        slots: int,
        ttl: float,
        *,
        clock: Clock = MONOTONIC,
        on_gain: Callable[[int, int, bool], Awaitable[None]],
        on_lose: Callable[[int], Awaitable[None]],
        poll: float = 0.5,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float | None = None,
    ) -> None:
        if not instance:
            raise ValueError("LeaseKeeper: instance must not be empty")
        if not units:
            raise ValueError("LeaseKeeper: no units (provider, credential) to lease")
        if slots < 1:
            raise ValueError(f"LeaseKeeper: slots must be >= 1, got {slots}")
        if not ttl > 0:
            raise ValueError(f"LeaseKeeper: ttl must be > 0, got {ttl}")
        self.instance = instance
        self.units: tuple[tuple[str, str], ...] = tuple(sorted(set(units)))
        self.slots = slots
        self.ttl = float(ttl)
        #: Seconds between renewals (and heartbeats).
        self.period = self.ttl / 3
        #: A slot is lost locally ``ttl - margin`` after its last successful renewal started.
        self.margin = self.ttl / 5
        self.poll = poll
        self._clock = clock
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._dsn = dsn
        self._timeout = connect_timeout
        self._backoff = (backoff_initial, backoff_max if backoff_max is not None else self.period)
        #: The slots held now: slot -> fencing token.
        self.held: dict[int, int] = {}
        self._renewed: dict[int, float] = {}  # slot -> clock time its last good renewal started
        self._losing: set[int] = set()  # tokens whose on_lose runs: rows not deleted yet
        self._free_since: dict[int, float] = {}
        # The live instances when a slot was last taken above the share (it was free for a whole
        # ttl: they did not take it): surplus slots go only to an instance not among them.
        self._surplus_with: frozenset[str] = frozenset()
        self._offset = zlib.crc32(instance.encode()) % slots
        self._units_args = {
            "providers": [p for p, _ in self.units],
            "credentials": [c for _, c in self.units],
        }
        self._lock: anyio.Lock | None = None
        self._changed: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._stopped: anyio.Event | None = None
        self._state = "starting"
        self._last_error: str | None = None
        self.share = slots
        self.live_instances = 1
        self.counts: Counter[str] = Counter()

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """``/status``: database state, slots held (slot -> token), share, counters."""
        return {
            "instance": self.instance,
            "state": self._state,
            "last_error": self._last_error,
            "slots": self.slots,
            "ttl": self.ttl,
            "held": {str(i): t for i, t in sorted(self.held.items())},
            "share": self.share,
            "live_instances": self.live_instances,
            **{k: self.counts[k] for k in ("acquired", "taken_over", "lost", "handed_over")},
        }

    def _ok(self) -> None:
        if self._state != "ok":
            if self._state == "down":
                log.info("lease_db_reconnected", instance=self.instance)
            self._state, self._last_error = "ok", None

    def _failed(self, db: Reconnecting, exc: BaseException) -> None:
        error = db.describe(exc)
        down = isinstance(exc, psycopg.OperationalError | DatabaseUnavailable | TimeoutError | OSError)
        state = "down" if down else "error"
        if state != self._state:
            log.warning("lease_db_failed", instance=self.instance, state=state, error=error)
        self._state, self._last_error = state, error

    # ------------------------------------------------------------------- run

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """
        Keep the leases until cancelled (cancelling does not release them: use
        :meth:`aclose`). ``task_status.started()`` once the first heartbeat
        was attempted.
        """
        self._lock = anyio.Lock()
        self._changed = anyio.Event()
        self._stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._renew_loop)
                tg.start_soon(self._acquire_loop)
                tg.start_soon(self._expiry_loop)
                task_status.started()
        finally:
            self._tg = None
            self._stopped.set()

    async def aclose(self) -> None:
        """
        Release every held slot: ``on_lose`` first, while :meth:`run` still renews the leases
        (as in a hand-over: no other instance can take them meanwhile), then stop :meth:`run`,
        then delete the rows and the heartbeat.
        """
        held: dict[int, int] = {}
        with anyio.CancelScope(shield=True):
            if self._lock is not None:
                async with self._lock:  # the expiry loop cannot lose them under us
                    for slot, token in sorted(self.held.items()):
                        await self._call_lose(slot)
                        held[slot] = token
                    self.held.clear()
                    self._renewed.clear()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        if self._stopped is not None:
            await self._stopped.wait()
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(self._timeout + 1.0):
                    async with await aconnect(self._dsn, self._timeout, autocommit=True) as conn:
                        await conn.execute(_DELETE_SQL, self._pairs(held))
                        await conn.execute("DELETE FROM mdgate_fleet_instances WHERE instance = %s",
                                           (self.instance,))
            except DB_ERRORS as exc:
                log.warning("lease_release_failed", instance=self.instance,
                            error=Reconnecting(self._dsn, 0).describe(exc))
                return
            if held:
                log.info("lease_released", instance=self.instance, slots=sorted(held))

    def _pairs(self, slot_tokens: dict[int, int]) -> dict[str, Any]:
        return {"instance": self.instance, "slots": list(slot_tokens), "tokens": list(slot_tokens.values())}

    def _signal(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = anyio.Event()

    # --------------------------------------------------------- gain and lose

    async def _gain(self, slot: int, token: int, taken_over: bool, started: float) -> None:
        assert self._lock is not None
        async with self._lock:
            if self._clock.now() >= started + self.ttl - self.margin:
                # the transaction took so long (waiting on locks) that the slot is already past
                # its local expiry: not ours (the next poll deletes the rows)
                log.warning("lease_acquired_too_late", instance=self.instance, slot=slot, token=token)
                return
            self.held[slot] = token
            self._renewed[slot] = started
            self._free_since.pop(slot, None)
            self.counts["acquired"] += 1
            self.counts["taken_over"] += taken_over
            self._signal()
            log.info("lease_acquired", instance=self.instance, slot=slot, token=token, taken_over=taken_over)
            try:
                await self._on_gain(slot, token, taken_over)
            except Exception as exc:  # the runtime's callback must not stop the keeper
                log.error("lease_gain_callback_failed", slot=slot, error=first_line(exc))

    async def _lose(self, slot: int, token: int, reason: str) -> None:
        """Slot ``slot`` (held with ``token``) is no longer ours: forget it, then ``on_lose``."""
        assert self._lock is not None
        async with self._lock:
            if self.held.get(slot) != token:
                return
            del self.held[slot]
            self._renewed.pop(slot, None)
            self._losing.add(token)
            self.counts["lost"] += 1
            log.warning("lease_lost", instance=self.instance, slot=slot, token=token, reason=reason)
            try:
                await self._call_lose(slot)
            finally:
                self._losing.discard(token)

    async def _call_lose(self, slot: int) -> None:
        try:
            await self._on_lose(slot)
        except Exception as exc:  # the runtime's callback must not stop the keeper
            log.error("lease_lose_callback_failed", slot=slot, error=first_line(exc))

    async def _hand_over(self, db: Reconnecting, slot: int) -> None:
        """Above the fair share: ``on_lose`` (still renewing meanwhile), then delete the rows."""
        assert self._lock is not None
        async with self._lock:
            token = self.held.get(slot)
            if token is None:
                return
            await self._call_lose(slot)
            del self.held[slot]
            self._renewed.pop(slot, None)
            self.counts["handed_over"] += 1
        log.info("lease_handed_over", instance=self.instance, slot=slot, token=token, share=self.share)
        conn = await db.get()
        with anyio.fail_after(db.timeout):
            await conn.execute(_DELETE_SQL, self._pairs({slot: token}))

    # ---------------------------------------------------------------- renew

    async def _renew_loop(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        db = Reconnecting(self._dsn, self._timeout)
        backoff = Backoff(*self._backoff)
        started = False
        try:
            while True:
                begun = self._clock.now()
                try:
                    await self._renew(db, begun)
                except DB_ERRORS as exc:
                    await db.reset()
                    self._failed(db, exc)
                    delay = min(backoff.next(), self.period)
                else:
                    backoff.reset()
                    self._ok()
                    delay = max(0.0, begun + self.period - self._clock.now())
                if not started:
                    task_status.started()
                    started = True
                await self._clock.sleep(delay)
        finally:
            await db.reset()

    async def _renew(self, db: Reconnecting, begun: float) -> None:
        """Heartbeat, then extend every held slot; a slot not found with our token is lost."""
        held = dict(self.held)
        conn = await db.get()
        with anyio.fail_after(db.timeout):
            beat = {"instance": self.instance, "role": ROLE_INGEST, "ttl": self.ttl}
            await conn.execute(HEARTBEAT_SQL, beat)
            if not held:
                return
            cur = await conn.execute(_RENEW_SQL, {**self._pairs(held), "ttl": self.ttl})
            renewed = Counter(row[0] for row in await cur.fetchall())
        for slot, token in held.items():
            if renewed[slot] == len(self.units):
                if self.held.get(slot) == token:
                    self._renewed[slot] = max(self._renewed.get(slot, begun), begun)
            else:
                await self._lose(slot, token, "stale_token")

    # --------------------------------------------------------------- expiry

    async def _expiry_loop(self) -> None:
        """Lose every slot whose last good renewal started ``ttl - margin`` ago (own clock)."""
        while True:
            now = self._clock.now()
            limit = self.ttl - self.margin
            due = [(s, self.held[s]) for s, t in self._renewed.items() if t + limit <= now and s in self.held]
            for slot, token in due:
                await self._lose(slot, token, "local_expiry")
            if due:
                continue
            deadlines = [t + limit for t in self._renewed.values()]
            assert self._changed is not None
            changed = self._changed
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            await self._clock.wait(changed.wait, timeout)

    # -------------------------------------------------------------- acquire

    async def _acquire_loop(self) -> None:
        db = Reconnecting(self._dsn, self._timeout)
        backoff = Backoff(*self._backoff)
        try:
            while True:
                try:
                    await self._poll_once(db)
                except DB_ERRORS as exc:
                    await db.reset()
                    self._failed(db, exc)
                    await self._clock.sleep(max(backoff.next(), self.poll))
                    continue
                backoff.reset()
                self._ok()
                await self._clock.sleep(self.poll)
        finally:
            await db.reset()

    async def _poll_once(self, db: Reconnecting) -> None:
        """One round: read the slots, delete our stale rows, take free slots, hand over extra ones."""
        now = self._clock.now()
        conn = await db.get()
        with anyio.fail_after(db.timeout):
            cur = await conn.execute(_SCAN_SQL, {**self._units_args, "slots": self.slots})
            rows = await cur.fetchall()
            cur = await conn.execute(_LIVE_SQL, {"role": ROLE_INGEST})
            live = {row[0] for row in await cur.fetchall()} | {self.instance}
        self.live_instances = len(live)
        self.share = math.ceil(self.slots / len(live))
        others: dict[int, str] = {}  # slot -> a live holder other than us
        stale: dict[int, int] = {}
        for slot, holder, token, alive in rows:
            if holder != self.instance:
                if alive:
                    others[slot] = holder
            elif token not in self.held.values() and token not in self._losing:
                stale[slot] = token
        if stale:
            with anyio.fail_after(db.timeout):
                await conn.execute(_DELETE_SQL, self._pairs(stale))
        for slot in range(self.slots):
            if slot in others or slot in self.held:
                self._free_since.pop(slot, None)
            else:
                self._free_since.setdefault(slot, now)
        order = [(self._offset + k) % self.slots for k in range(self.slots)]
        for slot in order:
            if slot not in self._free_since or slot in self.held:
                continue
            if len(self.held) < self.share:
                await self._try_acquire(db, slot)
            elif now - self._free_since[slot] >= self.ttl and await self._try_acquire(db, slot):
                self._surplus_with |= live
        extra = len(self.held) - self.share
        if extra <= 0:
            self._surplus_with = frozenset()
            return
        per_holder = Counter(others.values())
        wanting = sum(self.share - per_holder[x] for x in live - {self.instance} - self._surplus_with
                      if per_holder[x] < self.share)
        for slot in sorted(self.held, reverse=True)[: min(extra, wanting)]:
            await self._hand_over(db, slot)

    async def _try_acquire(self, db: Reconnecting, slot: int) -> bool:
        """Take every row of ``slot`` in one transaction, with one new token, or none."""
        begun = self._clock.now()
        conn = await db.get()
        args = {**self._units_args, "slot": slot, "instance": self.instance, "ttl": self.ttl}
        try:
            with anyio.fail_after(db.timeout):
                async with conn.transaction():  # rolled back by _Busy
                    rows = await (await conn.execute(_LOCK_SQL, args)).fetchall()
                    if any(alive and holder != self.instance for holder, alive in rows):
                        raise _Busy
                    row = await (await conn.execute("SELECT nextval('mdgate_lease_token')")).fetchone()
                    assert row is not None
                    token = int(row[0])
                    cur = await conn.execute(_TAKE_SQL, {**args, "token": token})
                    if cur.rowcount != len(self.units):
                        raise _Busy
        except _Busy:
            return False
        taken_over = any(holder != self.instance for holder, _ in rows)
        await self._gain(slot, token, taken_over, begun)
        return True
