"""mdgate hook implementations for the Dhan provider (``@hookimpl`` functions only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import click

from mdgate import Backfill, Endpoint, Frame, ProviderSpec, SubscriptionRejected, hookimpl
from mdgate_dhan.config import SETTINGS, DhanConfig, parse_config
from mdgate_dhan.protocol import (
    CODE,
    MAX_PER_MESSAGE,
    NAME,
    DhanDecoder,
    encode_subscribe,
    encode_unsubscribe,
)
from mdgate_dhan.symbols import EXCHANGES, KNOWN_INSTRUMENTS

MDGATE_PLUGIN_API = "1.0"  # the mdgate plugin API this plugin is built for (docs/plugin-api.md)

SPEC = ProviderSpec(
    name=NAME,
    code=CODE,
    display_name="Dhan",
    exchanges=EXCHANGES,  # primary on both
    settings=SETTINGS,
    secrets=("DHAN_CLIENT_ID", "DHAN_ACCESS_TOKEN", "DHAN_ACCESS_TOKEN_FILE"),
    max_per_message=MAX_PER_MESSAGE,
    max_per_connection=5000,
    max_connections=5,  # Dhan's limits: docs/protocols/dhan.md#limits
    # The server pings every 10 s; websockets answers (docs/protocols/dhan.md#keepalive).
    heartbeat_interval=None,
    stall_timeout=30.0,
    parse_config=parse_config,
    # Codes come only from KNOWN_INSTRUMENTS, [instruments] and the database:
    # NSE/BSE symbols Dhan does not list are refused, not left to Yahoo's suffix rule.
    instrument_table=True,
)


@hookimpl
def mdgate_providers() -> Sequence[ProviderSpec]:
    """Declare the ``dhan`` provider (code ``DHAN``)."""
    return [SPEC]


@hookimpl
def mdgate_connect(provider: str, config: DhanConfig, connection: int) -> Endpoint | None:
    """Return the feed URL with version=2, token, clientId and authType=2."""
    if provider != NAME:
        return None
    query = {
        "version": "2",
        "token": config.access_token.reveal(),
        "clientId": config.client_id.reveal(),
        "authType": "2",
    }
    masked = {**query, "token": "***", "clientId": "***"}
    return Endpoint(
        url=f"{config.url}?{urlencode(query)}",
        display_url=f"{config.url}?{urlencode(masked, safe='*')}",
    )


def _frames(
    encode: Callable[[Sequence[str], str], list[str]], codes: Sequence[str], mode: str
) -> list[Frame]:
    try:
        return list(encode(codes, mode))
    except ValueError as exc:
        raise SubscriptionRejected(NAME, str(exc)) from None


@hookimpl
def mdgate_subscribe(provider: str, config: DhanConfig, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Encode subscribe requests in the configured mode (100 instruments each)."""
    if provider != NAME:
        return None
    return _frames(encode_subscribe, codes, config.mode)


@hookimpl
def mdgate_unsubscribe(
    provider: str, config: DhanConfig, codes: Sequence[str], remaining: Sequence[str]
) -> Sequence[Frame] | None:
    """Encode unsubscribe requests in the configured mode."""
    if provider != NAME:
        return None
    return _frames(encode_unsubscribe, codes, config.mode)


@hookimpl
def mdgate_normalize(provider: str, config: DhanConfig) -> DhanDecoder | None:
    """Return a fresh decoder for one connection."""
    if provider != NAME:
        return None
    return DhanDecoder(config.ltt_offset_seconds)


@hookimpl
def mdgate_instrument_code(provider: str, config: DhanConfig, exchange: str, symbol: str) -> str | None:
    """Answer from the explicit KNOWN_INSTRUMENTS table only (no derivation)."""
    if provider != NAME:
        return None
    return KNOWN_INSTRUMENTS.get(f"{exchange}:{symbol}")


@hookimpl
def mdgate_backfill(
    provider: str, config: DhanConfig, instrument: str, code: str, start_ms: int, end_ms: int
) -> Backfill | None:
    """Fetch one-minute bars from /charts/intraday (equities and indices)."""
    if provider != NAME:
        return None
    from mdgate_dhan import backfill  # httpx only when REST is used, not at start-up

    try:
        if backfill.instrument_type(code) is None:
            return None
    except ValueError:
        return None
    return backfill.fetch_intraday_bars(config, instrument, code, start_ms, end_ms)


@hookimpl
def mdgate_add_commands(cli: click.Group) -> None:
    """Add ``mdgate dhan import-instruments``."""
    from mdgate_dhan import cli as commands

    commands.add_commands(cli)
