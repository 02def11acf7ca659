"""
The demo recording bundled with mdgate, which ``mdgate demo`` replays.

``recording/`` is a synthetic recording (``scripts/make_demo_recording.py``
writes it, deterministically): ten US stocks from Yahoo Finance and ten NSE
stocks from Dhan, in the providers' real wire formats. This module names
them and their provider codes; it imports no plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["DHAN_CODES", "INSTRUMENTS", "INSTRUMENT_CODES", "RECORDING", "YAHOO_CODES"]

#: The recording's directory (package data).
RECORDING: Final = Path(__file__).resolve().parent / "recording"

#: US instruments -> Yahoo symbols.
YAHOO_CODES: Final[dict[str, str]] = {
    f"{exchange}:{symbol}": symbol
    for exchange, symbols in (
        ("NASDAQ", ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA")),
        ("NYSE", ("JPM", "V", "XOM")),
    )
    for symbol in symbols
}

#: NSE instruments -> Dhan codes (``NSE_EQ:<SecurityId>``, from Dhan's instrument master).
DHAN_CODES: Final[dict[str, str]] = {
    "NSE:RELIANCE": "NSE_EQ:2885",
    "NSE:TCS": "NSE_EQ:11536",
    "NSE:HDFCBANK": "NSE_EQ:1333",
    "NSE:INFY": "NSE_EQ:1594",
    "NSE:ICICIBANK": "NSE_EQ:4963",
    "NSE:SBIN": "NSE_EQ:3045",
    "NSE:BHARTIARTL": "NSE_EQ:10604",
    "NSE:ITC": "NSE_EQ:1660",
    "NSE:LT": "NSE_EQ:11483",
    "NSE:KOTAKBANK": "NSE_EQ:1922",
}

#: Every instrument of the recording, US first.
INSTRUMENTS: Final[tuple[str, ...]] = (*YAHOO_CODES, *DHAN_CODES)

#: ``[instruments]`` for the demo's settings: Dhan has built-in codes for only a few of these
#: (its table is data, not a rule), so the demo names all of them, as a config file would.
INSTRUMENT_CODES: Final[dict[str, dict[str, str]]] = {
    instrument: {"dhan": code} for instrument, code in DHAN_CODES.items()
}
