"""
:class:`PgRouteSource`: routing tables from PostgreSQL, reloaded live.

``load()`` reads the tables once (checking the schema version first, and
upgrading it when ``[database] auto_upgrade`` is on; a database that had no
schema at all is also seeded with the loaded providers' routes) and caches the result
on disk, in a file of this database's own; when the database is unreachable
it falls back to that cache, never to another database's.
``watch()`` LISTENs on ``mdgate_routes`` (the migrations' triggers NOTIFY
on every change), reloads after a short debounce and hands the new table
to the runtime; it survives the database going away, reconnecting with
capped, jittered backoff and reloading once back.
With the tables it reads the trading-calendar overrides
(``mdgate_calendar_sessions``, see :mod:`mdgate.plugins.pg_routes.calendar`) and
hands every change of them to ``on_calendar`` (not cached on disk).

:meth:`PgRouteSource.status` says whether the database answers (``ok``),
cannot be reached (``down``) or can be reached but not read (``error``),
since when and why, for ``/status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import psycopg
import structlog
from psycopg import sql

from mdgate._backoff import Backoff
from mdgate._config import mask_url
from mdgate._errors import ConfigError, RoutingError
from mdgate._model import now_ms
from mdgate.plugins.pg_routes._connect import aconnect, connect
from mdgate.plugins.pg_routes.cache import (
    ForeignCacheError,
    database_identity,
    default_cache_path,
    read_cache,
    write_cache,
)
from mdgate.plugins.pg_routes.calendar import read_calendar_rows
from mdgate.plugins.pg_routes.errors import DatabaseUnavailable, SchemaError
from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, Migration, upgrade
from mdgate.plugins.pg_routes.routes import CODE_ROWS_SQL, EXCHANGE_ROWS_SQL, build_route_table
from mdgate.plugins.pg_routes.seed import SeedResult, installed_plan, seed

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from mdgate._calendar import DaySession
    from mdgate._config import Settings
    from mdgate._routing.table import RouteTable

__all__ = ["CHANNEL", "PgRouteSource"]

log = structlog.get_logger(__name__)

#: The NOTIFY channel the migrations' triggers signal on.
CHANNEL: Final = "mdgate_routes"

#: Seconds allowed for reading the tables, on top of the connect timeout.
_QUERY_TIMEOUT: Final = 60.0
#: Shortest wait between reconnection attempts (the database is never hammered).
_MIN_DELAY: Final = 0.05

_VERSION_SQL: Final = "SELECT coalesce(max(version), 0) FROM schema_migrations"


class PgRouteSource:
    """
    A :class:`~mdgate._routing.table.RouteSource` backed by PostgreSQL.

    Args:
        settings: uses ``[database]`` (url, auto_upgrade, cache_path,
            connect_timeout) and ``[runtime]`` backoff timings.
        debounce: seconds to gather further notifications before reloading.
        health_interval: seconds of silence after which the LISTEN connection
            is probed (so a dead peer is noticed).
        clock: wall clock in epoch ms, for the ``since`` of :meth:`status`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        debounce: float = 0.1,
        health_interval: float = 10.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        db = settings.database
        if db.url is None:
            raise ConfigError("database.url", "not set")
        self._dsn = db.url.reveal()
        self._settings = settings  # the seed of a fresh database comes from the loaded specs
        self.description = f"postgresql {mask_url(self._dsn)}"
        #: Which database this is: names the cache file and is checked when reading it.
        self.database = database_identity(self._dsn, settings.environ)
        self.cache_path: Path = default_cache_path(db.cache_path, settings.environ, self.database.key)
        self._timeout = db.connect_timeout
        self._auto_upgrade = db.auto_upgrade
        self._backoff_initial = max(settings.runtime.backoff_initial, _MIN_DELAY)
        self._backoff_max = max(settings.runtime.backoff_max, self._backoff_initial)
        self._debounce = debounce
        self._health_interval = health_interval
        #: The last table handed out (by ``load`` or ``watch``).
        self.table: RouteTable | None = None
        self._clock = clock
        self._state = "starting"
        self._since = clock()
        self._last_error: str | None = None
        self._attempts = 0
        #: Trading-calendar day overrides (``mdgate_calendar_sessions``) as last read.
        self.calendar_sessions: tuple[DaySession, ...] = ()
        #: Told of every change of :attr:`calendar_sessions` (the gateway's market hours set it).
        self.on_calendar: Callable[[tuple[DaySession, ...]], None] | None = None

    # ---------------------------------------------------------------- status

    def _set(self, state: str, error: str | None = None) -> None:
        """Record the database's state; ``since`` moves only when the state changes."""
        if state != self._state:
            self._state, self._since = state, self._clock()
        if state == "ok":
            self._attempts = 0
        else:
            self._last_error = error
            self._attempts += 1

    def status(self) -> dict[str, Any]:
        """
        The database as ``/status`` shows it: ``state`` (``starting``, ``ok``,
        ``down``: unreachable, ``error``: reachable but the tables cannot be
        read), ``since`` (epoch ms of the last change of state), ``last_error``
        (password masked), ``attempts`` (failures since it last answered) and the
        ``database`` the route cache belongs to.
        """
        return {
            "state": self._state,
            "since": self._since,
            "last_error": self._last_error,
            "attempts": self._attempts,
            "database": self.database.name,
            "cache_path": str(self.cache_path),
        }

    # ------------------------------------------------------------------ load

    async def load(self) -> RouteTable:
        """
        Load the current table (from the database, else from the cache file).

        Raises:
            ConfigError: the schema is behind and ``auto_upgrade`` is off.
            RoutingError: the database is unreachable and there is no usable cache.
        """
        try:
            table = await self._fetch(check_schema=True)
        except RoutingError as exc:
            self._set("down" if isinstance(exc, DatabaseUnavailable) else "error", str(exc))
            log.warning("route_source_unavailable", source=self.description, error=str(exc))
            try:
                table = read_cache(self.cache_path, self.database)
            except FileNotFoundError:
                raise RoutingError(f"{exc}; no route cache at {self.cache_path} to start from") from exc
            except ForeignCacheError as cexc:
                raise RoutingError(f"{exc}; route cache {self.cache_path} not used: {cexc}") from exc
            except (OSError, ValueError) as cexc:
                raise RoutingError(f"{exc}; route cache {self.cache_path} unusable: {cexc}") from exc
            log.warning(
                "route_table_from_cache",
                path=str(self.cache_path),
                database=self.database.name,
                exchanges=len(table.exchanges),
                codes=len(table.codes),
            )
        else:
            self._set("ok")
        self.table = table
        return table

    async def _fetch(self, *, check_schema: bool) -> RouteTable:
        """Read the table from the database and refresh the cache file."""
        try:
            with anyio.fail_after(self._timeout + _QUERY_TIMEOUT):
                table = await self._read(check_schema=check_schema)
        except TimeoutError as exc:
            raise DatabaseUnavailable(
                f"lost the database at {mask_url(self._dsn)}: no answer within "
                f"{self._timeout + _QUERY_TIMEOUT:g} s"
            ) from exc
        log.info(
            "route_table_loaded",
            source=self.description,
            exchanges=len(table.exchanges),
            codes=len(table.codes),
        )
        await anyio.to_thread.run_sync(self._write_cache, table)
        return table

    async def _read(self, *, check_schema: bool) -> RouteTable:
        try:
            conn = await aconnect(self._dsn, self._timeout, autocommit=True)
            async with conn:
                if check_schema:
                    await self._check_schema(conn)
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    exchange_rows = await (await conn.execute(EXCHANGE_ROWS_SQL)).fetchall()
                    code_rows = await (await conn.execute(CODE_ROWS_SQL)).fetchall()
                    calendar = await read_calendar_rows(conn)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(
                f"lost the database at {mask_url(self._dsn)}: {_first_line(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise RoutingError(
                f"cannot read routes from {mask_url(self._dsn)}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        self._take_calendar(calendar)
        # Building 100k codes takes a while: keep it off the event loop.
        return await anyio.to_thread.run_sync(build_route_table, exchange_rows, code_rows)

    def _take_calendar(self, rows: tuple[DaySession, ...]) -> None:
        """Keep the calendar rows read and hand them to ``on_calendar`` when they changed."""
        if rows == self.calendar_sessions:
            return
        self.calendar_sessions = rows
        if self.on_calendar is not None:
            try:
                self.on_calendar(rows)
            except Exception as exc:  # the runtime's callback must not stop the reload
                log.error("calendar_callback_failed", error=f"{type(exc).__name__}: {exc}")

    async def _check_schema(self, conn: psycopg.AsyncConnection) -> None:
        cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        exists = await cur.fetchone()
        version = 0
        if exists and exists[0]:
            row = await (await conn.execute(_VERSION_SQL)).fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            log.warning("schema_newer_than_mdgate", version=version, needed=SCHEMA_VERSION)
        if version >= SCHEMA_VERSION:
            return
        if not self._auto_upgrade:
            raise ConfigError("database.url", str(SchemaError(version, SCHEMA_VERSION)))
        applied, seeded = await anyio.to_thread.run_sync(self._upgrade)
        log.info(
            "schema_upgraded",
            source=self.description,
            from_version=version,
            to_version=SCHEMA_VERSION,
            applied=[m.version for m in applied],
        )
        if seeded is not None:
            log.info(
                "routes_seeded",
                source=self.description,
                providers=seeded.providers,
                exchanges=seeded.exchanges,
                mappings=seeded.mappings,
            )

    def _upgrade(self) -> tuple[list[Migration], SeedResult | None]:
        """
        Apply pending migrations; when this call created the schema (it applied
        migration 1: the database had none), also seed the default routes, so a
        first run works end to end. An existing schema is never seeded: its rows
        are the operator's.
        """
        with connect(self._dsn, self._timeout, autocommit=True) as conn:
            applied = list(upgrade(conn))
            created = any(m.version == 1 for m in applied)
            return applied, seed(conn, installed_plan(self._settings)) if created else None

    def _write_cache(self, table: RouteTable) -> None:
        try:
            write_cache(self.cache_path, table, self.database)
        except OSError as exc:
            log.warning("route_cache_write_failed", path=str(self.cache_path), error=str(exc))

    # ----------------------------------------------------------------- watch

    async def watch(
        self,
        on_change: Callable[[RouteTable], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """
        Follow changes until cancelled, calling ``on_change`` with each new table.

        ``task_status.started()`` is called once the first connection attempt
        is over (LISTEN active, or the database down: then it keeps trying).
        After every reconnection the table is reloaded and handed over.
        """
        started = False
        backoff = Backoff(self._backoff_initial, self._backoff_max, floor=_MIN_DELAY)
        outage_since: float | None = None
        connected_once = False
        while True:
            try:
                conn = await aconnect(self._dsn, self._timeout, autocommit=True, keepalives=True)
            except DatabaseUnavailable as exc:
                self._set("down", str(exc))
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning("route_source_lost", source=self.description, error=str(exc))
                if not started:
                    task_status.started()
                    started = True
                await anyio.sleep(backoff.next())
                continue
            try:
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    if not started:
                        task_status.started()
                        started = True
                    if outage_since is not None:
                        log.info(
                            "route_source_reconnected",
                            source=self.description,
                            down_s=round(time.monotonic() - outage_since, 1),
                            attempts=backoff.attempts,
                        )
                    # Catch up on whatever changed while we were not listening.
                    await self._reload(on_change, force=outage_since is not None or connected_once)
                    outage_since, connected_once = None, True
                    backoff.reset()
                    await self._listen(conn, on_change)
            except (psycopg.OperationalError, DatabaseUnavailable, TimeoutError) as exc:
                self._set(
                    "down",
                    str(exc)
                    if isinstance(exc, DatabaseUnavailable)
                    else f"lost the database at {mask_url(self._dsn)}: {_first_line(exc)}",
                )
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning(
                        "route_source_lost",
                        source=self.description,
                        error=_first_line(exc),
                    )
                await anyio.sleep(backoff.next())

    async def _listen(self, conn: psycopg.AsyncConnection, on_change: Callable[[RouteTable], None]) -> None:
        while True:
            if not await _received(conn, self._health_interval):
                # Probe: raises (or times out) when the peer is gone.
                with anyio.fail_after(self._timeout):
                    await conn.execute("SELECT 1")
                continue
            await _received(conn, self._debounce, first=False)  # a burst -> one reload
            await self._reload(on_change, force=False)

    async def _reload(self, on_change: Callable[[RouteTable], None], *, force: bool) -> None:
        try:
            table = await self._fetch(check_schema=False)
        except DatabaseUnavailable:
            raise
        except RoutingError as exc:
            self._set("error", str(exc))
            log.error("route_table_reload_failed", source=self.description, error=str(exc))
            return
        self._set("ok")
        if not force and table == self.table:
            return
        self.table = table
        try:
            on_change(table)
        except Exception as exc:  # the runtime's callback must not stop the watcher
            log.error("route_change_callback_failed", error=f"{type(exc).__name__}: {exc}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


async def _received(conn: psycopg.AsyncConnection, seconds: float, *, first: bool = True) -> int:
    """
    Wait for notifications and return how many arrived: until the first one
    (``first``) or for the whole ``seconds`` (gathering a burst).
    """
    n = 0
    async for _ in conn.notifies(timeout=seconds, stop_after=1 if first else None):
        n += 1
    return n
