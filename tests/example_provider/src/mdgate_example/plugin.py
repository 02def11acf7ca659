"""Hook implementations of the example provider."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mdgate import ConfigError, Endpoint, ProviderSpec, hookimpl
from mdgate_example.protocol import ExampleDecoder, encode_ping, encode_subscribe, encode_unsubscribe

NAME = "example"


@dataclass(frozen=True)
class ExampleConfig:
    url: str = "ws://127.0.0.1:9999"
    token: str | None = None
    stall_timeout: float | None = None
    heartbeat_interval: float | None = None


def parse_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> ExampleConfig:
    known = {"url", "token", "stall_timeout", "heartbeat_interval"}
    for key in table:
        if key not in known:
            raise ConfigError(f"providers.{NAME}.{key}", "unknown key")
    if "url" in table and not str(table["url"]).startswith(("ws://", "wss://")):
        raise ConfigError(f"providers.{NAME}.url", "expected a ws:// or wss:// URL")
    return ExampleConfig(**table)


SPEC = ProviderSpec(
    name=NAME, code="EX", display_name="Example", exchanges=("EXAMPLE",),
    settings={"url": "feed URL", "token": "bearer token sent in the handshake",
              "stall_timeout": "seconds of silence before reconnecting",
              "heartbeat_interval": "seconds between pings"},
    max_per_message=2, max_per_connection=5, max_connections=2,
    heartbeat_interval=None, stall_timeout=30.0, parse_config=parse_config,
)


@hookimpl
def mdgate_providers() -> Sequence[ProviderSpec]:
    return [SPEC]


@hookimpl
def mdgate_connect(provider: str, config: ExampleConfig, connection: int) -> Endpoint | None:
    if provider != NAME:
        return None
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    return Endpoint(url=config.url, display_url=config.url, headers=headers)


@hookimpl
def mdgate_subscribe(provider: str, config: ExampleConfig, codes: Sequence[str]) -> list[str] | None:
    return [encode_subscribe(codes)] if provider == NAME else None


@hookimpl
def mdgate_unsubscribe(
    provider: str, config: ExampleConfig, codes: Sequence[str], remaining: Sequence[str]
) -> list[str] | None:
    return [encode_unsubscribe(codes)] if provider == NAME else None


@hookimpl
def mdgate_heartbeat(provider: str, config: ExampleConfig, codes: Sequence[str]) -> list[str] | None:
    return [encode_ping()] if provider == NAME else None


@hookimpl
def mdgate_normalize(provider: str, config: ExampleConfig) -> ExampleDecoder | None:
    return ExampleDecoder() if provider == NAME else None


@hookimpl
def mdgate_instrument_code(provider: str, config: ExampleConfig, exchange: str, symbol: str) -> str | None:
    if provider == NAME and exchange == "EXAMPLE":
        return symbol
    return None


@hookimpl
def mdgate_backfill(
    provider: str, config: ExampleConfig, instrument: str, code: str, start_ms: int, end_ms: int
) -> Any:
    """The example feed keeps no history: one flat bar per minute at 0.0 (to show the hook's shape)."""
    if provider != NAME:
        return None
    from mdgate import Bar

    async def fetch() -> list[Bar]:
        first = start_ms - start_ms % 60_000 + 60_000
        return [Bar(instrument, t, 0.0, 0.0, 0.0, 0.0, 0, 0) for t in range(first, end_ms, 60_000)][:3]

    return fetch()
