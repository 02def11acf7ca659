"""mdgate hook implementations for the example provider (``@hookimpl`` functions only)."""

from __future__ import annotations

from collections.abc import Sequence

from mdgate import Backfill, Endpoint, Frame, ProviderSpec, hookimpl, mask_url
from mdgate_example.backfill import fetch_bars
from mdgate_example.config import SETTINGS, ExampleConfig, parse_config
from mdgate_example.protocol import (
    CODE,
    NAME,
    ExampleDecoder,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
)
from mdgate_example.symbols import EXCHANGES, example_symbol

MDGATE_PLUGIN_API = "1.0"  # the mdgate plugin API this plugin is built for (docs/plugin-api.md)

SPEC = ProviderSpec(
    name=NAME,
    code=CODE,
    display_name="Example",
    exchanges=EXCHANGES,
    settings=SETTINGS,
    max_per_message=2,
    max_per_connection=5,
    max_connections=2,
    heartbeat_interval=None,
    stall_timeout=30.0,
    parse_config=parse_config,
)


@hookimpl
def mdgate_providers() -> Sequence[ProviderSpec]:
    """Declare the ``example`` provider (code ``EX``)."""
    return [SPEC]


@hookimpl
def mdgate_connect(provider: str, config: ExampleConfig, connection: int) -> Endpoint | None:
    """Connect to the feed URL, with the token as a bearer header."""
    if provider != NAME:
        return None
    headers = {"Authorization": f"Bearer {config.token.reveal()}"} if config.token else {}
    return Endpoint(url=config.url, display_url=mask_url(config.url), headers=headers)


@hookimpl
def mdgate_subscribe(provider: str, config: ExampleConfig, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Encode one subscribe frame."""
    if provider != NAME:
        return None
    return [encode_subscribe(codes)]


@hookimpl
def mdgate_unsubscribe(
    provider: str, config: ExampleConfig, codes: Sequence[str], remaining: Sequence[str]
) -> Sequence[Frame] | None:
    """Encode one unsubscribe frame for the dropped codes."""
    if provider != NAME:
        return None
    return [encode_unsubscribe(codes)]


@hookimpl
def mdgate_heartbeat(provider: str, config: ExampleConfig, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Send a ping."""
    if provider != NAME:
        return None
    return [encode_ping()]


@hookimpl
def mdgate_normalize(provider: str, config: ExampleConfig) -> ExampleDecoder | None:
    """Return a fresh decoder for one connection."""
    if provider != NAME:
        return None
    return ExampleDecoder()


@hookimpl
def mdgate_instrument_code(provider: str, config: ExampleConfig, exchange: str, symbol: str) -> str | None:
    """Derive the feed's symbol (``EXAMPLE:ACME`` -> ``ACME``)."""
    if provider != NAME:
        return None
    return example_symbol(exchange, symbol)


@hookimpl
def mdgate_backfill(
    provider: str, config: ExampleConfig, instrument: str, code: str, start_ms: int, end_ms: int
) -> Backfill | None:
    """Fetch one-minute bars for a reconnect gap."""
    if provider != NAME:
        return None
    return fetch_bars(instrument, start_ms, end_ms)
