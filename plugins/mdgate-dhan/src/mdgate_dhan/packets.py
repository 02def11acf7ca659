"""
Dhan Live Market Feed v2 binary packets: codes, layouts, sizes and encoders.

Every response packet starts with an 8-byte little-endian header
(``docs/protocols/dhan.md#packet-header``)::

    off  type  field
    0    u8    feed response code (2 ticker, 4 quote, 5 OI, 6 prev close,
               7 market status, 8 full, 50 disconnect)
    1    u16   packet length, header included
    3    u8    exchange segment (numeric enum, see SEGMENTS)
    4    u32   security id

Each body layout below is a precompiled :class:`struct.Struct` read at the
packet's offset + 8; the layouts are restated, field by field, in
``docs/protocols/dhan.md``. The encoders build packets for fakes, fixtures,
fuzzing and benchmarks. Pure: no I/O library is imported (enforced by a test
through :mod:`mdgate_dhan.protocol`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from mdgate import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderError,
    RateLimitedError,
    SubscriptionRejected,
    Tick,
)
from mdgate_dhan.hints import AUTH_HINTS as _AUTH_HINTS

#: Provider name (as in ``[providers.dhan]``) and code (stored with every tick).
NAME: Final = "dhan"
CODE: Final = "DHAN"

#: ExchangeSegment string (JSON/REST) -> numeric enum (binary header).
#: See ``docs/protocols/dhan.md#exchange-segments``.
SEGMENTS: Final[Mapping[str, int]] = {
    "IDX_I": 0,
    "NSE_EQ": 1,
    "NSE_FNO": 2,
    "NSE_CURRENCY": 3,
    "BSE_EQ": 4,
    "MCX_COMM": 5,
    "BSE_CURRENCY": 7,
    "BSE_FNO": 8,
}
#: Numeric enum -> ExchangeSegment string.
SEGMENT_NAMES: Final[Mapping[int, str]] = {v: k for k, v in SEGMENTS.items()}
_CURRENCY_SEGMENTS: Final = frozenset({3, 7})

# Response codes (the header's first byte).
TICKER: Final = 2
QUOTE: Final = 4
OI: Final = 5
PREV_CLOSE: Final = 6
MARKET_STATUS: Final = 7
FULL: Final = 8
DISCONNECT: Final = 50

# Layouts (little-endian, no padding). Bodies are read at packet offset + 8.
HEADER: Final = struct.Struct("<BHBI")  # code, length, segment, security id
# docs/protocols/dhan.md#ticker-packet
TICKER_BODY: Final = struct.Struct("<fI")  # LTP, LTT
# docs/protocols/dhan.md#quote-packet
QUOTE_BODY: Final = struct.Struct("<fHIfIIIffff")
# LTP, LTQ, LTT, ATP, volume, total sell qty, total buy qty, open, close, high, low
# docs/protocols/dhan.md#oi-packet
OI_BODY: Final = struct.Struct("<I")  # open interest
# docs/protocols/dhan.md#prev-close-packet
PREV_CLOSE_BODY: Final = struct.Struct("<fI")  # previous close, previous OI
# docs/protocols/dhan.md#full-packet
FULL_BODY: Final = struct.Struct("<fHIfIIIIIIffff")
# LTP, LTQ, LTT, ATP, volume, total sell, total buy, OI, OI day high, OI day low,
# open, close, high, low; then 5 depth levels of DEPTH_LEVEL at offset 62.
DEPTH_LEVEL: Final = struct.Struct("<IIHHff")
# bid qty, ask qty, bid orders, ask orders, bid price, ask price
# docs/protocols/dhan.md#disconnect-packet
DISCONNECT_BODY: Final = struct.Struct("<H")  # reason code

#: Packet sizes (header included) by response code.
PACKET_SIZES: Final[Mapping[int, int]] = {
    TICKER: 16,
    QUOTE: 50,
    OI: 12,
    PREV_CLOSE: 16,
    MARKET_STATUS: 8,
    FULL: 162,
    DISCONNECT: 10,
}
DEPTH_OFFSET: Final = 62
DEPTH_LEVELS: Final = 5

#: Disconnect reason (annexure "Data API Error") -> meaning.
#: See ``docs/protocols/dhan.md#disconnect-packet``.
DISCONNECT_REASONS: Final[Mapping[int, str]] = {
    800: "internal server error",
    804: "requested number of instruments exceeds limit",
    805: "too many requests or connections (also sent to the oldest socket when a 6th connection opens)",
    806: "Data APIs not subscribed",
    807: "access token expired",
    808: "authentication failed (client id or access token invalid)",
    809: "access token invalid",
    810: "client id invalid",
    811: "invalid expiry date",
    812: "invalid date format",
    813: "invalid SecurityId",
    814: "invalid request",
}
_REQUEST_ERRORS: Final = frozenset({804, 811, 812, 813, 814})

DepthLevel = tuple[int, int, int, int, float, float]
"""One depth level: bid qty, ask qty, bid orders, ask orders, bid price, ask price."""
_EMPTY_LEVEL: Final[DepthLevel] = (0, 0, 0, 0, -0.01, -0.01)


# --------------------------------------------------------------------------
# Codes
# --------------------------------------------------------------------------


def parse_code(code: str) -> tuple[str, int, int]:
    """
    Split a Dhan provider code ``SEGMENT:SECURITYID``.

    Returns:
        ``(segment name, segment number, security id)``, e.g.
        ``("NSE_EQ", 1, 2885)`` for ``NSE_EQ:2885``.

    Raises:
        ValueError: unknown segment or a security id that is not a u32.
    """
    segment, sep, sid = code.partition(":")
    number = SEGMENTS.get(segment)
    if not sep or number is None:
        raise ValueError(
            f"bad Dhan code {code!r}: expected SEGMENT:SECURITYID with SEGMENT one of {', '.join(SEGMENTS)}"
        )
    if not (sid.isascii() and sid.isdigit()) or len(sid) > 10 or int(sid) > 0xFFFFFFFF:
        raise ValueError(f"bad Dhan code {code!r}: SECURITYID must be a number")
    return segment, number, int(sid)


def price_decimals(segment: int) -> int:
    """Return the decimals prices are rounded to: 4 for currency segments, else 2."""
    return 4 if segment in _CURRENCY_SEGMENTS else 2


# --------------------------------------------------------------------------
# Disconnect reasons -> typed errors
# --------------------------------------------------------------------------


def disconnect_error(reason: int, ticks: Sequence[Tick] = ()) -> ProviderError:
    """
    Return the typed error for a disconnect packet's reason code.

    805 is :class:`~mdgate.RateLimitedError` (back off hard);
    806-810 are :class:`~mdgate.AuthenticationError` with a hint (no
    retry until new credentials, at most one attempt a minute); 804 and
    811-814 are :class:`~mdgate.SubscriptionRejected` (the same
    request would fail again); 800 and unknown codes are retryable
    :class:`~mdgate.ProviderConnectionError`. No message carries a
    credential.
    """
    meaning = DISCONNECT_REASONS.get(reason, "unknown reason")
    message = f"server disconnected: {reason} {meaning}"
    if reason == 805:
        return RateLimitedError(NAME, message, code=reason, ticks=ticks)
    hint = _AUTH_HINTS.get(reason)
    if hint is not None:
        return AuthenticationError(NAME, message, code=reason, hint=hint, ticks=ticks)
    if reason in _REQUEST_ERRORS:
        return SubscriptionRejected(NAME, message, code=reason, ticks=ticks)
    return ProviderConnectionError(NAME, message, code=reason, ticks=ticks)


# --------------------------------------------------------------------------
# Packet encoders (pure; for fakes, fixtures, fuzzing and benchmarks)
# --------------------------------------------------------------------------


def encode_header(code: int, length: int, segment: int, security_id: int) -> bytes:
    """Encode an 8-byte response header."""
    return HEADER.pack(code, length, segment, security_id)


def _ids(code: str) -> tuple[int, int]:
    _, segment, sid = parse_code(code)
    return segment, sid


def encode_ticker(code: str, ltp: float, ltt: int) -> bytes:
    """Encode a Ticker packet (code 2, 16 B); ``ltt`` IST-shifted as Dhan sends it."""
    segment, sid = _ids(code)
    return HEADER.pack(TICKER, 16, segment, sid) + TICKER_BODY.pack(ltp, ltt)


def encode_quote(
    code: str,
    *,
    ltp: float,
    ltq: int = 0,
    ltt: int = 0,
    atp: float = 0.0,
    volume: int = 0,
    total_sell_qty: int = 0,
    total_buy_qty: int = 0,
    open: float = 0.0,
    close: float = 0.0,
    high: float = 0.0,
    low: float = 0.0,
) -> bytes:
    """Encode a Quote packet (code 4, 50 bytes)."""
    segment, sid = _ids(code)
    return HEADER.pack(QUOTE, 50, segment, sid) + QUOTE_BODY.pack(
        ltp,
        ltq,
        ltt,
        atp,
        volume,
        total_sell_qty,
        total_buy_qty,
        open,
        close,
        high,
        low,
    )


def encode_full(
    code: str,
    *,
    ltp: float,
    ltq: int = 0,
    ltt: int = 0,
    atp: float = 0.0,
    volume: int = 0,
    total_sell_qty: int = 0,
    total_buy_qty: int = 0,
    oi: int = 0,
    oi_day_high: int = 0,
    oi_day_low: int = 0,
    open: float = 0.0,
    close: float = 0.0,
    high: float = 0.0,
    low: float = 0.0,
    depth: Iterable[DepthLevel] = (),
) -> bytes:
    """
    Encode a Full packet (code 8, 162 bytes).

    Args:
        depth: up to 5 levels, best first; missing levels are sent empty
            (zero quantities, price -0.01) as Dhan does.
    """
    segment, sid = _ids(code)
    levels = list(depth)[:DEPTH_LEVELS]
    levels += [_EMPTY_LEVEL] * (DEPTH_LEVELS - len(levels))
    body = FULL_BODY.pack(
        ltp,
        ltq,
        ltt,
        atp,
        volume,
        total_sell_qty,
        total_buy_qty,
        oi,
        oi_day_high,
        oi_day_low,
        open,
        close,
        high,
        low,
    )
    return (
        HEADER.pack(FULL, 162, segment, sid) + body + b"".join(DEPTH_LEVEL.pack(*level) for level in levels)
    )


def encode_oi(code: str, oi: int) -> bytes:
    """Encode an OI packet (code 5, 12 bytes)."""
    segment, sid = _ids(code)
    return HEADER.pack(OI, 12, segment, sid) + OI_BODY.pack(oi)


def encode_prev_close(code: str, prev_close: float, prev_oi: int = 0) -> bytes:
    """Encode a Prev close packet (code 6, 16 bytes)."""
    segment, sid = _ids(code)
    return HEADER.pack(PREV_CLOSE, 16, segment, sid) + PREV_CLOSE_BODY.pack(prev_close, prev_oi)


def encode_market_status(segment: int = 0, security_id: int = 0) -> bytes:
    """Encode a Market status packet (code 7; header only, layout undocumented)."""
    return HEADER.pack(MARKET_STATUS, 8, segment, security_id)


def encode_disconnect_packet(reason: int) -> bytes:
    """Encode a server Disconnect packet (code 50, 10 bytes) with ``reason``."""
    return HEADER.pack(DISCONNECT, 10, 0, 0) + DISCONNECT_BODY.pack(reason)
