from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from mdgate._errors import InstrumentError
from mdgate._routing.table import InstrumentMapping
from mdgate.plugins.pg_routes.errors import DatabaseUnavailable, UnknownNameError
from mdgate.plugins.pg_routes.instruments import (
    CsvImportError,
    list_instrument_mappings,
    read_csv_mappings,
    upsert_instrument_mappings,
)

pytestmark = pytest.mark.integration

RELIANCE = InstrumentMapping(
    "NSE:RELIANCE",
    "dhan",
    "NSE_EQ:2885",
    {"segment": "NSE_EQ", "security_id": "2885", "tick_size": "0.05", "lot_size": "1", "series": "EQ"},
)


def _rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT i.name, i.symbol, p.name, m.provider_instrument_search_code, m.segment,
                      m.security_id, m.tick_size::text, m.lot_size, m.extra
                 FROM provider_instrument_mappings m
                 JOIN instruments i ON i.id = m.instrument_id
                 JOIN providers p ON p.id = m.provider_id ORDER BY 1, 3"""
        ).fetchall()


def test_upsert_instrument_mappings_creates_instruments_with_extra_columns(dsn: str) -> None:
    n = upsert_instrument_mappings(dsn, [RELIANCE, InstrumentMapping("nse:tcs", "yahoo", "TCS.NS")])
    assert n == 2
    assert _rows(dsn) == [
        (
            "NSE:RELIANCE",
            "RELIANCE",
            "dhan",
            "NSE_EQ:2885",
            "NSE_EQ",
            "2885",
            "0.05",
            1,
            {
                "segment": "NSE_EQ",
                "security_id": "2885",
                "tick_size": "0.05",
                "lot_size": "1",
                "series": "EQ",
            },
        ),
        ("NSE:TCS", "TCS", "yahoo", "TCS.NS", None, None, None, None, {}),
    ]


def test_upsert_instrument_mappings_rerun_updates_without_duplicates(dsn: str) -> None:
    upsert_instrument_mappings(dsn, [RELIANCE])
    changed = InstrumentMapping("NSE:RELIANCE", "dhan", "NSE_EQ:2885", {"tick_size": "0.10", "lot_size": "x"})
    assert upsert_instrument_mappings(dsn, [changed]) == 1
    rows = _rows(dsn)
    assert len(rows) == 1
    assert rows[0][6:8] == ("0.10", None)  # an unparsable lot size is kept in extra only
    assert rows[0][8] == {"tick_size": "0.10", "lot_size": "x"}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM instruments").fetchone() == (1,)


def test_upsert_instrument_mappings_code_moving_to_other_instrument(dsn: str) -> None:
    upsert_instrument_mappings(dsn, [InstrumentMapping("NSE:OLDNAME", "dhan", "NSE_EQ:1")])
    upsert_instrument_mappings(dsn, [InstrumentMapping("NSE:NEWNAME", "dhan", "NSE_EQ:1")])
    assert [(r[0], r[3]) for r in _rows(dsn)] == [("NSE:NEWNAME", "NSE_EQ:1")]


def test_upsert_instrument_mappings_duplicates_in_batch_last_wins(dsn: str) -> None:
    n = upsert_instrument_mappings(
        dsn,
        [
            InstrumentMapping("NSE:A", "dhan", "NSE_EQ:1"),
            InstrumentMapping("NSE:A", "dhan", "NSE_EQ:2"),
            InstrumentMapping("NSE:B", "dhan", "NSE_EQ:2"),
        ],
    )
    assert n == 1
    assert [(r[0], r[3]) for r in _rows(dsn)] == [("NSE:B", "NSE_EQ:2")]


def test_upsert_instrument_mappings_unknown_names_store_nothing(dsn: str) -> None:
    with pytest.raises(UnknownNameError, match="unknown provider 'alpaca'"):
        upsert_instrument_mappings(dsn, [RELIANCE, InstrumentMapping("NYSE:IBM", "alpaca", "IBM")])
    with pytest.raises(UnknownNameError, match=r"unknown exchange 'LSE', 'MCX' \(known: BSE"):
        upsert_instrument_mappings(
            dsn,
            [
                RELIANCE,
                InstrumentMapping("MCX:GOLD", "dhan", "1"),
                InstrumentMapping("LSE:VOD", "yahoo", "VOD.L"),
            ],
        )
    assert _rows(dsn) == []


def test_upsert_instrument_mappings_bad_instrument_or_empty_code_raises(dsn: str) -> None:
    with pytest.raises(InstrumentError):
        upsert_instrument_mappings(dsn, [InstrumentMapping("RELIANCE", "dhan", "NSE_EQ:2885")])
    with pytest.raises(InstrumentError, match="empty dhan code"):
        upsert_instrument_mappings(dsn, [InstrumentMapping("NSE:X", "dhan", "")])


def test_upsert_instrument_mappings_unreachable_database_raises(unused_dsn: str) -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database at postgresql://") as info:
        upsert_instrument_mappings(unused_dsn, [RELIANCE])
    assert "s3cret" not in str(info.value) and "postgres:***@" in str(info.value)


def test_upsert_instrument_mappings_bulk_twenty_thousand_rows(dsn: str) -> None:
    mappings = [
        InstrumentMapping(
            f"NSE:S{i}", "dhan", f"NSE_EQ:{i}", {"segment": "NSE_EQ", "security_id": str(i), "lot_size": "1"}
        )
        for i in range(20_000)
    ]
    assert upsert_instrument_mappings(dsn, mappings) == 20_000
    assert upsert_instrument_mappings(dsn, mappings) == 20_000
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM provider_instrument_mappings").fetchone() == (20_000,)
        rows = list_instrument_mappings(conn, provider="dhan", exchange="nse", limit=2)
    assert [r.instrument for r in rows] == ["NSE:S0", "NSE:S1"]


def test_read_csv_mappings_extra_columns_become_extra(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "instrument,code,lot_size,series\nnse:reliance,NSE_EQ:2885,1,EQ\n,,,\nBSE:TCS,BSE_EQ:532540,,\n",
        encoding="utf-8",
    )
    assert read_csv_mappings(path, "dhan") == [
        InstrumentMapping("NSE:RELIANCE", "dhan", "NSE_EQ:2885", {"lot_size": "1", "series": "EQ"}),
        InstrumentMapping("BSE:TCS", "dhan", "BSE_EQ:532540", {}),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("symbol,code\nX,1\n", "missing column(s) instrument"),
        ("instrument,code\nNSE:A,1\nbad name,2\n", "m.csv:3: bad instrument 'bad name'"),
        ("instrument,code\nNSE:A,\n", "m.csv:2: empty code for NSE:A"),
    ],
)
def test_read_csv_mappings_malformed_file_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CsvImportError) as info:
        read_csv_mappings(path, "dhan")
    assert message in str(info.value)


def test_read_csv_mappings_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CsvImportError, match="No such file"):
        read_csv_mappings(tmp_path / "nope.csv", "dhan")
