"""
Exchange trading calendars: when is a market open (pure: no I/O but the
time-zone database, read through :mod:`zoneinfo`).

Built-in tables (regular hours Monday to Friday, local time of the exchange):

* ``NSE``, ``BSE``: Asia/Kolkata, 09:15-15:30; full-day trading holidays of
  2025 and 2026 as the exchanges publish them (NSE "Trading holidays",
  nseindia.com/resources/exchange-communication-holidays; BSE
  bseindia.com/static/markets/marketinfo/listholi.aspx: both exchanges close on
  the same days). The 2027 list is not published yet: days past the table are
  regular weekdays until it is added (or given in the config or PostgreSQL),
  and :meth:`Calendars.outdated` names the exchanges concerned.
  Special sessions: the Budget-day session of Saturday 2025-02-01 (regular
  hours) and Muhurat trading of 2025-10-21 (13:45-14:45).
* ``NYSE``, ``NASDAQ``: America/New_York, 09:30-16:00; holidays and 13:00
  early closes of 2025-2027 as NYSE publishes them
  (nyse.com/markets/hours-calendars; NASDAQ keeps the same days).

Both were checked against the ``exchange_calendars`` package (XNYS, XNAS,
XBOM) for the years they cover.

Overrides, strongest first: PostgreSQL rows (:class:`DaySession`), the
config's ``[calendars.<EXCHANGE>]`` (:class:`CalendarOverride`: time zone,
regular hours, extra holidays, special sessions), the built-in tables. An
exchange with no calendar at all is treated as always open (stall
detection stays on for it).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mdgate._errors import ConfigError

__all__ = [
    "ALWAYS_OPEN",
    "BUILTIN_NAMES",
    "CalendarOverride",
    "Calendars",
    "DaySession",
    "ExchangeCalendar",
    "Hours",
    "builtin_calendars",
    "parse_calendars",
]

#: What :meth:`Calendars.open_since` answers for an exchange without a calendar: open since ever.
ALWAYS_OPEN: Final = float("-inf")

_EXCHANGE_RE: Final = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")
_TIME_RE: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_KEYS: Final = ("timezone", "open", "close", "holidays", "sessions", "always_open")
_SESSION_KEYS: Final = ("date", "open", "close")
#: Most holidays or sessions one ``[calendars.X]`` table may list.
MAX_DAYS: Final = 1000


@dataclass(frozen=True, slots=True)
class Hours:
    """One trading session of a day, in the exchange's local time (``open`` before ``close``)."""

    open: time
    close: time


@dataclass(frozen=True, slots=True)
class DaySession:
    """
    One day's override (a row of ``mdgate_calendar_sessions``, or a config
    ``sessions`` entry): the session of ``day`` on ``exchange``, or, with
    ``opens``/``closes`` None, closed all day.
    """

    exchange: str
    day: date
    opens: time | None = None
    closes: time | None = None

    @property
    def hours(self) -> Hours | None:
        """The session, or None for a day closed all day."""
        if self.opens is None or self.closes is None:
            return None
        return Hours(self.opens, self.closes)


@dataclass(frozen=True, slots=True)
class CalendarOverride:
    """A ``[calendars.<EXCHANGE>]`` table, checked."""

    timezone: str | None = None
    hours: Hours | None = None
    holidays: frozenset[date] = frozenset()
    sessions: Mapping[date, Hours] = field(default_factory=dict)
    #: No calendar at all: the exchange counts as always open (a 24/7 feed, a test bench).
    always_open: bool = False


