"""
Trading-calendar overrides from PostgreSQL (``mdgate_calendar_sessions``,
migration 3): one row per exchange and day, the day's session or, with
``opens``/``closes`` NULL, closed all day. The route source reads them with
the routing tables and hands them to the gateway (``on_calendar``); they win
over the config's ``[calendars]`` and the built-in tables (see
``mdgate._calendar``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, time
from typing import Final

import psycopg

from mdgate._calendar import DaySession

__all__ = ["CALENDAR_ROWS_SQL", "MAX_ROWS", "day_sessions", "read_calendar_rows"]

#: Rows read at most (a table that grew without bound must not stall a reload).
MAX_ROWS: Final = 100_000
#: (exchange, day, opens, closes)
CALENDAR_ROWS_SQL: Final = f"""
    SELECT exchange, day, opens, closes FROM mdgate_calendar_sessions ORDER BY exchange, day LIMIT {MAX_ROWS}
"""
_EXISTS_SQL: Final = "SELECT to_regclass('mdgate_calendar_sessions') IS NOT NULL"

CalendarRow = tuple[str, date, "time | None", "time | None"]


def day_sessions(rows: Iterable[CalendarRow]) -> tuple[DaySession, ...]:
    """The rows as :class:`~mdgate._calendar.DaySession` values (seconds of the times dropped)."""
    return tuple(
        DaySession(exchange, day, None if opens is None else opens.replace(second=0, microsecond=0),
                   None if closes is None else closes.replace(second=0, microsecond=0))
        for exchange, day, opens, closes in rows
    )


async def read_calendar_rows(conn: psycopg.AsyncConnection) -> tuple[DaySession, ...]:
    """Read the overrides (none when the table does not exist yet: a schema before migration 3)."""
    exists = await (await conn.execute(_EXISTS_SQL)).fetchone()
    if not exists or not exists[0]:
        return ()
    return day_sessions(await (await conn.execute(CALENDAR_ROWS_SQL)).fetchall())
