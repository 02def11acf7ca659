"""
Dhan Live Market Feed v2, sans-I/O: request encoders, packet layouts, decoder.

Requests are JSON text frames; responses are binary frames holding one or
more little-endian packets, each starting with an 8-byte header::

    off  type  field
    0    u8    feed response code (2 ticker, 4 quote, 5 OI, 6 prev close,
               7 market status, 8 full, 50 disconnect)
    1    u16   packet length, header included
    3    u8    exchange segment (numeric enum, see SEGMENTS)
    4    u32   security id

Packet bodies are restated from Dhan's docs in ``docs``/README; every layout
below is a precompiled :class:`struct.Struct` applied at the packet's offset.
The decoder walks a frame packet by packet using the header's length, so
stacked packets are all decoded and one bad packet does not hide the others.

This module must not import anyio, websockets, redis, structlog or httpx
(enforced by a test): it is pure and fuzzed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from mdgate.errors import (
    AuthenticationError,
    DecodeError,
    ProviderConnectionError,
    ProviderError,
    RateLimitedError,
    SubscriptionRejected,
)
from mdgate.model import Tick
from mdgate_dhan.hints import AUTH_HINTS as _AUTH_HINTS

__all__ = [
    "DISCONNECT_REASONS",
    "MAX_PER_MESSAGE",
    "MODE_CODES",
    "PROVIDER_CODE",
    "SEGMENTS",
    "SEGMENT_NAMES",
    "DepthLevel",
    "DhanDecoder",
    "decode_request",
    "disconnect_error",
    "encode_disconnect",
    "encode_disconnect_packet",
    "encode_full",
    "encode_header",
    "encode_market_status",
    "encode_oi",
    "encode_prev_close",
    "encode_quote",
    "encode_subscribe",
    "encode_ticker",
    "encode_unsubscribe",
    "parse_code",
    "price_decimals",
]

PROVIDER: Final = "dhan"
#: Provider code stored with every tick.
PROVIDER_CODE: Final = "DHAN"
#: Instruments per subscribe/unsubscribe JSON message (Dhan's limit).
MAX_PER_MESSAGE: Final = 100

#: ExchangeSegment string (JSON/REST) -> numeric enum (binary header).
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

# Response codes.
TICKER: Final = 2
QUOTE: Final = 4
OI: Final = 5
PREV_CLOSE: Final = 6
MARKET_STATUS: Final = 7
FULL: Final = 8
DISCONNECT: Final = 50

# Layouts (little-endian, no padding). Bodies are read at packet offset + 8.
HEADER: Final = struct.Struct("<BHBI")  # code, length, segment, security id
TICKER_BODY: Final = struct.Struct("<fI")  # LTP, LTT
QUOTE_BODY: Final = struct.Struct("<fHIfIIIffff")
# LTP, LTQ, LTT, ATP, volume, total sell qty, total buy qty, open, close, high, low
OI_BODY: Final = struct.Struct("<I")  # open interest
PREV_CLOSE_BODY: Final = struct.Struct("<fI")  # previous close, previous OI
FULL_BODY: Final = struct.Struct("<fHIfIIIIIIffff")
# LTP, LTQ, LTT, ATP, volume, total sell, total buy, OI, OI day high, OI day low,
# open, close, high, low; then 5 depth levels of DEPTH_LEVEL at offset 62.
DEPTH_LEVEL: Final = struct.Struct("<IIHHff")
# bid qty, ask qty, bid orders, ask orders, bid price, ask price
DISCONNECT_BODY: Final = struct.Struct("<H")  # reason code
# Full body plus its first depth level in one call (the decoder's hot path).
_FULL_TOP: Final = struct.Struct("<fHIfIIIIIIffffIIHHff")

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
_DEPTH_OFFSET: Final = 62
# Prices at or above this are treated as corrupt (no listed instrument trades near it).
# DhanDecoder.feed's fast paths spell it (and the response codes) as literals.
_MAX_PRICE: Final = 1e9
_HEADER_FROM: Final = HEADER.unpack_from
_QUOTE_FROM: Final = QUOTE_BODY.unpack_from
_FULL_TOP_FROM: Final = _FULL_TOP.unpack_from
_TICKER_FROM: Final = TICKER_BODY.unpack_from
# Whole single-packet frames (header + body) in one call: the commonest frames.
_TICKER_WHOLE: Final = struct.Struct("<BHBIfI").unpack
_QUOTE_WHOLE: Final = struct.Struct("<BHBIfHIfIIIffff").unpack
_DEPTH_LEVELS: Final = 5

#: Disconnect reason (annexure "Data API Error") -> meaning.
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
# Codes and requests
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


def _requests(request_code: int, codes: Sequence[str]) -> list[str]:
    parsed = [parse_code(c) for c in codes]
    out: list[str] = []
    for i in range(0, len(parsed), MAX_PER_MESSAGE):
        batch = parsed[i : i + MAX_PER_MESSAGE]
        out.append(
            json.dumps(
                {
                    "RequestCode": request_code,
                    "InstrumentCount": len(batch),
                    "InstrumentList": [
                        {"ExchangeSegment": seg, "SecurityId": str(sid)} for seg, _, sid in batch
                    ],
                }
            )
        )
    return out


MODE_CODES: Final[Mapping[str, int]] = {"ticker": 15, "quote": 17, "full": 21}


def _mode_code(mode: str) -> int:
    try:
        return MODE_CODES[mode]
    except KeyError:
        raise ValueError(f"unknown mode {mode!r} (ticker, quote or full)") from None


def encode_subscribe(codes: Sequence[str], mode: str = "quote") -> list[str]:
    """
    Encode subscribe requests: one JSON message per 100 instruments.

    Args:
        codes: provider codes (``NSE_EQ:2885``).
        mode: ``ticker`` (RequestCode 15), ``quote`` (17) or ``full`` (21).

    Raises:
        ValueError: a malformed code or an unknown mode.
    """
    return _requests(_mode_code(mode), codes)


def encode_unsubscribe(codes: Sequence[str], mode: str = "quote") -> list[str]:
    """Encode unsubscribe requests (RequestCode 16, 18 or 22), 100 instruments each."""
    return _requests(_mode_code(mode) + 1, codes)


def encode_disconnect() -> str:
    """Encode the client's disconnect request, ``{"RequestCode": 12}``."""
    return json.dumps({"RequestCode": 12})


