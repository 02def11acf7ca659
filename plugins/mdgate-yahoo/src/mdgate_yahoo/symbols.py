"""
Instrument names <-> Yahoo Finance symbols: the provider's documented rule.

The rule ``mdgate_instrument_code`` applies when the routing tables hold no
explicit mapping for an instrument (explicit mappings always win):

=========  ===============  ==================================================
exchange   Yahoo symbol     notes
=========  ===============  ==================================================
NASDAQ     ``AAPL``         bare ticker; class shares use ``-`` (``.`` in the
NYSE       ``IBM``          instrument name): ``NYSE:BRK.B`` <-> ``BRK-B``
NSE        ``RELIANCE.NS``  suffix ``.NS`` (yfinance: MIC XNSE -> ``NS``)
BSE        ``TCS.BO``       suffix ``.BO`` (yfinance: MIC XBOM -> ``BO``)
=========  ===============  ==================================================

A symbol starting with ``^`` is a Yahoo index symbol (``NSE:^NSEI``,
``NASDAQ:^IXIC``) and passes through unchanged, without suffix. Any other
exchange has no derived code (``None``): no guessing.

The reverse direction (:func:`instrument_from_yahoo`) reads the suffix, or,
for a bare US ticker, the Yahoo exchange code a PricingData message carries
(field 5): ``NMS``/``NGM``/``NCM``/``NAS`` are NASDAQ's market tiers,
``NYQ``/``NYS`` are NYSE, ``NSI`` is NSE and ``BSE``/``BOM`` are BSE (the codes
yfinance's own tables list for the US and India). A bare ticker without a
known code is ambiguous and maps to ``None``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EXCHANGES",
    "EXCHANGE_SUFFIXES",
    "YAHOO_EXCHANGE_CODES",
    "instrument_from_yahoo",
    "yahoo_symbol",
]

#: Exchanges this provider can serve.
EXCHANGES: Final[tuple[str, ...]] = ("NASDAQ", "NYSE", "NSE", "BSE")

#: Yahoo symbol suffix per exchange (``""``: bare ticker).
EXCHANGE_SUFFIXES: Final[dict[str, str]] = {
    "NASDAQ": "",
    "NYSE": "",
    "NSE": ".NS",
    "BSE": ".BO",
}

#: Yahoo exchange codes (PricingData field 5, quote ``exchange``) -> exchange.
YAHOO_EXCHANGE_CODES: Final[dict[str, str]] = {
    "NMS": "NASDAQ",  # NASDAQ Global Select Market
    "NGM": "NASDAQ",  # NASDAQ Global Market
    "NCM": "NASDAQ",  # NASDAQ Capital Market
    "NAS": "NASDAQ",
    "NYQ": "NYSE",
    "NYS": "NYSE",
    "NSI": "NSE",
    "BSE": "BSE",
    "BOM": "BSE",
}

_US: Final = frozenset({"NASDAQ", "NYSE"})
_SUFFIX_EXCHANGE: Final[dict[str, str]] = {".NS": "NSE", ".BO": "BSE"}


def yahoo_symbol(exchange: str, symbol: str) -> str | None:
    """
    Derive the Yahoo symbol for ``EXCHANGE:SYMBOL``.

    Args:
        exchange: upper-case exchange (``NASDAQ``, ``NYSE``, ``NSE``, ``BSE``).
        symbol: upper-case symbol as in the instrument name.

    Returns:
        The Yahoo symbol (``AAPL``, ``BRK-B``, ``RELIANCE.NS``, ``TCS.BO``,
        ``^NSEI``), or ``None`` when the exchange is not one of this
        provider's or the symbol is empty.
    """
    suffix = EXCHANGE_SUFFIXES.get(exchange)
    if suffix is None or not symbol:
        return None
    if symbol.startswith("^"):
        return symbol
    if exchange in _US:
        return symbol.replace(".", "-")
    return symbol + suffix


def instrument_from_yahoo(symbol: str, exchange_code: str | None = None) -> str | None:
    """
    Name the instrument a Yahoo symbol stands for.

    Args:
        symbol: the Yahoo symbol (``RELIANCE.NS``, ``BRK-B``).
        exchange_code: the Yahoo exchange code, when known (``NYQ``, ``NMS``);
            needed for bare US tickers.

    Returns:
        ``EXCHANGE:SYMBOL`` (``NSE:RELIANCE``, ``NYSE:BRK.B``), or ``None``
        when the symbol cannot be placed on one of this provider's exchanges.
    """
    symbol = symbol.strip().upper()
    if not symbol:
        return None
    base, dot, tail = symbol.rpartition(".")
    if dot and base:
        exchange = _SUFFIX_EXCHANGE.get("." + tail)
        if exchange is not None:
            return f"{exchange}:{base}"
    if exchange_code is None:
        return None
    exchange = YAHOO_EXCHANGE_CODES.get(exchange_code.strip().upper())
    if exchange is None:
        return None
    if exchange in _US:
        if symbol.startswith("^"):
            return f"{exchange}:{symbol}"
        return f"{exchange}:{symbol.replace('-', '.')}"
    # An NSE/BSE code without the suffix: only index symbols are bare.
    return f"{exchange}:{symbol}" if symbol.startswith("^") else None
