"""
DhanDecoder: one connection's binary frames -> normalized ticks.

The decoder walks a frame packet by packet using the header's length
(``docs/protocols/dhan.md#packet-header``), so stacked packets are all
decoded and one bad packet does not hide the others. ``feed`` is a
dispatcher: one helper per packet type (``_ticker``, ``_quote``, ``_full``,
``_oi``, ``_prev_close``, ``_market_status``, ``_disconnect``, ``_unknown``).
Pure and fuzzed: no I/O library is imported.
"""

from __future__ import annotations

import struct
from typing import Final, NoReturn

from mdgate import DecodeError, Tick
from mdgate_dhan.packets import (
    CODE,
    DISCONNECT,
    DISCONNECT_BODY,
    FULL_BODY,
    HEADER,
    MARKET_STATUS,
    NAME,
    OI,
    OI_BODY,
    PACKET_SIZES,
    PREV_CLOSE,
    PREV_CLOSE_BODY,
    QUOTE_BODY,
    SEGMENT_NAMES,
    TICKER,
    TICKER_BODY,
    disconnect_error,
    parse_code,
    price_decimals,
)

__all__ = ["DhanDecoder"]

# Prices at or above this are treated as corrupt (no listed instrument trades near it).
# The hot paths below spell it (and the response codes) as literals: no global lookups.
_MAX_PRICE: Final = 1e9
_HEADER_FROM: Final = HEADER.unpack_from
_TICKER_FROM: Final = TICKER_BODY.unpack_from
_QUOTE_FROM: Final = QUOTE_BODY.unpack_from
# Full body plus its first depth level (top of book) in one call.
_FULL_TOP_FROM: Final = struct.Struct(FULL_BODY.format + "IIHHff").unpack_from
# Whole single-packet frames (header + body) in one call: the commonest frames.
_TICKER_WHOLE: Final = struct.Struct("<BHBIfI").unpack
_QUOTE_WHOLE: Final = struct.Struct("<BHBIfHIfIIIffff").unpack

Fault = tuple[str, str]
"""A bad packet: ``(kind, message)``, kind as in :class:`~mdgate.DecodeError`."""


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
        """Update open/high/low from raw float32 values (0 or less = absent), each on its own."""
        if o != self.raw_open:
            self.raw_open = o
            self.open = _round(o, self.scale)
        if h != self.raw_high:
            self.raw_high = h
            self.high = _round(h, self.scale)
        if lo != self.raw_low:
            self.raw_low = lo
            self.low = _round(lo, self.scale)


def _round(value: float, scale: float) -> float | None:
    # Positive finite values only; others are "absent".
    if 0.0 < value < _MAX_PRICE:
        return int(value * scale + 0.5) / scale
    return None