def decode_request(text: str | bytes) -> tuple[int, list[str]]:
    """
    Decode a client request (for fakes and tests).

    Returns:
        ``(RequestCode, codes)``; codes are ``SEGMENT:SECURITYID`` strings.

    Raises:
        ValueError: not a JSON object with a valid RequestCode / InstrumentList.
    """
    msg = json.loads(text)
    if not isinstance(msg, dict) or not isinstance(msg.get("RequestCode"), int):
        raise ValueError("request without an integer RequestCode")
    codes: list[str] = []
    items = msg.get("InstrumentList", [])
    if not isinstance(items, list):
        raise ValueError("InstrumentList is not a list")
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("InstrumentList item is not an object")
        code = f"{item.get('ExchangeSegment')}:{item.get('SecurityId')}"
        parse_code(code)
        codes.append(code)
    count = msg.get("InstrumentCount")
    if items and count != len(codes):
        raise ValueError(f"InstrumentCount {count!r} does not match {len(codes)} instruments")
    return msg["RequestCode"], codes


# --------------------------------------------------------------------------
# Disconnect reasons -> typed errors
# --------------------------------------------------------------------------


def disconnect_error(reason: int, ticks: Sequence[Tick] = ()) -> ProviderError:
    """
    Return the typed error for a disconnect packet's reason code.

    805 is :class:`~mdgate.errors.RateLimitedError` (back off hard);
    806-810 are :class:`~mdgate.errors.AuthenticationError` with a hint (no
    retry until new credentials, at most one attempt a minute); 804 and
    811-814 are :class:`~mdgate.errors.SubscriptionRejected` (the same
    request would fail again); 800 and unknown codes are retryable
    :class:`~mdgate.errors.ProviderConnectionError`. No message carries a
    credential.
    """
    meaning = DISCONNECT_REASONS.get(reason, "unknown reason")
    message = f"server disconnected: {reason} {meaning}"
    if reason == 805:
        return RateLimitedError(PROVIDER, message, code=reason, ticks=ticks)
    hint = _AUTH_HINTS.get(reason)
    if hint is not None:
        return AuthenticationError(PROVIDER, message, code=reason, hint=hint, ticks=ticks)
    if reason in _REQUEST_ERRORS:
        return SubscriptionRejected(PROVIDER, message, code=reason, ticks=ticks)
    return ProviderConnectionError(PROVIDER, message, code=reason, ticks=ticks)


