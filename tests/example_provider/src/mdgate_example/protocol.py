"""
The example provider's wire protocol, sans I/O: request encoders and the decoder.

Requests are JSON text frames (``{"action": "subscribe", "symbols": [...]}``,
``unsubscribe``, ``ping``); the feed sends ``{"s","p","t","q","v"}`` objects
(or lists of them) and ``{"error": "auth", "message": ...}`` when it refuses
the token. This module imports no I/O library: it is tested with byte
fixtures and can be fuzzed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from math import floor
from typing import Final

from mdgate import AuthenticationError, DecodeError, Frame, Tick

__all__ = [
    "CODE",
    "DECIMALS",
    "NAME",
    "ExampleDecoder",
    "encode_ping",
    "encode_subscribe",
    "encode_unsubscribe",
    "round_price",
]

#: Provider name (as in ``[providers.example]``) and code (stored with every tick).
NAME: Final = "example"
CODE: Final = "EX"

#: Decimals every price is rounded to.
DECIMALS: Final = 4
_SCALE: Final = 10.0**DECIMALS


def round_price(value: float, decimals: int = DECIMALS) -> float:
    """Round ``value`` half up to ``decimals`` (the rule every mdgate provider follows)."""
    scale = 10.0**decimals
    return floor(value * scale + 0.5) / scale


def encode_subscribe(symbols: Sequence[str]) -> str:
    """Encode a subscribe frame."""
    return json.dumps({"action": "subscribe", "symbols": list(symbols)})


def encode_unsubscribe(symbols: Sequence[str]) -> str:
    """Encode an unsubscribe frame."""
    return json.dumps({"action": "unsubscribe", "symbols": list(symbols)})


def encode_ping() -> str:
    """Encode the heartbeat frame."""
    return '{"action": "ping"}'


class ExampleDecoder:
    """
    Decode one connection's frames into ticks (implements :class:`mdgate.Decoder`).

    Args:
        provider: provider name, for errors (another provider may reuse the decoder).
        code: provider code stored with every tick.
    """

    def __init__(self, provider: str = NAME, code: str = CODE) -> None:
        self.provider = provider
        self.code = code
        self.instruments: dict[str, str] = {}

    def track(self, code: str, instrument: str) -> None:
        """Map a symbol to its instrument."""
        self.instruments[code] = instrument

    def untrack(self, code: str) -> None:
        """Forget a symbol."""
        self.instruments.pop(code, None)

    def feed(self, frame: Frame, recv_ts: int) -> list[Tick]:
        """
        Decode one frame received at ``recv_ts`` (epoch ms, UTC).

        Raises:
            AuthenticationError: the feed refused the token.
            DecodeError: ``bad_json``, ``server_error``, ``bad_message`` or
                ``unknown_symbol``, with the ticks decoded before the fault.
        """
        try:
            msg = json.loads(frame)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError(self.provider, "bad_json", "frame is not JSON", excerpt=frame) from None
        if isinstance(msg, dict) and "error" in msg:
            if msg["error"] == "auth":
                raise AuthenticationError(self.provider, str(msg.get("message", "refused")),
                                          hint="check [providers.example] token")
            raise DecodeError(self.provider, "server_error", str(msg.get("message")))
        out: list[Tick] = []
        for item in msg if isinstance(msg, list) else [msg]:
            out.append(self._tick(item, recv_ts, out))
        return out

    def _tick(self, item: object, recv_ts: int, done: list[Tick]) -> Tick:
        # One {"s","p","t","q","v"} object; `done` are the frame's ticks so far (kept on a fault).
        if not isinstance(item, dict) or "s" not in item:
            raise DecodeError(self.provider, "bad_message", "expected objects with 's'", ticks=done)
        instrument = self.instruments.get(item["s"])
        if instrument is None:
            raise DecodeError(self.provider, "unknown_symbol", str(item["s"]), ticks=done)
        try:
            return Tick(
                instrument, floor(float(item["p"]) * _SCALE + 0.5) / _SCALE, int(item.get("t", recv_ts)),
                recv_ts, self.code, size=item.get("q"), volume=item.get("v"),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise DecodeError(self.provider, "bad_message", "bad price or time", ticks=done) from None
