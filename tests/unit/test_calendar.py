"""
Exchange calendars (mdgate._calendar): the built-in tables, DST, holidays,
early closes, special sessions, the config's [calendars] and PostgreSQL's rows,
with their precedence.
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mdgate._calendar import ALWAYS_OPEN, Calendars, DaySession, parse_calendars
from mdgate._config import load_settings
from mdgate._errors import ConfigError

IST, NY = ZoneInfo("Asia/Kolkata"), ZoneInfo("America/New_York")


def at(text: str, tz: ZoneInfo) -> float:
    """Unix seconds of a local wall-clock time."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp()


CAL = Calendars()


# ---------------------------------------------------------------- built-in tables


@pytest.mark.parametrize("exchange", ["NSE", "BSE"])
def test_india_regular_session_opens_0915_closes_1530_local(exchange):
    assert CAL.open_since(exchange, at("2026-12-03 09:14:59", IST)) is None
    assert CAL.open_since(exchange, at("2026-12-03 09:15", IST)) == at("2026-12-03 09:15", IST)
    assert CAL.open_since(exchange, at("2026-12-03 15:29:59", IST)) == at("2026-12-03 09:15", IST)
    assert CAL.open_since(exchange, at("2026-12-03 15:30", IST)) is None
    assert CAL.open_since(exchange, at("2026-12-05 11:00", IST)) is None  # Saturday
    assert CAL.open_since(exchange, at("2026-12-06 11:00", IST)) is None  # Sunday


@pytest.mark.parametrize("exchange", ["NSE", "BSE"])
@pytest.mark.parametrize("day", ["2025-02-26", "2025-10-22", "2026-01-15", "2026-11-24", "2026-12-25"])
def test_india_published_holidays_closed_all_day(exchange, day):
    assert CAL.open_since(exchange, at(f"{day} 11:00", IST)) is None


def test_india_holiday_lists_are_complete_per_year():
    nse = CAL.calendars["NSE"]
    assert sum(d.year == 2025 for d in nse.holidays) == 14
    assert sum(d.year == 2026 for d in nse.holidays) == 16
    assert CAL.calendars["BSE"].holidays == nse.holidays


def test_india_special_sessions_budget_saturday_and_muhurat():
    assert CAL.open_since("NSE", at("2025-02-01 10:00", IST)) == at("2025-02-01 09:15", IST)  # a Saturday
    muhurat = "2025-10-21"  # Diwali: a holiday but for the Muhurat hour
    assert CAL.open_since("NSE", at(f"{muhurat} 10:00", IST)) is None
    assert CAL.open_since("NSE", at(f"{muhurat} 14:00", IST)) == at(f"{muhurat} 13:45", IST)
    assert CAL.open_since("BSE", at(f"{muhurat} 14:45", IST)) is None


@pytest.mark.parametrize("exchange", ["NYSE", "NASDAQ"])
def test_us_session_follows_dst_in_utc(exchange):
    # Friday before the March switch: EST, 09:30 = 14:30 UTC; the Monday after: EDT, 13:30 UTC
    assert CAL.open_since(exchange, utc("2026-03-06 14:29")) is None
    assert CAL.open_since(exchange, utc("2026-03-06 14:30")) == utc("2026-03-06 14:30")
    assert CAL.open_since(exchange, utc("2026-03-09 13:30")) == utc("2026-03-09 13:30")
    assert CAL.open_since(exchange, utc("2026-03-09 20:00")) is None  # 16:00 EDT
    # November: back to EST
    assert CAL.open_since(exchange, utc("2026-11-02 13:45")) is None
    assert CAL.open_since(exchange, utc("2026-11-02 20:59")) == utc("2026-11-02 14:30")
    # India has no DST: 09:15 IST is 03:45 UTC all year
    assert CAL.open_since("NSE", utc("2026-07-01 03:45")) == utc("2026-07-01 03:45")


@pytest.mark.parametrize("exchange", ["NYSE", "NASDAQ"])
@pytest.mark.parametrize("day", ["2025-01-09", "2026-04-03", "2026-07-03", "2027-03-26", "2027-06-18",
                                 "2027-07-05", "2027-12-24"])