@dataclass(frozen=True)
class ExchangeCalendar:
    """
    One exchange's calendar: regular hours on weekdays, except holidays,
    early closes and special sessions (a special session replaces the day's
    hours, weekend or holiday included; None in ``special`` closes the day).
    """

    exchange: str
    timezone: str
    hours: Hours
    holidays: frozenset[date] = frozenset()
    early_closes: Mapping[date, time] = field(default_factory=dict)
    special: Mapping[date, Hours | None] = field(default_factory=dict)
    #: Years the built-in holiday table covers (None: not a built-in table).
    years: tuple[int, int] | None = None
    #: The time zone, loaded (raises ``ZoneInfoNotFoundError`` when there is no data for it).
    tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tz", ZoneInfo(self.timezone))

    def session(self, day: date) -> Hours | None:
        """The trading hours of ``day`` (local date), or None when the exchange is closed that day."""
        if day in self.special:
            return self.special[day]
        if day.weekday() >= 5 or day in self.holidays:
            return None
        early = self.early_closes.get(day)
        return Hours(self.hours.open, early) if early is not None else self.hours

    def open_since(self, at: float) -> float | None:
        """
        When the session open at ``at`` (Unix seconds) began, in Unix seconds;
        None when the exchange is closed at ``at``.
        """
        tz = self.tz
        day = datetime.fromtimestamp(at, tz).date()
        hours = self.session(day)
        if hours is None:
            return None
        start = datetime.combine(day, hours.open, tz).timestamp()
        end = datetime.combine(day, hours.close, tz).timestamp()
        return start if start <= at < end else None

    def is_open(self, at: float) -> bool:
        """Whether the exchange trades at ``at`` (Unix seconds)."""
        return self.open_since(at) is not None


def _days(*text: str) -> frozenset[date]:
    return frozenset(date.fromisoformat(d) for d in text)


#: NSE and BSE close on the same published days.
_INDIA_HOLIDAYS: Final = _days(
    # 2025
    "2025-02-26", "2025-03-14", "2025-03-31", "2025-04-10", "2025-04-14", "2025-04-18", "2025-05-01",
    "2025-08-15", "2025-08-27", "2025-10-02", "2025-10-21", "2025-10-22", "2025-11-05", "2025-12-25",
    # 2026 (2026-01-15: Maharashtra municipal elections, announced in January)
    "2026-01-15", "2026-01-26", "2026-03-03", "2026-03-26", "2026-03-31", "2026-04-03", "2026-04-14",
    "2026-05-01", "2026-05-28", "2026-06-26", "2026-09-14", "2026-10-02", "2026-10-20", "2026-11-10",
    "2026-11-24", "2026-12-25",
)
_INDIA_SPECIAL: Final[Mapping[date, Hours | None]] = {
    date(2025, 2, 1): Hours(time(9, 15), time(15, 30)),  # Union Budget, a Saturday
    date(2025, 10, 21): Hours(time(13, 45), time(14, 45)),  # Muhurat trading (Diwali)
}
_US_HOLIDAYS: Final = _days(
    "2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26", "2025-06-19",
    "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
    "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19", "2026-07-03",
    "2026-09-07", "2026-11-26", "2026-12-25",
    "2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18", "2027-07-05",
    "2027-09-06", "2027-11-25", "2027-12-24",
)
_US_EARLY: Final[Mapping[date, time]] = {
    d: time(13, 0) for d in _days("2025-07-03", "2025-11-28", "2025-12-24", "2026-11-27", "2026-12-24",
                                  "2027-11-26")
}


def _india(exchange: str) -> ExchangeCalendar:
    return ExchangeCalendar(exchange, "Asia/Kolkata", Hours(time(9, 15), time(15, 30)), _INDIA_HOLIDAYS,
                            special=_INDIA_SPECIAL, years=(2025, 2026))


def _us(exchange: str) -> ExchangeCalendar:
    return ExchangeCalendar(exchange, "America/New_York", Hours(time(9, 30), time(16, 0)), _US_HOLIDAYS,
                            _US_EARLY, years=(2025, 2027))


_MAKERS: Final[Mapping[str, Callable[[str], ExchangeCalendar]]] = {
    "NSE": _india, "BSE": _india, "NYSE": _us, "NASDAQ": _us,
}


@functools.cache
def builtin_calendars() -> Mapping[str, ExchangeCalendar]:
    """
    The built-in calendars, built on first use (it reads the time-zone
    database); an exchange whose time zone cannot be loaded is left out.
    """
    out: dict[str, ExchangeCalendar] = {}
    for exchange, make in _MAKERS.items():
        try:
            out[exchange] = make(exchange)
        except (ZoneInfoNotFoundError, ValueError):  # no time-zone data: see Calendars.missing
            continue
    return out