class DhanDecoder:
    """
    Decode one connection's binary frames into ticks (implements
    :class:`mdgate.Decoder`).

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

    def __init__(self, ltt_offset_seconds: int = 19_800, provider_code: str = CODE) -> None:
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

    # ----------------------------------------------------------------------
    # Dispatch
    # ----------------------------------------------------------------------

    def feed(self, frame: bytes | str, recv_ts: int) -> list[Tick]:
        """
        Decode one frame received at ``recv_ts`` (epoch ms, UTC).

        Raises:
            DecodeError: for the first bad packet (``bad_frame``,
                ``short_packet``, ``bad_length``, ``unknown_code``,
                ``unknown_symbol``, ``bad_value``), after decoding every
                packet it could; ``error.ticks`` holds all good ticks.
            ProviderError: the typed error of a disconnect packet (see
                :func:`~mdgate_dhan.packets.disconnect_error`), with the
                ticks before it.
        """
        n = len(frame)
        # Fast paths: a frame holding exactly one ticker or quote packet of a tracked
        # instrument (what the feed sends most), read with one unpack of the whole
        # frame. They stay inline rather than calling _ticker/_quote: a method call
        # (~0.03 µs) plus a separate header unpack would add ~10 % to a ticker frame's
        # ~0.65 µs (docs/benchmarks.md, "Dhan decoder"). Keep them in step with
        # _ticker and _quote: same fields, same per-field day-statistics rule.
        if n == 16 and frame[0] == 2:  # docs/protocols/dhan.md#ticker-packet
            _code, length, segment, sid, ltp, ltt = _TICKER_WHOLE(frame)  # type: ignore[arg-type]  # bytes here
            st = self._by_key.get((sid << 8) | segment)
            if st is not None and length == 16 and 0.0 < ltp < 1e9:
                sc = st.scale
                return [Tick(st.name, int(ltp * sc + 0.5) / sc,
                             (ltt - self._offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                             None, st.volume, None, None, None, None,
                             st.open, st.high, st.low, st.prev_close, st.oi)]  # fmt: skip
        elif n == 50 and frame[0] == 4:  # docs/protocols/dhan.md#quote-packet
            (_code, length, segment, sid, ltp, ltq, ltt, _a, vol, _s, _b, o, _c, h,
             lo) = _QUOTE_WHOLE(frame)  # type: ignore[arg-type]  # fmt: skip  # bytes: str items are never 4
            st = self._by_key.get((sid << 8) | segment)
            if st is not None and length == 50 and 0.0 < ltp < 1e9:
                sc = st.scale
                st.volume = vol
                if o != st.raw_open or h != st.raw_high or lo != st.raw_low:
                    st.day_stats(o, h, lo)
                return [Tick(st.name, int(ltp * sc + 0.5) / sc,
                             (ltt - self._offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                             ltq, vol, None, None, None, None,
                             st.open, st.high, st.low, st.prev_close, st.oi)]  # fmt: skip
        elif n == 162 and frame[0] == 8:  # one full packet: skip the walk's set-up
            _code, length, segment, sid = _HEADER_FROM(frame, 0)  # type: ignore[arg-type]  # bytes here
            st = self._by_key.get((sid << 8) | segment)
            if st is not None and length == 162:
                tick = self._full(st, frame, 0, recv_ts)  # type: ignore[arg-type]  # bytes here
                if tick is not None:
                    return [tick]
        # (a text frame never passes the fast paths: its items are str, not 2, 4 or 8)
        if type(frame) is not bytes and not isinstance(frame, bytes):
            raise DecodeError(NAME, "bad_frame", "text frame on the binary feed", excerpt=str(frame)[:64])
        return self._walk(frame, recv_ts)

    def _walk(self, frame: bytes, recv_ts: int) -> list[Tick]:
        # Every packet of the frame in turn; trade packets of tracked instruments
        # go to their helper, everything else (and a trade packet the helper
        # declines: LTP not sane) to _other. Codes are literals: no global lookups.
        states = self._by_key
        ticks: list[Tick] = []
        faults: list[tuple[str, str, int]] = []
        n = len(frame)
        pos = 0
        while pos < n:
            if n - pos < 8:
                faults.append(("short_packet", f"{n - pos} trailing bytes", pos))
                break
            code, length, segment, sid = _HEADER_FROM(frame, pos)
            end = pos + length
            if length < 8 or end > n:
                kind = "bad_length" if length < 8 else "short_packet"
                faults.append((kind, f"code {code} length {length}, {n - pos} bytes left", pos))
                break
            st = states.get((sid << 8) | segment)
            tick = None
            if st is not None:
                if code == 4 and length >= 50:
                    tick = self._quote(st, frame, pos, recv_ts)
                elif code == 8 and length >= 162:
                    tick = self._full(st, frame, pos, recv_ts)
                elif code == 2 and length >= 16:
                    tick = self._ticker(st, frame, pos, recv_ts)
            if tick is not None:
                ticks.append(tick)
            else:
                fault = self._other(frame, pos, code, length, st, segment, sid, ticks)
                if fault is not None:
                    faults.append((*fault, pos))
            pos = end
        if faults:
            kind, message, at = faults[0]
            if len(faults) > 1:
                message = f"{message} (+{len(faults) - 1} more bad packets in this frame)"
            raise DecodeError(NAME, kind, message, excerpt=bytes(frame[at : at + 64]), ticks=ticks)
        return ticks

    def _other(
        self,
        frame: bytes,
        pos: int,
        code: int,
        length: int,
        st: _Instrument | None,
        segment: int,
        sid: int,
        ticks: list[Tick],
    ) -> Fault | None:
        # The slow path: state packets, disconnects and faults. Returns the fault, if any.
        need = PACKET_SIZES.get(code)
        if need is None:
            return self._unknown(code)
        if length < need:
            return "short_packet", f"code {code} needs {need} bytes, length is {length}"
        if code == DISCONNECT:
            self._disconnect(frame, pos, ticks)
        if code == MARKET_STATUS:
            self._market_status()
            return None
        if st is None:
            name = SEGMENT_NAMES.get(segment, str(segment))
            return "unknown_symbol", f"code {code} for untracked {name}:{sid}"
        if code == PREV_CLOSE:
            self._prev_close(st, frame, pos)
        elif code == OI:
            self._oi(st, frame, pos)
        else:
            return self._bad_trade(st, frame, pos, code)
        return None

    # ----------------------------------------------------------------------
    # Trade packets -> ticks (None: LTP not sane, _bad_trade decides)
    # ----------------------------------------------------------------------

    def _ticker(self, st: _Instrument, frame: bytes, pos: int, recv_ts: int) -> Tick | None:
        # docs/protocols/dhan.md#ticker-packet: LTP and LTT; the rest from the state.
        ltp, ltt = _TICKER_FROM(frame, pos + 8)
        if not 0.0 < ltp < 1e9:
            return None
        sc = st.scale
        return Tick(st.name, int(ltp * sc + 0.5) / sc,
                    (ltt - self._offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                    None, st.volume, None, None, None, None,
                    st.open, st.high, st.low, st.prev_close, st.oi)  # fmt: skip

    def _quote(self, st: _Instrument, frame: bytes, pos: int, recv_ts: int) -> Tick | None:
        # docs/protocols/dhan.md#quote-packet: trade, volume and day statistics.
        ltp, ltq, ltt, _a, vol, _s, _b, o, _c, h, lo = _QUOTE_FROM(frame, pos + 8)
        if not 0.0 < ltp < 1e9:
            return None
        sc = st.scale
        st.volume = vol
        if o != st.raw_open or h != st.raw_high or lo != st.raw_low:
            st.day_stats(o, h, lo)
        return Tick(st.name, int(ltp * sc + 0.5) / sc,
                    (ltt - self._offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                    ltq, vol, None, None, None, None,
                    st.open, st.high, st.low, st.prev_close, st.oi)  # fmt: skip

    def _full(self, st: _Instrument, frame: bytes, pos: int, recv_ts: int) -> Tick | None:
        # docs/protocols/dhan.md#full-packet: quote fields, OI and the top depth level.
        (ltp, ltq, ltt, _a, vol, _s, _b, oi, _oh, _ol, o, _c, h, lo,
         bq, aq, _bo, _ao, bp, ap) = _FULL_TOP_FROM(frame, pos + 8)  # fmt: skip
        if not 0.0 < ltp < 1e9:
            return None
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
        return Tick(st.name, int(ltp * sc + 0.5) / sc,
                    (ltt - self._offset) * 1000 if ltt else recv_ts, recv_ts, self._provider,
                    ltq, vol, bid, ask, bid_size, ask_size,
                    st.open, st.high, st.low, st.prev_close, oi)  # fmt: skip

    def _bad_trade(self, st: _Instrument, frame: bytes, pos: int, code: int) -> Fault | None:
        # A trade packet whose LTP is zero (no trade yet: ignored), negative or not finite.
        # LTP is the body's first field in ticker, quote and full packets alike.
        ltp = (TICKER_BODY if code == TICKER else QUOTE_BODY).unpack_from(frame, pos + 8)[0]
        if ltp == 0.0:
            # Seen on illiquid instruments right after subscribing.
            self.ignored_packets += 1
            return None
        return "bad_value", f"LTP {ltp!r} out of range for {st.code}"

    # ----------------------------------------------------------------------
    # State, status and control packets
    # ----------------------------------------------------------------------

    def _prev_close(self, st: _Instrument, frame: bytes, pos: int) -> None:
        # docs/protocols/dhan.md#prev-close-packet: merged into the instrument's later ticks.
        close, _prev_oi = PREV_CLOSE_BODY.unpack_from(frame, pos + 8)
        st.prev_close = _round(close, st.scale)

    def _oi(self, st: _Instrument, frame: bytes, pos: int) -> None:
        # docs/protocols/dhan.md#oi-packet: merged into the instrument's later ticks.
        (st.oi,) = OI_BODY.unpack_from(frame, pos + 8)

    def _market_status(self) -> None:
        # docs/protocols/dhan.md#market-status-packet: header only, layout undocumented.
        self.market_status_packets += 1

    def _disconnect(self, frame: bytes, pos: int, ticks: list[Tick]) -> NoReturn:
        # docs/protocols/dhan.md#disconnect-packet: the reason's typed error, with
        # the ticks decoded before it.
        (reason,) = DISCONNECT_BODY.unpack_from(frame, pos + 8)
        raise disconnect_error(reason, ticks)

    def _unknown(self, code: int) -> Fault | None:
        # docs/protocols/dhan.md#unknown-packets: code 0 is reported by third parties
        # as a keepalive/acknowledgement and ignored; any other code is a fault.
        if code == 0:
            self.ignored_packets += 1
            return None
        return "unknown_code", f"unknown response code {code}"
