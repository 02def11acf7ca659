"""Sans-I/O protocol of the example provider: encoders and a decoder."""

from __future__ import annotations

import json
from collections.abc import Sequence

from mdgate import AuthenticationError, DecodeError, Frame, Tick


def encode_subscribe(symbols: Sequence[str]) -> str:
    """Subscribe frame."""
    return json.dumps({"action": "subscribe", "symbols": list(symbols)})


def encode_unsubscribe(symbols: Sequence[str]) -> str:
    """Unsubscribe frame."""
    return json.dumps({"action": "unsubscribe", "symbols": list(symbols)})


def encode_ping() -> str:
    """Heartbeat frame."""
    return '{"action": "ping"}'


class ExampleDecoder:
    """Decodes ``{"s","p","t","q","v"}`` objects (or lists of them) into ticks."""

    def __init__(self, provider: str = "example", code: str = "EX") -> None:
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
        """Decode one frame."""
        try:
            msg = json.loads(frame)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError(self.provider, "bad_json", "frame is not JSON", excerpt=frame) from None
        if isinstance(msg, dict) and "error" in msg:
            if msg["error"] == "auth":
                raise AuthenticationError(self.provider, str(msg.get("message", "refused")),
                                          hint="check [providers.example] token")
            raise DecodeError(self.provider, "server_error", str(msg.get("message")))
        items = msg if isinstance(msg, list) else [msg]
        out: list[Tick] = []
        for item in items:
            if not isinstance(item, dict) or "s" not in item:
                raise DecodeError(self.provider, "bad_message", "expected objects with 's'", ticks=out)
            instrument = self.instruments.get(item["s"])
            if instrument is None:
                raise DecodeError(self.provider, "unknown_symbol", str(item["s"]), ticks=out)
            try:
                out.append(Tick(
                    instrument, round(float(item["p"]), 4), int(item.get("t", recv_ts)), recv_ts,
                    self.code, size=item.get("q"), volume=item.get("v"),
                ))
            except (KeyError, TypeError, ValueError):
                raise DecodeError(self.provider, "bad_message", "bad price or time", ticks=out) from None
        return out