#: Every exchange with a built-in table.
BUILTIN_NAMES: Final = tuple(_MAKERS)


class Calendars:
    """
    The calendars in use: built-in tables, then the config's overrides, then
    the database's rows (strongest).

    Args:
        overrides: ``[calendars.<EXCHANGE>]`` tables (:func:`parse_calendars`).
        rows: day overrides from PostgreSQL; a row of an exchange without a
            calendar is left out and named in :attr:`problems`.
        builtin: the built-in tables (default: :func:`builtin_calendars`).
    """

    def __init__(
        self,
        overrides: Mapping[str, CalendarOverride] | None = None,
        rows: Iterable[DaySession] = (),
        builtin: Mapping[str, ExchangeCalendar] | None = None,
    ) -> None:
        if builtin is None:
            builtin = builtin_calendars()
        #: Why some exchange or row is not applied (no time-zone data, a row for an unknown exchange).
        self.problems: list[str] = [f"{x}: time zone data missing (install tzdata): treated as always open"
                                    for x in BUILTIN_NAMES if x not in builtin]
        cals = dict(builtin)
        for exchange, ov in (overrides or {}).items():
            if ov.always_open:
                cals.pop(exchange, None)
            else:
                cals[exchange] = _apply(cals.get(exchange), exchange, ov)
        by_exchange: dict[str, dict[date, Hours | None]] = {}
        for row in rows:
            if row.exchange not in cals:
                self.problems.append(f"calendar row {row.exchange} {row.day}: no calendar for {row.exchange} "
                                     f"(add [calendars.{row.exchange}] with its timezone, open and close)")
                continue
            by_exchange.setdefault(row.exchange, {})[row.day] = row.hours
        for exchange, days in by_exchange.items():
            cal = cals[exchange]
            cals[exchange] = dataclasses.replace(cal, special={**cal.special, **days})
        self.calendars: Mapping[str, ExchangeCalendar] = cals

    def open_since(self, exchange: str, at: float) -> float | None:
        """
        When ``exchange``'s current session began (Unix seconds), None when it
        is closed at ``at``; :data:`ALWAYS_OPEN` for an exchange without a calendar.
        """
        cal = self.calendars.get(exchange)
        return ALWAYS_OPEN if cal is None else cal.open_since(at)

    def outdated(self, year: int) -> list[str]:
        """
        Exchanges whose built-in holiday table does not cover ``year`` and
        that have no override that year either (their days are plain weekdays).
        """
        return sorted(x for x, c in self.calendars.items() if c.years is not None
                      and not c.years[0] <= year <= c.years[1] and not any(d.year == year for d in c.special))

    def status(self, at: float) -> dict[str, dict[str, Any]]:
        """Each exchange's time zone and whether it is open at ``at``, for ``/status``."""
        return {x: {"timezone": c.timezone, "open": c.is_open(at)} for x, c in sorted(self.calendars.items())}


def _apply(base: ExchangeCalendar | None, exchange: str, ov: CalendarOverride) -> ExchangeCalendar:
    """A calendar with ``ov`` applied over ``base`` (checked by the parser: a new exchange has it all)."""
    if base is None:
        assert ov.timezone is not None and ov.hours is not None
        base = ExchangeCalendar(exchange, ov.timezone, ov.hours)
    special: dict[date, Hours | None] = dict(base.special)
    special.update(dict.fromkeys(ov.holidays))
    special.update(ov.sessions)
    early = base.early_closes if ov.hours is None else {}  # new regular hours: the table's early closes go
    return dataclasses.replace(base, timezone=ov.timezone or base.timezone, hours=ov.hours or base.hours,
                    early_closes=early, special=special)


# -- the config file's [calendars] -------------------------------------------------------------


def _time(key: str, value: Any) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value.replace(second=0, microsecond=0)
    m = _TIME_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(key, f'expected a local time "HH:MM", got {value!r:.40}')
    return time(int(m.group(1)), int(m.group(2)))


