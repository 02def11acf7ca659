"""
Trading-calendar overrides in PostgreSQL (``mdgate_calendar_sessions``,
migration 3): the table's rules, the route source reading them with the
routes and live on NOTIFY, and a gateway whose calendars follow them (the
rows winning over the config's ``[calendars]``).
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import psycopg
import pytest
from tests.pg.test_source import make_settings

from mdgate._calendar import DaySession
from mdgate.plugins.pg_routes.source import PgRouteSource
from mdgate.testing import running_gateway, settings_from_toml

pytestmark = pytest.mark.integration

IST = ZoneInfo("Asia/Kolkata")


def ist(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=IST).timestamp()


async def _execute(dsn: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.encode())


@pytest.mark.parametrize("row", [
    "('NSE', '2026-11-08', '18:00', NULL)",  # opens without closes
    "('NSE', '2026-11-08', '19:15', '18:00')",  # closes before it opens
    "('nse', '2026-11-08', NULL, NULL)",  # not an exchange name (upper case)
])
def test_table_refuses_rows_that_mean_nothing(dsn: str, row: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.CheckViolation):
        sql = f"INSERT INTO mdgate_calendar_sessions (exchange, day, opens, closes) VALUES {row}"
        conn.execute(sql.encode())


async def test_source_reads_rows_on_load_and_hands_changes_over_live(dsn: str, tmp_path: Path) -> None:
    await _execute(dsn, "INSERT INTO mdgate_calendar_sessions (exchange, day, opens, closes, note) VALUES "
                        "('NSE', '2026-11-08', '18:00', '19:15', 'Muhurat'), "
                        "('NSE', '2026-11-09', NULL, NULL, '')")
    source = PgRouteSource(make_settings(dsn, tmp_path))
    handed: list[Any] = []
    source.on_calendar = handed.append
    await source.load()
    assert source.calendar_sessions == (
        DaySession("NSE", date(2026, 11, 8), time(18, 0), time(19, 15)),
        DaySession("NSE", date(2026, 11, 9), None, None),
    )
    assert handed == [source.calendar_sessions]
    async with anyio.create_task_group() as tg:
        await tg.start(source.watch, lambda table: None)
        await _execute(dsn, "UPDATE mdgate_calendar_sessions SET closes = '19:30' WHERE day = '2026-11-08'")
        with anyio.fail_after(3):
            while len(handed) < 2:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert handed[-1][0] == DaySession("NSE", date(2026, 11, 8), time(18, 0), time(19, 30))


async def test_gateway_calendars_follow_the_table_over_the_config(dsn: str, tmp_path: Path) -> None:
    settings = settings_from_toml(
        f'[database]\nurl = "{dsn}"\nconnect_timeout = 2\n'
        "[runtime]\nbackoff_initial = 0.05\nbackoff_max = 0.2\n"
        '[calendars.NSE]\nsessions = [{date = "2026-11-08", open = "18:00", close = "19:15"}]\n',
        {"MDGATE_LOAD_PLUGINS": ""}, tmp_path)
    async with running_gateway(settings) as gw:
        hours = gw.gateway.hours
        assert hours.calendars.open_since("NSE", ist("2026-11-08 18:30")) == ist("2026-11-08 18:00")
        # the database moves the session: it wins over the config, live
        await _execute(dsn, "INSERT INTO mdgate_calendar_sessions (exchange, day, opens, closes) "
                            "VALUES ('NSE', '2026-11-08', '18:45', '19:45')")
        with anyio.fail_after(5):
            while hours.calendars.open_since("NSE", ist("2026-11-08 18:30")) is not None:
                await anyio.sleep(0.02)
        assert hours.calendars.open_since("NSE", ist("2026-11-08 19:30")) == ist("2026-11-08 18:45")
        # and gives it back when the row goes
        await _execute(dsn, "DELETE FROM mdgate_calendar_sessions")
        with anyio.fail_after(5):
            while hours.calendars.open_since("NSE", ist("2026-11-08 18:30")) is None:
                await anyio.sleep(0.02)
