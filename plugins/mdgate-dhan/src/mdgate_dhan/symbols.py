"""
A small, explicit table of well-known Dhan codes.

Dhan identifies instruments by a numeric SecurityId that cannot be derived
from the trading symbol; the real source is Dhan's instrument master
(``mdgate dhan import-instruments``). This table lists a handful of codes
recorded from the master (docs/protocols/dhan.md#known-codes) so that a fresh install can
stream the best-known Indian instruments without a database. It is data,
not a rule: ``mdgate_instrument_code`` answers only for these names and
``None`` for everything else. Explicit mappings (database, config file)
always win over it.

Index names follow the import rule of :mod:`mdgate_dhan.instruments`: the
trading symbol with blanks removed (``NSE:NIFTY`` is NIFTY 50,
``NSE:INDIAVIX`` is INDIA VIX).
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXCHANGES", "KNOWN_INSTRUMENTS"]

#: Exchanges this provider can serve (primary on both).
EXCHANGES: Final[tuple[str, ...]] = ("NSE", "BSE")

#: instrument (``EXCHANGE:SYMBOL``) -> Dhan code (``SEGMENT:SECURITYID``).
KNOWN_INSTRUMENTS: Final[dict[str, str]] = dict(
    {
        "NSE:RELIANCE": "NSE_EQ:2885",
        "BSE:RELIANCE": "BSE_EQ:500325",
        "NSE:HDFCBANK": "NSE_EQ:1333",
        "NSE:INFY": "NSE_EQ:1594",
        "NSE:TCS": "NSE_EQ:11536",
        "BSE:TCS": "BSE_EQ:532540",
        "NSE:NIFTY": "IDX_I:13",
        "NSE:INDIAVIX": "IDX_I:21",
        "NSE:BANKNIFTY": "IDX_I:25",
        "BSE:SENSEX": "IDX_I:51",
    }
)
