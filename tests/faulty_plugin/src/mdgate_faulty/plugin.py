"""
Deliberately faulty plugins: each object below is one entry point with one fault.

Every provider speaks the example provider's JSON protocol (subscribe
``{"action": "subscribe", "symbols": [...]}``, ticks ``{"s", "p", "t"}``) on
an exchange of its own, so one fake feed serves them all. Everything that is
not the plugin's fault works, so that the fault is the only thing tested.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from mdgate import Endpoint, ProviderSpec, Tick, hookimpl

#: The token the faulty providers pretend to use; a fault message carries it
#: in a URL, and it must never reach ``/status`` or the log.
SECRET = "faulty-secret-token-1234"


class _Decoder:
    """The example protocol, decoded correctly."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.instruments: dict[str, str] = {}

    def track(self, code: str, instrument: str) -> None:
        self.instruments[code] = instrument

    def untrack(self, code: str) -> None:
        self.instruments.pop(code, None)

    def ticks(self, frame: str | bytes, recv_ts: int) -> list[Tick]:
        msg = json.loads(frame)
        items = msg if isinstance(msg, list) else [msg]
        return [
            Tick(self.instruments[m["s"]], float(m["p"]), int(m.get("t", recv_ts)), recv_ts, self.code)
            for m in items if isinstance(m, dict) and m.get("s") in self.instruments
        ]

    def feed(self, frame: str | bytes, recv_ts: int) -> list[Tick]:
        return self.ticks(frame, recv_ts)


class _JunkDecoder(_Decoder):
    """Returns a good tick followed by items that are not ticks."""

    def feed(self, frame: str | bytes, recv_ts: int) -> list[Any]:
        good = self.ticks(frame, recv_ts)
        return [*good, "junk", None, {"instrument": "F_DECODER_JUNK:X"}] if good else []


class _RaisingDecoder(_Decoder):
    """Raises on every frame."""

    def feed(self, frame: str | bytes, recv_ts: int) -> list[Tick]:
        raise RuntimeError("decoder bug: index out of range")


class Provider:
    """One provider, ``name``, serving exchange ``exchange``, with fault ``fault``."""

    def __init__(self, name: str, exchange: str, fault: str) -> None:
        self.name = name
        self.exchange = exchange
        self.fault = fault
        self.code = "F" + exchange.split("_", 1)[1].replace("_", "")[:7]

    def parse_config(self, table: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
        if self.fault == "config_raises":
            raise ZeroDivisionError("integer division or modulo by zero")  # a plugin bug
        return {"url": table.get("url", "ws://127.0.0.1:9")}

    @hookimpl
    def mdgate_providers(self) -> Sequence[ProviderSpec]:
        return [ProviderSpec(self.name, self.code, (self.exchange,),
                             max_per_message=10, stall_timeout=30.0, parse_config=self.parse_config)]

    @hookimpl
    def mdgate_connect(self, provider: str, config: Any, connection: int) -> Any:
        if provider != self.name:
            return None
        if self.fault == "connect_raises":
            raise ConnectionRefusedError(f"cannot open wss://user:{SECRET}@feed.example/?token={SECRET}")
        if self.fault == "connect_junk":
            return "wss://feed.example (a string, not an Endpoint)"
        return Endpoint(url=config["url"], display_url=config["url"])

    @hookimpl
    def mdgate_subscribe(self, provider: str, config: Any, codes: Sequence[str]) -> list[str] | None:
        if provider != self.name:
            return None
        if self.fault == "subscribe_raises":
            raise KeyError("subscribe bug")
        return [json.dumps({"action": "subscribe", "symbols": list(codes)})]

    @hookimpl
    def mdgate_unsubscribe(
        self, provider: str, config: Any, codes: Sequence[str], remaining: Sequence[str]
    ) -> list[str] | None:
        if provider != self.name:
            return None
        return [json.dumps({"action": "unsubscribe", "symbols": list(codes)})]

    @hookimpl
    def mdgate_normalize(self, provider: str, config: Any) -> Any:
        if provider != self.name:
            return None
        if self.fault == "normalize_none":
            return None
        if self.fault == "decoder_junk":
            return _JunkDecoder(self.code)
        if self.fault == "decoder_raises":
            return _RaisingDecoder(self.code)
        return _Decoder(self.code)

    @hookimpl
    def mdgate_instrument_code(self, provider: str, config: Any, exchange: str, symbol: str) -> Any:
        if provider != self.name or exchange != self.exchange:
            return None
        if self.fault == "code_raises":
            if symbol == "JUNK":
                return 42  # not a string
            raise LookupError(f"instrument table for {symbol} is missing")
        return symbol


class ProvidersJunk:
    """``mdgate_providers`` returns things that are not provider specs."""

    @hookimpl
    def mdgate_providers(self) -> Any:
        return ["not a spec", 42]


class StoreRaises:
    """``mdgate_store`` raises (a store plugin with a bug)."""

    @hookimpl
    def mdgate_store(self, settings: Any) -> Any:
        raise RuntimeError(f"store bug connecting to redis://:{SECRET}@127.0.0.1:1/0")


class RoutesJunk:
    """``mdgate_route_source`` returns something that is not a route source."""

    @hookimpl
    def mdgate_route_source(self, settings: Any) -> Any:
        return {"routes": "not a RouteSource"}


class CommandsExit:
    """``mdgate_add_commands`` ends the interpreter."""

    @hookimpl
    def mdgate_add_commands(self, cli: Any) -> None:
        sys.exit("faulty_commands: exiting while adding commands")


providers_junk = ProvidersJunk()
store_raises = StoreRaises()
routes_raises = RoutesJunk()
commands_exit = CommandsExit()
code_raises = Provider("faulty_code", "F_CODE", "code_raises")
config_raises = Provider("faulty_config", "F_CONFIG", "config_raises")
connect_raises = Provider("faulty_connect", "F_CONNECT", "connect_raises")
connect_junk = Provider("faulty_connect_junk", "F_CONNECT_JUNK", "connect_junk")
normalize_none = Provider("faulty_normalize", "F_NORMALIZE", "normalize_none")
subscribe_raises = Provider("faulty_subscribe", "F_SUBSCRIBE", "subscribe_raises")
decoder_junk = Provider("faulty_decoder_junk", "F_DECODER_JUNK", "decoder_junk")
decoder_raises = Provider("faulty_decoder_raise", "F_DECODER_RAISE", "decoder_raises")
