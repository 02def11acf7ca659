"""
The checks of ``mdgate doctor`` that talk to a server: Redis (reachable and
writable) and PostgreSQL (reachable, schema current, routes readable).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

from mdgate._config import Settings, mask_url
from mdgate._doctor.result import CheckResult, failed, passed, skipped

if TYPE_CHECKING:
    from mdgate._routing.table import RouteTable

__all__ = ["KEY_PREFIX", "KEY_TTL", "check_postgres", "check_redis"]

#: Prefix of the throw-away key the Redis check writes (and deletes).
KEY_PREFIX: Final = "mdgate:doctor:"
#: Seconds the throw-away key lives if the delete never comes.
KEY_TTL: Final = 30

_REDIS_HINT: Final = "start Redis, or fix [redis] url / MDGATE_REDIS_URL"
_PG_HINT: Final = "start PostgreSQL, or fix [database] url / MDGATE_DATABASE_URL"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_redis(settings: Settings, timeout: float) -> CheckResult:
    """
    ``[redis] url``, when set: the server answers, and takes a write and a
    delete of a throw-away key (``mdgate:doctor:<random>``, expiring in
    :data:`KEY_TTL` seconds). The URL is shown with its password masked.
    """
    if settings.redis.url is None:
        return skipped("redis", "not configured: in-memory store")
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from mdgate.plugins.stores.redis_store._url import RedisUrl

    url = RedisUrl(settings.redis.url.reveal())
    try:
        client = redis.Redis.from_url(
            url.url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        return failed("redis", url.clean(f"{url.masked}: not a Redis URL: {exc}"), "fix [redis] url")
    key = f"{KEY_PREFIX}{uuid.uuid4().hex}"
    stage = "reach"
    try:
        info = client.info("server")
        version = info.get("redis_version", "?") if isinstance(info, dict) else "?"
        stage = "write to"
        client.set(key, "1", ex=KEY_TTL)
        client.delete(key)
    except redis.exceptions.ReadOnlyError as exc:
        return failed("redis", url.clean(f"{url.masked} is read-only (a replica?): {_first_line(exc)}"),
                      "point [redis] url at the primary, writable server")
    except redis.exceptions.AuthenticationError as exc:
        return failed("redis", url.clean(f"{url.masked} refused us: {_first_line(exc)}"),
                      "check the user and password in [redis] url")
    except redis.exceptions.RedisError as exc:
        return failed("redis", url.clean(f"cannot {stage} {url.masked}: {_first_line(exc)}"),
                      _REDIS_HINT if stage == "reach" else "check the server's log and its write settings")
    finally:
        client.close()
    return passed("redis", f"{url.masked}: Redis {version}, writable")


def _server_version(number: int) -> str:
    return f"{number // 10000}.{number % 10000}" if number >= 100000 else str(number)


def check_postgres(settings: Settings, timeout: float) -> tuple[CheckResult, RouteTable | None]:
    """
    ``[database] url``, when set: PostgreSQL answers, its schema is current
    (no pending migration: what ``mdgate db upgrade`` would apply), and the
    routing tables can be read.

    Returns:
        The result, and the routing table read (``None`` when it could not be).
    """
    if settings.database.url is None:
        return skipped("postgres", "not configured: built-in routes"), None
    import psycopg

    from mdgate.plugins.pg_routes._connect import connect
    from mdgate.plugins.pg_routes.errors import DatabaseUnavailable
    from mdgate.plugins.pg_routes.migrations import MIGRATIONS, SCHEMA_VERSION, applied_migrations
    from mdgate.plugins.pg_routes.routes import load_route_table

    dsn = settings.database.url.reveal()
    where = mask_url(dsn)
    try:
        conn = connect(dsn, min(timeout, settings.database.connect_timeout), autocommit=True)
    except DatabaseUnavailable as exc:
        return failed("postgres", str(exc), _PG_HINT), None
    try:
        with conn:
            server = _server_version(conn.info.server_version)
            applied = {a.version for a in applied_migrations(conn)}
            pending = [m for m in MIGRATIONS if m.version not in applied]
            if pending:
                names = ", ".join(f"{m.version:04d} {m.name}" for m in pending)
                version = max(applied, default=0)
                return failed(
                    "postgres", f"{where} (PostgreSQL {server}): schema at version {version}, this mdgate "
                    f"needs {SCHEMA_VERSION} ({len(pending)} pending: {names})", "run `mdgate db upgrade`",
                ), None
            table = load_route_table(conn)
    except psycopg.Error as exc:
        return failed("postgres", f"{where}: database error: {_first_line(exc)}", _PG_HINT), None
    return passed("postgres", f"{where}: PostgreSQL {server}, schema current (version {SCHEMA_VERSION}); "
                              f"{len(table.exchanges)} exchange(s) routed"), table
