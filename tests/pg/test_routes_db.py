from __future__ import annotations

import psycopg
import pytest
from structlog.testing import capture_logs

from mdgate._routing.table import InstrumentMapping
from mdgate.plugins.pg_routes.errors import UnknownNameError
from mdgate.plugins.pg_routes.instruments import store_instrument_mappings
from mdgate.plugins.pg_routes.routes import build_route_table, load_route_table, set_exchange_route

pytestmark = pytest.mark.integration


def test_load_route_table_explicit_codes_and_priorities(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        store_instrument_mappings(
            conn,
            [
                InstrumentMapping("NSE:RELIANCE", "dhan", "NSE_EQ:2885"),
                InstrumentMapping("NASDAQ:AAPL", "yahoo", "AAPL"),
            ],
        )
        table = load_route_table(conn)
    assert table.source == "postgresql"
    assert table.codes == {("dhan", "NSE:RELIANCE"): "NSE_EQ:2885", ("yahoo", "NASDAQ:AAPL"): "AAPL"}
    assert set(table.exchanges) == {"NSE", "BSE", "NYSE", "NASDAQ"}


def test_load_route_table_inactive_provider_rows_inactive_codes_skipped(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        store_instrument_mappings(conn, [InstrumentMapping("NSE:TCS", "dhan", "NSE_EQ:11536")])
        conn.execute("UPDATE providers SET is_active = false WHERE name = 'dhan'")
        with capture_logs() as logs:
            table = load_route_table(conn)
    assert [(r.provider, r.active) for r in table.exchanges["NSE"]] == [("dhan", False), ("yahoo", True)]
    assert table.codes == {}
    assert table.listed == {"NSE:TCS"}  # not routable through dhan, but still a known instrument
    skipped = [e for e in logs if e["event"] == "route_rows_skipped"]
    assert [(e["reason"], e["count"]) for e in skipped] == [("provider inactive", 1)]
    assert skipped[0]["examples"] == ["NSE:TCS -> dhan:NSE_EQ:11536"]


def test_load_route_table_code_for_unserved_exchange_skipped_and_logged(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        # dhan does not serve NYSE; MCX has no provider at all.
        conn.execute("INSERT INTO exchanges (code, name) VALUES ('MCX', 'MCX')")
        store_instrument_mappings(
            conn,
            [
                InstrumentMapping("NYSE:IBM", "dhan", "X:1"),
                InstrumentMapping("MCX:GOLD", "dhan", "MCX_COMM:1"),
                InstrumentMapping("NYSE:IBM", "yahoo", "IBM"),
            ],
        )
        with capture_logs() as logs:
            table = load_route_table(conn)
    assert table.codes == {("yahoo", "NYSE:IBM"): "IBM"}
    skipped = [e for e in logs if e["event"] == "route_rows_skipped"]
    assert [(e["reason"], e["count"], e["log_level"]) for e in skipped] == [
        ("provider does not serve the exchange", 2, "warning")
    ]


def test_build_route_table_bad_instrument_name_skipped() -> None:
    with capture_logs() as logs:
        table = build_route_table(
            [("NSE", "dhan", 0, True, True, True)],
            [("dhan", True, "not an instrument", "X"), ("dhan", True, "NSE:INFY", "NSE_EQ:1594")],
        )
    assert table.codes == {("dhan", "NSE:INFY"): "NSE_EQ:1594"}
    assert [e["reason"] for e in logs] == ["bad instrument name"]


def test_set_exchange_route_primary_demotes_previous(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        result = set_exchange_route(conn, "nse", "yahoo", priority=0, primary=True)
        assert result.demoted == ("dhan",) and not result.created
        nse = load_route_table(conn).exchanges["NSE"]
    assert [(r.provider, r.priority, r.primary) for r in nse] == [("yahoo", 0, True), ("dhan", 0, False)]


def test_set_exchange_route_keeps_priority_when_not_given(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_exchange_route(conn, "NSE", "yahoo", active=False)
        nse = {r.provider: r for r in load_route_table(conn).exchanges["NSE"]}
    assert (nse["yahoo"].priority, nse["yahoo"].active, nse["yahoo"].primary) == (10, False, False)


def test_set_exchange_route_unknown_provider_raises(dsn: str) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(UnknownNameError, match=r"unknown provider 'alpaca' \(known: dhan, yahoo\)"),
    ):
        set_exchange_route(conn, "NYSE", "alpaca", priority=1)


def test_set_exchange_route_unknown_exchange_raises_unless_created(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(UnknownNameError, match="unknown exchange 'LSE'"):
            set_exchange_route(conn, "LSE", "yahoo")
        result = set_exchange_route(conn, "LSE", "yahoo", primary=True, create_exchange=True)
        assert result.created and result.exchange_created
        lse = load_route_table(conn).exchanges["LSE"]
    assert [(r.provider, r.priority, r.primary) for r in lse] == [("yahoo", 0, True)]
