"""Instrument <-> Yahoo symbol rule."""

from __future__ import annotations

import pytest

from mdgate_yahoo.symbols import (
    YAHOO_EXCHANGE_CODES,
    instrument_from_yahoo,
    yahoo_symbol,
)


@pytest.mark.parametrize(
    ("exchange", "symbol", "code"),
    [
        ("NASDAQ", "AAPL", "AAPL"),
        ("NYSE", "IBM", "IBM"),
        ("NYSE", "BRK.B", "BRK-B"),
        ("NSE", "RELIANCE", "RELIANCE.NS"),
        ("NSE", "M&M", "M&M.NS"),
        ("NSE", "BAJAJ-AUTO", "BAJAJ-AUTO.NS"),
        ("BSE", "TCS", "TCS.BO"),
        ("NSE", "^NSEI", "^NSEI"),
        ("NASDAQ", "^IXIC", "^IXIC"),
    ],
)
def test_yahoo_symbol_known_exchange_derived(exchange: str, symbol: str, code: str) -> None:
    assert yahoo_symbol(exchange, symbol) == code


@pytest.mark.parametrize(("exchange", "symbol"), [("LSE", "VOD"), ("MCX", "GOLD"), ("NSE", "")])
def test_yahoo_symbol_other_exchange_none(exchange: str, symbol: str) -> None:
    assert yahoo_symbol(exchange, symbol) is None


@pytest.mark.parametrize(
    ("code", "exchange_code", "instrument"),
    [
        ("RELIANCE.NS", None, "NSE:RELIANCE"),
        ("TCS.BO", None, "BSE:TCS"),
        ("reliance.ns", "NSI", "NSE:RELIANCE"),
        ("AAPL", "NMS", "NASDAQ:AAPL"),
        ("ZVZZT", "NCM", "NASDAQ:ZVZZT"),
        ("IBM", "NYQ", "NYSE:IBM"),
        ("BRK-B", "NYQ", "NYSE:BRK.B"),
        ("^NSEI", "NSI", "NSE:^NSEI"),
        ("^BSESN", "BSE", "BSE:^BSESN"),
    ],
)
def test_instrument_from_yahoo_known_named(code: str, exchange_code: str | None, instrument: str) -> None:
    assert instrument_from_yahoo(code, exchange_code) == instrument


@pytest.mark.parametrize(
    ("code", "exchange_code"),
    [
        ("AAPL", None),
        ("AAPL", "LSE"),
        ("BTC-USD", "CCC"),
        ("", "NMS"),
        ("RELIANCE", "NSI"),
    ],
)
def test_instrument_from_yahoo_ambiguous_none(code: str, exchange_code: str | None) -> None:
    assert instrument_from_yahoo(code, exchange_code) is None


@pytest.mark.parametrize(
    ("exchange", "symbol"),
    [("NASDAQ", "AAPL"), ("NYSE", "BRK.B"), ("NSE", "RELIANCE"), ("BSE", "TCS")],
)
def test_symbol_rule_round_trip_identity(exchange: str, symbol: str) -> None:
    code = yahoo_symbol(exchange, symbol)
    assert code is not None
    yahoo_code = {"NASDAQ": "NMS", "NYSE": "NYQ", "NSE": "NSI", "BSE": "BSE"}[exchange]
    assert instrument_from_yahoo(code, yahoo_code) == f"{exchange}:{symbol}"


def test_exchange_codes_cover_every_served_exchange() -> None:
    assert set(YAHOO_EXCHANGE_CODES.values()) == {"NASDAQ", "NYSE", "NSE", "BSE"}
    assert YAHOO_EXCHANGE_CODES["BOM"] == "BSE"