# --------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------


class _Instrument:
    """Per-instrument state: its name, precision and latest day statistics."""

    __slots__ = (
        "code",
        "high",
        "low",
        "name",
        "ndigits",
        "oi",
        "open",
        "prev_close",
        "raw_high",
        "raw_low",
        "raw_open",
        "scale",
        "volume",
    )

    def __init__(self, code: str, name: str, ndigits: int) -> None:
        self.code = code
        self.name = name
        self.ndigits = ndigits
        self.scale = 10.0**ndigits
        self.prev_close: float | None = None
        self.oi: int | None = None
        self.open: float | None = None
        self.high: float | None = None
        self.low: float | None = None
        self.volume: int | None = None
        # The float32 values last seen, so unchanged statistics are not re-rounded.
        self.raw_open = 0.0
        self.raw_high = 0.0
        self.raw_low = 0.0

    def day_stats(self, o: float, h: float, lo: float) -> None:
        """Update open/high/low from raw float32 values (0 or less = absent)."""
        if o != self.raw_open:
            self.raw_open = o
            self.open = _round(o, self.scale)
        if h != self.raw_high:
            self.raw_high = h
            self.high = _round(h, self.scale)
        if lo != self.raw_low:
            self.raw_low = lo
            self.low = _round(lo, self.scale)


def _add(
    errors: list[tuple[str, str, int]] | None, kind: str, message: str, pos: int
) -> list[tuple[str, str, int]]:
    if errors is None:
        errors = []
    errors.append((kind, message, pos))
    return errors


def _round(value: float, scale: float) -> float | None:
    # Positive finite values only; others are "absent".
    if 0.0 < value < _MAX_PRICE:
        return int(value * scale + 0.5) / scale
    return None