def test_us_published_holidays_closed(exchange, day):
    assert CAL.open_since(exchange, at(f"{day} 11:00", NY)) is None


@pytest.mark.parametrize("exchange", ["NYSE", "NASDAQ"])
@pytest.mark.parametrize("day", ["2025-07-03", "2025-11-28", "2026-11-27", "2026-12-24", "2027-11-26"])
def test_us_early_closes_at_1300(exchange, day):
    assert CAL.open_since(exchange, at(f"{day} 12:59", NY)) == at(f"{day} 09:30", NY)
    assert CAL.open_since(exchange, at(f"{day} 13:00", NY)) is None


def test_us_regular_day_before_a_holiday_is_full_length():
    assert CAL.open_since("NYSE", at("2026-07-02 15:59", NY)) == at("2026-07-02 09:30", NY)


def test_unknown_exchange_always_open():
    assert CAL.open_since("LSE", at("2026-12-05 03:00", IST)) == ALWAYS_OPEN


def test_outdated_names_tables_that_end_before_the_year():
    assert CAL.outdated(2026) == []
    assert CAL.outdated(2027) == ["BSE", "NSE"]
    assert CAL.outdated(2028) == ["BSE", "NASDAQ", "NSE", "NYSE"]
    # an override that year: the operator has listed it
    cals = Calendars(parse_calendars({"NSE": {"holidays": ["2027-01-26"]}}))
    assert cals.outdated(2027) == ["BSE"]


# ---------------------------------------------------------------- the config's [calendars]


def test_config_holidays_and_muhurat_session_on_a_sunday():
    cals = Calendars(parse_calendars({"nse": {
        "holidays": ["2026-11-09"],
        "sessions": [{"date": "2026-11-08", "open": "18:00", "close": "19:15"}],
    }}))
    assert cals.open_since("NSE", at("2026-11-09 11:00", IST)) is None  # a Monday made a holiday
    assert cals.open_since("NSE", at("2026-11-08 17:59", IST)) is None
    assert cals.open_since("NSE", at("2026-11-08 18:30", IST)) == at("2026-11-08 18:00", IST)
    assert cals.open_since("NSE", at("2026-11-08 19:15", IST)) is None
    assert cals.open_since("BSE", at("2026-11-09 11:00", IST)) == at("2026-11-09 09:15", IST)  # untouched


def test_config_regular_hours_replace_the_table_and_its_early_closes():
    cals = Calendars(parse_calendars({"NYSE": {"open": "04:00", "close": "20:00"}}))
    assert cals.open_since("NYSE", at("2026-12-03 04:30", NY)) == at("2026-12-03 04:00", NY)
    assert cals.open_since("NYSE", at("2026-11-27 15:00", NY)) == at("2026-11-27 04:00", NY)
    assert cals.open_since("NYSE", at("2026-12-25 11:00", NY)) is None  # holidays kept


def test_config_calendar_for_a_new_exchange():
    lse = {"timezone": "Europe/London", "open": "08:00", "close": "16:30"}
    cals = Calendars(parse_calendars({"LSE": lse}))
    london = ZoneInfo("Europe/London")
    assert cals.open_since("LSE", at("2026-07-01 08:00", london)) == at("2026-07-01 08:00", london)
    assert cals.open_since("LSE", at("2026-07-01 07:59", london)) is None


