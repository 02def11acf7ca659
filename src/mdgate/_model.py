"""
The normalized data model: instruments, ticks and bars.

A :class:`Tick` is what clients and Redis see. It is a ``msgspec.Struct`` so
that a whole batch encodes to JSON in one C call (``encode_ticks``), and
optional fields left at ``None`` are omitted from the wire, as the public
contract requires ("absent when the provider does not supply the value").

Instrument names are ``EXCHANGE:SYMBOL`` in upper case (``NSE:RELIANCE``,
``NASDAQ:AAPL``). :func:`parse_instrument` is the only place that validates
them.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import msgspec

from mdgate._errors import InstrumentError

__all__ = [
    "TICK_FIELDS",
    "Bar",
    "Tick",
    "decode_tick",
    "encode",
    "encode_ticks",
    "now_ms",
    "parse_instrument",
]

# EXCHANGE: letters/digits/underscore. SYMBOL: what exchanges really use
# (M&M, BRK-B, BRK.B, ^NSEI, BAJAJ-AUTO, 360ONE) but no blanks or separators.
_INSTRUMENT_RE: Final = re.compile(r"^([A-Z][A-Z0-9_]{0,15}):([A-Z0-9^][A-Z0-9.&\-_^=]{0,47})$")


def parse_instrument(text: object) -> tuple[str, str, str]:
    """
    Validate an instrument name and return ``(name, exchange, symbol)``.

    Names are accepted in any case and answered in upper case.

    Raises:
        InstrumentError: when ``text`` is not a string of the form
            ``EXCHANGE:SYMBOL``.
    """
    if not isinstance(text, str):
        raise InstrumentError(repr(text), "instrument must be a string")
    name = text.strip().upper()
    m = _INSTRUMENT_RE.match(name)
    if m is None:
        raise InstrumentError(text, "expected EXCHANGE:SYMBOL, e.g. NSE:RELIANCE")
    return name, m.group(1), m.group(2)


def now_ms() -> int:
    """Return the current UTC time as integer epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Tick(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """
    One normalized market-data update.

    ``instrument``, ``price``, ``ts``, ``recv_ts`` and ``provider`` are always
    present, and ``seq`` once the gateway numbered the tick; every other field
    is ``None`` (and absent on the wire) when the provider did not supply it.
    Times are integer epoch milliseconds, UTC. Prices are already rounded to
    the instrument's precision by the decoder.
    """

    instrument: str
    price: float
    ts: int
    recv_ts: int
    provider: str
    size: int | None = None
    volume: int | None = None
    bid: float | None = None
    ask: float | None = None
    bid_size: int | None = None
    ask_size: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    prev_close: float | None = None
    oi: int | None = None
    #: The gateway's per-instrument sequence number: one more than the instrument's
    #: previous tick (a skipped number is a missed tick). Set by the gateway, not by
    #: decoders (see docs/client-protocol.md#sequence-numbers).
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the tick as a plain dict holding only the present fields."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


#: Every tick field, in wire order.
TICK_FIELDS: Final[tuple[str, ...]] = Tick.__struct_fields__


class Bar(msgspec.Struct, frozen=True, gc=False):
    """
    An OHLCV bar.

    ``start`` is the epoch-ms start of the interval (by tick ``ts``);
    ``volume`` is the quantity traded in the interval (the change in
    cumulative day volume where the provider gives it, else the sum of trade
    sizes) and ``count`` the number of ticks.
    """

    instrument: str
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    count: int


_encoder: Final = msgspec.json.Encoder()
_tick_decoder: Final = msgspec.json.Decoder(Tick)

#: Encode any msgspec-compatible object to JSON bytes.
encode: Final = _encoder.encode


def encode_ticks(ticks: list[Tick]) -> bytes:
    """Encode a list of ticks to a JSON array in one call."""
    return _encoder.encode(ticks)


def decode_tick(data: bytes | str) -> Tick:
    """Decode one tick from its JSON form (as clients and Redis see it)."""
    return _tick_decoder.decode(data)
