"""Open connections with one clear, password-free error when that fails."""

from __future__ import annotations

import math
import re
from typing import Any, Final

import anyio
import psycopg

from mdgate._config import mask_url
from mdgate.plugins.pg_routes.errors import DatabaseUnavailable

__all__ = ["aconnect", "connect", "describe_error"]


def describe_error(dsn: str, exc: BaseException) -> str:
    """One line saying which database failed and why (libpq never echoes passwords)."""
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    # libpq prefixes "connection to server at ... failed:"; keep what follows.
    if "failed: " in reason:
        reason = reason.rsplit("failed: ", 1)[1]
    missing = _MISSING_DB.search(reason)
    if missing:  # the server answers, the database is not there yet: say how to make it
        reason += f"; create it first (createdb {missing.group(1)}, or CREATE DATABASE {missing.group(1)})"
    return f"cannot reach the database at {mask_url(dsn)}: {reason}"


_MISSING_DB: Final = re.compile(r'database "([^"]{1,63})" does not exist')


def _timeout(seconds: float) -> int:
    # libpq takes whole seconds and treats anything under 2 as 2.
    return max(2, math.ceil(seconds))


def connect(dsn: str, timeout: float = 5.0, *, autocommit: bool = False) -> psycopg.Connection:
    """
    Open a synchronous connection.

    Raises:
        DatabaseUnavailable: the database cannot be reached or refused us.
    """
    try:
        return psycopg.connect(dsn, connect_timeout=_timeout(timeout), autocommit=autocommit)
    except (psycopg.Error, ValueError) as exc:
        raise DatabaseUnavailable(describe_error(dsn, exc)) from exc


#: libpq TCP keepalive settings for long-lived (LISTEN) connections.
_KEEPALIVES: Final[dict[str, Any]] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


async def aconnect(
    dsn: str,
    seconds: float = 5.0,
    *,
    autocommit: bool = False,
    keepalives: bool = False,
) -> psycopg.AsyncConnection:
    """
    Open an asynchronous connection, giving up after ``seconds``.

    ``keepalives`` turns on TCP keepalives, so that a long-lived connection
    notices a vanished peer.

    Raises:
        DatabaseUnavailable: the database cannot be reached or refused us.
    """
    try:
        with anyio.fail_after(seconds + 1.0):
            return await psycopg.AsyncConnection.connect(
                dsn,
                connect_timeout=_timeout(seconds),
                autocommit=autocommit,
                **(_KEEPALIVES if keepalives else {}),
            )
    except TimeoutError as exc:
        where = mask_url(dsn)
        msg = f"cannot reach the database at {where}: timed out after {seconds:g} s"
        raise DatabaseUnavailable(msg) from exc
    except (psycopg.Error, ValueError) as exc:
        raise DatabaseUnavailable(describe_error(dsn, exc)) from exc