@pytest.mark.parametrize(("table", "key", "words"), [
    ({"NSE": {"opens": "09:00"}}, "calendars.NSE.opens", "unknown key"),
    ({"NSE": {"open": "9:15", "close": "15:30"}}, "calendars.NSE.open", "HH:MM"),
    ({"NSE": {"open": "09:15"}}, "calendars.NSE.close", "together"),
    ({"NSE": {"open": "15:30", "close": "09:15"}}, "calendars.NSE.close", "after open"),
    ({"NSE": {"timezone": "Mars/Olympus"}}, "calendars.NSE.timezone", "unknown time zone"),
    ({"NSE": {"holidays": ["2026-13-01"]}}, "calendars.NSE.holidays[0]", "YYYY-MM-DD"),
    ({"NSE": {"holidays": "2026-11-09"}}, "calendars.NSE.holidays", "expected a list"),
    ({"NSE": {"sessions": [{"date": "2026-11-08", "open": "18:00"}]}}, "calendars.NSE.sessions[0].close",
     "missing"),
    ({"NSE": {"sessions": [{"date": "2026-11-08", "open": "18:00", "close": "19:00", "x": 1}]}},
     "calendars.NSE.sessions[0].x", "unknown key"),
    ({"NSE": {"holidays": ["2026-11-08"], "sessions": [{"date": "2026-11-08", "open": "18:00",
                                                         "close": "19:00"}]}},
     "calendars.NSE.sessions", "both a holiday and a session"),
    ({"LSE": {"open": "08:00", "close": "16:30"}}, "calendars.LSE", "timezone, open and close are needed"),
    ({"N-SE": {}}, "calendars.N-SE", "not an exchange name"),
    ({"NSE": {}, "nse": {}}, "calendars.nse", "named twice"),
])
def test_config_mistakes_name_the_key(table, key, words):
    with pytest.raises(ConfigError) as err:
        parse_calendars(table)
    assert err.value.key == key and words in err.value.message


def test_load_settings_reads_calendars_toml_native_dates_and_unknown_keys(tmp_path: Path):
    path = tmp_path / "mdgate.toml"
    path.write_text('[calendars.NSE]\nholidays = [2026-11-09, "2026-11-10"]\n'
                    'sessions = [{date = 2026-11-08, open = 18:00:00, close = "19:15"}]\n')
    settings = load_settings(path, {})
    nse = settings.calendars["NSE"]
    assert nse.holidays == {date(2026, 11, 9), date(2026, 11, 10)}
    assert nse.sessions[date(2026, 11, 8)].open == time(18, 0)
    path.write_text('[calendars.NSE]\nholiday = ["2026-11-09"]\n')
    with pytest.raises(ConfigError, match=r"calendars\.NSE\.holiday: unknown key"):
        load_settings(path, {})


# ---------------------------------------------------------------- PostgreSQL rows


def test_database_rows_win_over_config_and_tables():
    muhurat = {"date": "2026-11-08", "open": "18:00", "close": "19:15"}
    config = parse_calendars({"NSE": {"sessions": [muhurat]}})
    rows = [
        DaySession("NSE", date(2026, 11, 8), time(18, 30), time(19, 30)),  # moves the config's session
        DaySession("NSE", date(2026, 11, 24), time(10, 0), time(12, 0)),  # opens a built-in holiday
        DaySession("NYSE", date(2026, 12, 3)),  # closes a regular day
    ]
    cals = Calendars(config, rows)
    assert cals.open_since("NSE", at("2026-11-08 18:15", IST)) is None
    assert cals.open_since("NSE", at("2026-11-08 19:20", IST)) == at("2026-11-08 18:30", IST)
    assert cals.open_since("NSE", at("2026-11-24 11:00", IST)) == at("2026-11-24 10:00", IST)
    assert cals.open_since("NYSE", at("2026-12-03 11:00", NY)) is None
    assert cals.problems == []


def test_database_row_for_an_exchange_without_calendar_is_left_out_and_named():
    cals = Calendars(rows=[DaySession("LSE", date(2026, 12, 3))])
    assert cals.open_since("LSE", at("2026-12-03 11:00", IST)) == ALWAYS_OPEN
    assert len(cals.problems) == 1 and "no calendar for LSE" in cals.problems[0]


def test_status_says_which_markets_are_open():
    doc = CAL.status(at("2026-12-03 10:00", IST))
    assert doc["NSE"] == {"timezone": "Asia/Kolkata", "open": True}
    assert doc["NYSE"] == {"timezone": "America/New_York", "open": False}


def test_always_open_drops_the_calendar_of_an_exchange():
    cals = Calendars(parse_calendars({"NSE": {"always_open": True}, "BSE": {"always_open": False}}))
    assert cals.open_since("NSE", at("2026-12-05 03:00", IST)) == ALWAYS_OPEN  # a Saturday night
    assert cals.open_since("BSE", at("2026-12-05 03:00", IST)) is None
    assert "NSE" not in cals.status(0.0)
    with pytest.raises(ConfigError, match="takes no other key"):
        parse_calendars({"NSE": {"always_open": True, "holidays": []}})
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_calendars({"NSE": {"always_open": "yes"}})
