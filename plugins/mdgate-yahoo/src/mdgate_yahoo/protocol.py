"""
Yahoo Finance streamer protocol, sans I/O.

Client -> server: JSON text frames ``{"subscribe": [...]}`` and
``{"unsubscribe": [...]}``; the heartbeat re-sends the whole subscribe set
(yfinance does so every 15 s). Server -> client: JSON text frames
``{"type": "pricing", "message": "<base64 PricingData>"}`` where
``PricingData`` is the proto3 message of ``pricing.proto``. The wire facts
(messages, limits, every field) are in docs/protocols/yahoo.md; what this
decoder reads is docs/protocols/yahoo.md#what-the-decoder-uses.

:class:`YahooDecoder` turns those frames into :class:`~mdgate.Tick`
objects. It is pure (no I/O, no logging) and keeps, per tracked symbol, the
latest known day statistics and price precision.

Zero values (proto3 implicit presence). The schema has no ``optional``
fields, so a field holding 0 / 0.0 / "" is never on the wire and reads back
as its zero value: *zero and absent are the same thing*. The decoder
therefore treats every zero as "not supplied":

* ``price`` 0 -> the message carries no trade: day statistics are updated,
  no tick is produced (a real last price of exactly 0 cannot be told apart);
* ``time`` 0 -> ``ts`` falls back to ``recv_ts``;
* ``day_volume``, ``last_size``, bid/ask and their sizes, day high/low/open,
  previous close, open interest 0 -> ``None`` on the tick (day statistics
  and volume keep their last known value instead, see below);
* ``price_hint`` 0 -> the default precision rule applies;
* ``market_hours`` 0 (PRE_MARKET) reads like "absent"; it is not used.

Day statistics (``open``, ``high``, ``low``, ``prev_close``) and ``volume``
are carried per symbol: a message that omits them yields a tick with the
latest known values. They are forgotten when a message is more than
:data:`STATS_MAX_GAP_MS` newer than the newest one seen for the symbol (a new
session), and on reconnect (the runtime builds a new decoder per connection).

``size`` is ``last_size``, except where it cannot be a trade size: for
crypto (``quote_type`` 41) and whenever it equals the message's
``day_volume`` (the yfinance BTC-USD test vector has ``last_size ==
day_volume``), ``size`` is ``None``.

Prices (float32 on the wire) are rounded to the symbol's precision:
``price_hint`` decimals when Yahoo has sent one for the symbol, else 2
decimals, or 4 for prices below 1. Rounding a float32 to its displayed
decimals recovers the published price (2456.75 stays 2456.75,
94745.078125 becomes 94745.08); float32 carries about 7 significant digits,
so prices above ~100 000 are only exact to the cent when Yahoo's own
float32 was.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable
from math import floor, isfinite
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from mdgate import DecodeError, Tick

if TYPE_CHECKING:
    from mdgate_yahoo.pricing_pb2 import PricingData

__all__ = [
    "CODE",
    "CRYPTOCURRENCY",
    "NAME",
    "STATS_MAX_GAP_MS",
    "YahooDecoder",
    "encode_heartbeat",
    "encode_subscribe",
    "encode_unsubscribe",
    "round_price",
]

#: Provider name (as in ``[providers.yahoo]``) and code (stored with every tick).
NAME: Final = "yahoo"
CODE: Final = "YF"

#: ``quote_type`` of crypto quotes, whose ``last_size`` is not a trade size.
CRYPTOCURRENCY: Final = 41

#: Day statistics older than this gap (between two messages of a symbol) are dropped.
STATS_MAX_GAP_MS: Final = 6 * 3600 * 1000

_MAX_DECIMALS: Final = 10
#: ``10 ** decimals`` by decimals: prices round half up to ``1 / scale``.
_SCALES: Final = tuple(10.0**d for d in range(_MAX_DECIMALS + 1))


def _check(symbols: Iterable[str]) -> list[str]:
    out = list(symbols)
    for s in out:
        if not isinstance(s, str) or not s:
            # Yahoo closes the socket on a null or mistyped symbol.
            raise ValueError(f"Yahoo symbols must be non-empty strings, got {s!r}")
    return out


def encode_subscribe(symbols: Iterable[str]) -> str:
    """
    Encode a subscribe frame: ``{"subscribe": ["AAPL", "RELIANCE.NS"]}``.

    Raises:
        ValueError: a symbol is not a non-empty string.
    """
    return json.dumps({"subscribe": _check(symbols)})


def encode_unsubscribe(symbols: Iterable[str]) -> str:
    """
    Encode an unsubscribe frame: ``{"unsubscribe": ["AAPL"]}``.

    Raises:
        ValueError: a symbol is not a non-empty string.
    """
    return json.dumps({"unsubscribe": _check(symbols)})


def encode_heartbeat(symbols: Iterable[str]) -> str:
    """
    Encode the keepalive frame: the whole subscribe set, sent again.

    Yahoo defines no heartbeat message; yfinance re-subscribes its full set
    every 15 seconds, which also restores symbols the server may have
    dropped.
    """
    return encode_subscribe(symbols)


class _Envelope(msgspec.Struct, gc=False):
    type: Literal["pricing"]
    message: str


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


class _State:
    """Per-symbol state kept across messages of one connection."""

    __slots__ = (
        "decimals",
        "high",
        "instrument",
        "last_ts",
        "low",
        "open",
        "prev_close",
        "raw_high",
        "raw_low",
        "raw_open",
        "raw_prev_close",
        "volume",
    )

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.decimals: int | None = None
        self.last_ts = 0
        self.reset()

    def reset(self) -> None:
        # Rounded day statistics, and the raw float32 values they came from
        # (rounding is skipped while the raw value does not change).
        self.open: float | None = None
        self.high: float | None = None
        self.low: float | None = None
        self.prev_close: float | None = None
        self.volume: int | None = None
        self.raw_open = self.raw_high = self.raw_low = self.raw_prev_close = 0.0


def _excerpt(frame: str | bytes) -> bytes:
    raw = frame[:64]
    if isinstance(raw, bytes):
        return raw
    return raw.encode("utf-8", "backslashreplace")


class YahooDecoder:
    """
    Decoder for one streamer connection (implements :class:`mdgate.Decoder`).

    Example::

        dec = YahooDecoder()
        dec.track("RELIANCE.NS", "NSE:RELIANCE")
        ticks = dec.feed(frame_text, recv_ts=now_ms())
    """

    __slots__ = ("_msg", "_protobuf_error", "_states")

    def __init__(self) -> None:
        # protobuf is imported when a decoder is made, not when the plugin loads (`mdgate --help`)
        from google.protobuf.message import DecodeError as ProtobufDecodeError

        from mdgate_yahoo.pricing_pb2 import PricingData

        self._states: dict[str, _State] = {}
        self._msg = PricingData()
        self._protobuf_error: type[Exception] = ProtobufDecodeError

    def track(self, code: str, instrument: str) -> None:
        """Map a Yahoo symbol (``RELIANCE.NS``) to its instrument (``NSE:RELIANCE``)."""
        state = self._states.get(code)
        if state is None or state.instrument != instrument:
            self._states[code] = _State(instrument)

    def untrack(self, code: str) -> None:
        """Forget a Yahoo symbol; later frames for it raise ``unknown_symbol``."""
        self._states.pop(code, None)

    @property
    def tracked(self) -> dict[str, str]:
        """Tracked Yahoo symbols and their instruments (a copy)."""
        return {code: st.instrument for code, st in self._states.items()}

    def feed(self, frame: str | bytes, recv_ts: int) -> list[Tick]:
        """
        Decode one streamer frame received at ``recv_ts`` (epoch ms, UTC).

        Returns:
            One tick, or none when the message carries no price (its day
            statistics are still recorded).

        Raises:
            DecodeError: with ``kind`` ``bad_json`` (not JSON),
                ``bad_envelope`` (not ``{"type": "pricing", "message": str}``),
                ``bad_base64``, ``bad_protobuf`` (not a PricingData),
                ``bad_price`` (not a finite number) or ``unknown_symbol``
                (empty or untracked ``id``).
        """
        m = self._parse(frame)
        code = m.id
        st = self._states.get(code)
        if st is None:
            what = f"symbol {code!r} is not subscribed" if code else "message has no id"
            raise DecodeError(NAME, "unknown_symbol", what, excerpt=_excerpt(frame))
        price = m.price
        ts = m.time or recv_ts
        scale = _update_state(st, m, ts, price)
        if not price:
            return []
        if not isfinite(price):
            raise DecodeError(NAME, "bad_price", f"price {price!r} for {code!r}", excerpt=_excerpt(frame))
        size = m.last_size
        bid = m.bid
        ask = m.ask
        return [
            Tick(
                st.instrument,
                floor(price * scale + 0.5) / scale,
                ts,
                recv_ts,
                CODE,
                None if not size or size == m.day_volume or m.quote_type == CRYPTOCURRENCY else size,
                st.volume,
                floor(bid * scale + 0.5) / scale if bid and isfinite(bid) else None,
                floor(ask * scale + 0.5) / scale if ask and isfinite(ask) else None,
                m.bid_size or None,
                m.ask_size or None,
                st.open,
                st.high,
                st.low,
                st.prev_close,
                m.open_interest or None,
            )
        ]

    def _parse(self, frame: str | bytes) -> PricingData:
        # JSON envelope -> base64 -> PricingData (one message object reused per decoder).
        try:
            env = _envelope_decoder.decode(frame)
        except msgspec.ValidationError as exc:
            raise DecodeError(NAME, "bad_envelope", str(exc), excerpt=_excerpt(frame)) from None
        except (msgspec.DecodeError, UnicodeError) as exc:
            raise DecodeError(NAME, "bad_json", str(exc), excerpt=_excerpt(frame)) from None
        try:
            data = binascii.a2b_base64(env.message, strict_mode=True)
        except ValueError as exc:
            raise DecodeError(NAME, "bad_base64", str(exc), excerpt=_excerpt(frame)) from None
        m = self._msg
        try:
            m.ParseFromString(data)
        except self._protobuf_error as exc:
            raise DecodeError(NAME, "bad_protobuf", str(exc), excerpt=_excerpt(frame)) from None
        return m


def round_price(value: float, decimals: int) -> float:
    """Round ``value`` half up to ``decimals`` (the decoder inlines the same rule)."""
    scale = _SCALES[decimals]
    return floor(value * scale + 0.5) / scale


def _update_state(st: _State, m: PricingData, ts: int, price: float) -> float:
    """
    Record one message's day statistics in ``st``; return the price scale (``10 ** decimals``).

    Statistics older than :data:`STATS_MAX_GAP_MS` are dropped first; a new
    ``price_hint`` re-rounds them. A zero is "not sent", so the last known
    value stays; a value equal to the last raw one is not rounded again.
    """
    if ts > st.last_ts:
        if st.last_ts and ts - st.last_ts > STATS_MAX_GAP_MS:
            st.reset()
        st.last_ts = ts
    hint = m.price_hint
    if hint and hint != st.decimals and 0 < hint <= _MAX_DECIMALS:
        st.decimals = hint
        st.raw_open = st.raw_high = st.raw_low = st.raw_prev_close = 0.0
    d = st.decimals
    scale = _SCALES[d if d is not None else (2 if price >= 1.0 or price <= -1.0 else 4)]
    v = m.open_price
    if v != st.raw_open:
        st.raw_open = v
        if v and isfinite(v):  # a zero is "not sent"
            st.open = floor(v * scale + 0.5) / scale
    v = m.day_high
    if v != st.raw_high:
        st.raw_high = v
        if v and isfinite(v):  # a zero is "not sent"
            st.high = floor(v * scale + 0.5) / scale
    v = m.day_low
    if v != st.raw_low:
        st.raw_low = v
        if v and isfinite(v):  # a zero is "not sent"
            st.low = floor(v * scale + 0.5) / scale
    v = m.previous_close
    if v != st.raw_prev_close:
        st.raw_prev_close = v
        if v and isfinite(v):  # a zero is "not sent"
            st.prev_close = floor(v * scale + 0.5) / scale
    if m.day_volume:
        st.volume = m.day_volume
    return scale