class DhanDecoder:
    """
    Decode one connection's binary frames into ticks (implements
    :class:`mdgate.provider.Decoder`).

    Ticker (2), Quote (4) and Full (8) packets become ticks; Prev close (6)
    and OI (5) update the instrument's state, merged into its later ticks;
    Market status (7) is counted; Disconnect (50) raises the typed error of
    its reason. ``ts`` is ``(LTT - ltt_offset_seconds) * 1000``; a zero LTT
    falls back to the receive time. A trade packet with LTP 0 (no trade yet)
    is skipped; a negative or non-finite LTP is a ``bad_value`` fault.
    Prices are rounded half-up to 2 decimals (4 for currency segments).

    Attributes:
        market_status_packets: market status packets seen (layout undocumented).
        ignored_packets: packets skipped without a fault: code 0 (reported
            by third parties as keepalive/acknowledgement) and trade packets
            with LTP 0.
    """

    def __init__(self, ltt_offset_seconds: int = 19_800, provider_code: str = PROVIDER_CODE) -> None:
        self._offset = ltt_offset_seconds
        self._provider = provider_code
        self._by_key: dict[int, _Instrument] = {}
        self._keys: dict[str, int] = {}
        self.market_status_packets = 0
        self.ignored_packets = 0

    def track(self, code: str, instrument: str) -> None:
        """Map ``code`` (``NSE_EQ:2885``) to ``instrument`` (bad codes never match)."""
        try:
            _, segment, sid = parse_code(code)
        except ValueError:
            return
        key = (sid << 8) | segment
        self._keys[code] = key
        self._by_key[key] = _Instrument(code, instrument, price_decimals(segment))

    def untrack(self, code: str) -> None:
        """Forget ``code``; its later packets count as ``unknown_symbol``."""
        key = self._keys.pop(code, None)
        if key is not None:
            self._by_key.pop(key, None)

    @property
    def tracked(self) -> dict[str, str]:
        """The tracked codes and their instruments (a copy)."""
        return {code: self._by_key[key].name for code, key in self._keys.items()}

    def feed(self, frame: bytes | str, recv_ts: int) -> list[Tick]:
        """
        Decode one frame received at ``recv_ts`` (epoch ms, UTC).

        Raises:
            DecodeError: for the first bad packet (``bad_frame``,
                ``short_packet``, ``bad_length``, ``unknown_code``,
                ``unknown_symbol``, ``bad_value``), after decoding every
                packet it could; ``error.ticks`` holds all good ticks.
            ProviderError: the typed error of a disconnect packet (see
                :func:`disconnect_error`), with the ticks before it.
        """
        states = self._by_key
        offset = self._offset
        n = len(frame)
        # Fast paths: a frame holding exactly one ticker or quote packet of a tracked
        # instrument (what the feed sends most), read with one unpack. Anything else
        # (stacked packets, other codes, faults) takes the general loop below.
        if n == 16 and frame[0] == 2:
            _code, length, segment, sid, ltp, ltt = _TICKER_WHOLE(frame)  # type: ignore[arg-type]  # bytes here
            st = states.get((sid << 8) | segment)
            if st is not None and length == 16 and 0.0 < ltp < 1e9:
                sc = st.scale
                return [Tick(st.name, int(ltp * sc + 0.5) / sc,
                             (ltt - offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                             None, st.volume, None, None, None, None,
                             st.open, st.high, st.low, st.prev_close, st.oi)]
        elif n == 50 and frame[0] == 4:
            (_code, length, segment, sid, ltp, ltq, ltt, _a, vol, _s, _b, o, _c, h,
             lo) = _QUOTE_WHOLE(frame)  # type: ignore[arg-type]  # bytes: str items are never 4
            st = states.get((sid << 8) | segment)
            if st is not None and length == 50 and 0.0 < ltp < 1e9:
                sc = st.scale
                st.volume = vol
                if o != st.raw_open or h != st.raw_high or lo != st.raw_low:
                    st.day_stats(o, h, lo)
                return [Tick(st.name, int(ltp * sc + 0.5) / sc,
                             (ltt - offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                             ltq, vol, None, None, None, None,
                             st.open, st.high, st.low, st.prev_close, st.oi)]
        # (a text frame never passes the fast paths: its items are str, not 2 or 4)
        if type(frame) is not bytes and not isinstance(frame, bytes):
            raise DecodeError(
                PROVIDER,
                "bad_frame",
                "text frame on the binary feed",
                excerpt=str(frame)[:64],
            )
        ticks: list[Tick] = []
        pos = 0
        errors: list[tuple[str, str, int]] | None = None
        while pos < n:
            if n - pos < 8:
                errors = _add(errors, "short_packet", f"{n - pos} trailing bytes", pos)
                break
            code, length, segment, sid = _HEADER_FROM(frame, pos)
            end = pos + length
            if length < 8 or end > n:
                kind = "bad_length" if length < 8 else "short_packet"
                errors = _add(
                    errors,
                    kind,
                    f"code {code} length {length}, {n - pos} bytes left",
                    pos,
                )
                break
            # Fast paths: trade packets of tracked instruments with sane prices.
            if code == 4:  # QUOTE (literals: no global lookups here)
                st = states.get((sid << 8) | segment)
                if st is not None and length >= 50:
                    ltp, ltq, ltt, _a, vol, _s, _b, o, _c, h, lo = _QUOTE_FROM(frame, pos + 8)
                    if 0.0 < ltp < 1e9:
                        sc = st.scale
                        st.volume = vol
                        if o != st.raw_open or h != st.raw_high or lo != st.raw_low:
                            st.day_stats(o, h, lo)
                        ticks.append(
                            Tick(
                                st.name,
                                int(ltp * sc + 0.5) / sc,
                                (ltt - offset) * 1000 if ltt else recv_ts,
                                recv_ts,
                                self._provider,
                                ltq,
                                vol,
                                None,
                                None,
                                None,
                                None,
                                st.open,
                                st.high,
                                st.low,
                                st.prev_close,
                                st.oi,
                            )
                        )
                        pos = end
                        continue
            elif code == 8:  # FULL
                st = states.get((sid << 8) | segment)
                if st is not None and length >= 162:
                    (
                        ltp,
                        ltq,
                        ltt,
                        _a,
                        vol,
                        _s,
                        _b,
                        oi,
                        _oh,
                        _ol,
                        o,
                        _c,
                        h,
                        lo,
                        bq,
                        aq,
                        _bo,
                        _ao,
                        bp,
                        ap,
                    ) = _FULL_TOP_FROM(frame, pos + 8)
                    if 0.0 < ltp < 1e9:
                        sc = st.scale
                        st.volume = vol
                        st.oi = oi
                        if o != st.raw_open or h != st.raw_high or lo != st.raw_low:
                            st.day_stats(o, h, lo)
                        if bq and 0.0 < bp < 1e9:
                            bid: float | None = int(bp * sc + 0.5) / sc
                            bid_size: int | None = bq
                        else:
                            bid = bid_size = None
                        if aq and 0.0 < ap < 1e9:
                            ask: float | None = int(ap * sc + 0.5) / sc
                            ask_size: int | None = aq
                        else:
                            ask = ask_size = None
                        ticks.append(
                            Tick(
                                st.name,
                                int(ltp * sc + 0.5) / sc,
                                (ltt - offset) * 1000 if ltt else recv_ts,
                                recv_ts,
                                self._provider,
                                ltq,
                                vol,
                                bid,
                                ask,
                                bid_size,
                                ask_size,
                                st.open,
                                st.high,
                                st.low,
                                st.prev_close,
                                oi,
                            )
                        )
                        pos = end
                        continue
            elif code == 2:  # TICKER
                st = states.get((sid << 8) | segment)
                if st is not None and length >= 16:
                    ltp, ltt = _TICKER_FROM(frame, pos + 8)
                    if 0.0 < ltp < 1e9:
                        sc = st.scale
                        ticks.append(
                            Tick(
                                st.name,
                                int(ltp * sc + 0.5) / sc,
                                (ltt - offset) * 1000 if ltt else recv_ts,
                                recv_ts,
                                self._provider,
                                None,
                                st.volume,
                                None,
                                None,
                                None,
                                None,
                                st.open,
                                st.high,
                                st.low,
                                st.prev_close,
                                st.oi,
                            )
                        )
                        pos = end
                        continue
            # Everything else: state packets, disconnects and faults.
            fault = self._other(frame, pos, code, length, segment, sid, ticks, recv_ts)
            if fault is not None:
                errors = _add(errors, *fault, pos)
            pos = end
        if errors:
            kind, message, at = errors[0]
            if len(errors) > 1:
                message = f"{message} (+{len(errors) - 1} more bad packets in this frame)"
            raise DecodeError(PROVIDER, kind, message, excerpt=bytes(frame[at : at + 64]), ticks=ticks)
        return ticks

    def _other(
        self,
        frame: bytes,
        pos: int,
        code: int,
        length: int,
        segment: int,
        sid: int,
        ticks: list[Tick],
        recv_ts: int,
    ) -> tuple[str, str] | None:
        # The slow path: returns (kind, message) for a bad packet, else None.
        need = PACKET_SIZES.get(code)
        if need is None:
            if code == 0:
                self.ignored_packets += 1
                return None
            return "unknown_code", f"unknown response code {code}"
        if length < need:
            return "short_packet", f"code {code} needs {need} bytes, length is {length}"
        if code == DISCONNECT:
            (reason,) = DISCONNECT_BODY.unpack_from(frame, pos + 8)
            raise disconnect_error(reason, ticks)
        if code == MARKET_STATUS:
            self.market_status_packets += 1
            return None
        st = self._by_key.get((sid << 8) | segment)
        if st is None:
            name = SEGMENT_NAMES.get(segment, str(segment))
            return "unknown_symbol", f"code {code} for untracked {name}:{sid}"
        if code == PREV_CLOSE:
            close, _prev_oi = PREV_CLOSE_BODY.unpack_from(frame, pos + 8)
            st.prev_close = _round(close, st.scale)
            return None
        if code == OI:
            (st.oi,) = OI_BODY.unpack_from(frame, pos + 8)
            return None
        # A trade packet whose LTP is zero, negative or not finite.
        body = TICKER_BODY if code == TICKER else QUOTE_BODY
        ltp = body.unpack_from(frame, pos + 8)[0]
        if ltp - ltp != 0.0 or ltp >= _MAX_PRICE:
            return "bad_value", f"LTP {ltp!r} out of range for {st.code}"
        if ltp == 0.0:
            # No trade yet (seen on illiquid instruments right after subscribing).
            self.ignored_packets += 1
            return None
        return "bad_value", f"LTP {ltp!r} out of range for {st.code}"


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
    levels = list(depth)[:_DEPTH_LEVELS]
    levels += [_EMPTY_LEVEL] * (_DEPTH_LEVELS - len(levels))
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
