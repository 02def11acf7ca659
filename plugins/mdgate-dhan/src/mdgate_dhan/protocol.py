"""
Dhan Live Market Feed v2, sans-I/O: request encoders, packet layouts, decoder.

Requests are JSON text frames (``docs/protocols/dhan.md#requests``); responses
are binary frames holding one or more little-endian packets, each starting
with an 8-byte header (``docs/protocols/dhan.md#packet-header``). This module
holds the requests and is the package's protocol surface; the rest lives in:

* :mod:`mdgate_dhan.packets`: response codes, packet layouts and sizes,
  segments, disconnect reasons and the packet encoders (pure);
* :mod:`mdgate_dhan.decoder`: :class:`DhanDecoder`, frames -> ticks.

Every public name of both is re-exported here. None of these modules may
import anyio, websockets, redis, structlog or httpx (enforced by a test):
they are pure and fuzzed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

from mdgate_dhan.decoder import DhanDecoder as DhanDecoder
from mdgate_dhan.packets import (
    CODE as CODE,
    DEPTH_LEVEL as DEPTH_LEVEL,
    DISCONNECT as DISCONNECT,
    DISCONNECT_BODY as DISCONNECT_BODY,
    DISCONNECT_REASONS as DISCONNECT_REASONS,
    FULL as FULL,
    FULL_BODY as FULL_BODY,
    HEADER as HEADER,
    MARKET_STATUS as MARKET_STATUS,
    NAME as NAME,
    OI as OI,
    OI_BODY as OI_BODY,
    PACKET_SIZES as PACKET_SIZES,
    PREV_CLOSE as PREV_CLOSE,
    PREV_CLOSE_BODY as PREV_CLOSE_BODY,
    QUOTE as QUOTE,
    QUOTE_BODY as QUOTE_BODY,
    SEGMENT_NAMES as SEGMENT_NAMES,
    SEGMENTS as SEGMENTS,
    TICKER as TICKER,
    TICKER_BODY as TICKER_BODY,
    DepthLevel as DepthLevel,
    disconnect_error as disconnect_error,
    encode_disconnect_packet as encode_disconnect_packet,
    encode_full as encode_full,
    encode_header as encode_header,
    encode_market_status as encode_market_status,
    encode_oi as encode_oi,
    encode_prev_close as encode_prev_close,
    encode_quote as encode_quote,
    encode_ticker as encode_ticker,
    parse_code as parse_code,
    price_decimals as price_decimals,
)

__all__ = [
    "CODE",
    "DISCONNECT_REASONS",
    "MAX_PER_MESSAGE",
    "MODE_CODES",
    "NAME",
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

#: Instruments per subscribe/unsubscribe JSON message (Dhan's limit).
MAX_PER_MESSAGE: Final = 100

#: Subscription mode -> subscribe RequestCode (unsubscribe is one more).
#: See ``docs/protocols/dhan.md#requests``.
MODE_CODES: Final[Mapping[str, int]] = {"ticker": 15, "quote": 17, "full": 21}


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