def _date(key: str, value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(key, f'expected a date "YYYY-MM-DD", got {value!r:.40}')


def _hours(key: str, opens: Any, closes: Any) -> Hours:
    h = Hours(_time(f"{key}.open", opens), _time(f"{key}.close", closes))
    if h.open >= h.close:
        raise ConfigError(f"{key}.close", f"must be after open ({h.open:%H:%M}), the same day")
    return h


def _list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list, got {type(value).__name__}")
    if len(value) > MAX_DAYS:
        raise ConfigError(key, f"at most {MAX_DAYS} entries")
    return value


def _sessions(key: str, value: Any) -> dict[date, Hours]:
    out: dict[date, Hours] = {}
    for i, entry in enumerate(_list(key, value)):
        k = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(k, 'expected a table {date = "YYYY-MM-DD", open = "HH:MM", close = "HH:MM"}')
        for name in entry:
            if name not in _SESSION_KEYS:
                raise ConfigError(f"{k}.{name}", f"unknown key (known: {', '.join(_SESSION_KEYS)})")
        missing = [n for n in _SESSION_KEYS if n not in entry]
        if missing:
            raise ConfigError(f"{k}.{missing[0]}", "missing")
        day = _date(f"{k}.date", entry["date"])
        if day in out:
            raise ConfigError(f"{k}.date", f"{day} has two sessions")
        out[day] = _hours(k, entry["open"], entry["close"])
    return out


def _override(key: str, exchange: str, table: Any) -> CalendarOverride:
    if not isinstance(table, dict):
        raise ConfigError(key, "expected a table (timezone, open, close, holidays, sessions)")
    for name in table:
        if name not in _KEYS:
            raise ConfigError(f"{key}.{name}", f"unknown key (known: {', '.join(_KEYS)})")
    if "always_open" in table:
        flag = table["always_open"]
        if not isinstance(flag, bool):
            raise ConfigError(f"{key}.always_open", f"expected true or false, got {flag!r:.40}")
        if flag:
            if len(table) > 1:
                raise ConfigError(f"{key}.always_open", "takes no other key (it drops the whole calendar)")
            return CalendarOverride(always_open=True)
    tz = table.get("timezone")
    if tz is not None:
        if not isinstance(tz, str) or not tz:
            raise ConfigError(f"{key}.timezone", 'expected an IANA time zone name, e.g. "Asia/Kolkata"')
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{key}.timezone", f"unknown time zone {tz!r:.60} (or no time-zone data: "
                              "install tzdata)") from None
    hours = None
    if "open" in table or "close" in table:
        if "open" not in table or "close" not in table:
            raise ConfigError(f"{key}.{'close' if 'open' in table else 'open'}", "open and close go together")
        hours = _hours(key, table["open"], table["close"])
    if exchange not in BUILTIN_NAMES and (tz is None or hours is None):
        raise ConfigError(key, f"{exchange} has no built-in calendar: timezone, open and close are needed")
    holidays = frozenset(_date(f"{key}.holidays[{i}]", d)
                         for i, d in enumerate(_list(f"{key}.holidays", table.get("holidays", []))))
    sessions = _sessions(f"{key}.sessions", table.get("sessions", []))
    both = sorted(holidays & sessions.keys())
    if both:
        raise ConfigError(f"{key}.sessions", f"{both[0]} is both a holiday and a session day")
    return CalendarOverride(tz, hours, holidays, sessions)


def parse_calendars(table: Any) -> dict[str, CalendarOverride]:
    """
    Check the config's ``[calendars]`` (``[calendars.NSE]`` tables; exchange
    names in any case, answered upper).

    Raises:
        ConfigError: naming the key of the first problem.
    """
    if not isinstance(table, dict):
        raise ConfigError("calendars", "expected [calendars.<EXCHANGE>] tables")
    out: dict[str, CalendarOverride] = {}
    for raw, sub in table.items():
        exchange = str(raw).strip().upper()
        key = f"calendars.{raw}"
        if not _EXCHANGE_RE.match(exchange):
            raise ConfigError(key, "not an exchange name (a letter, then A-Z, 0-9, _; at most 16)")
        if exchange in out:
            raise ConfigError(key, f"{exchange} is named twice")
        out[exchange] = _override(key, exchange, sub)
    return out
