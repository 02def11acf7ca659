"""mdgate hook implementations for the Yahoo provider (``@hookimpl`` functions only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mdgate import Endpoint, ProviderSpec, hookimpl
from mdgate._config import mask_url
from mdgate._provider import Backfill, Decoder, Frame
from mdgate_yahoo import backfill, config, protocol, symbols

_NAME = protocol.PROVIDER


@hookimpl
def mdgate_providers() -> Sequence[ProviderSpec]:
    """Declare the ``yahoo`` provider (code ``YF``)."""
    return [
        ProviderSpec(
            name=_NAME,
            code=protocol.PROVIDER_CODE,
            display_name="Yahoo Finance",
            exchanges=symbols.EXCHANGES,
            # primary for the US exchanges; on NSE/BSE (.NS/.BO) only the backup
            backup_for=("NSE", "BSE"),
            settings=config.SETTINGS,
            max_per_message=100,
            # Yahoo keeps only the first 100 symbols of a connection
            # (docs/protocols/yahoo.md#limits).
            max_per_connection=100,
            max_connections=50,
            heartbeat_interval=15.0,
            stall_timeout=30.0,
            parse_config=config.parse_config,
        )
    ]


@hookimpl
def mdgate_connect(provider: str, config: Any, connection: int) -> Endpoint | None:
    """Connect to the streamer URL (no handshake, no credentials)."""
    if provider != _NAME:
        return None
    return Endpoint(url=config.url, display_url=mask_url(config.url))


@hookimpl
def mdgate_subscribe(provider: str, config: Any, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Encode ``{"subscribe": [...]}``."""
    if provider != _NAME:
        return None
    return [protocol.encode_subscribe(codes)] if codes else []


@hookimpl
def mdgate_unsubscribe(
    provider: str, config: Any, codes: Sequence[str], remaining: Sequence[str]
) -> Sequence[Frame] | None:
    """Encode ``{"unsubscribe": [...]}`` for the dropped codes only."""
    if provider != _NAME:
        return None
    return [protocol.encode_unsubscribe(codes)] if codes else []


@hookimpl
def mdgate_heartbeat(provider: str, config: Any, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Re-send the whole subscribe set (as yfinance does every 15 s)."""
    if provider != _NAME:
        return None
    return [protocol.encode_heartbeat(codes)] if codes else []


@hookimpl
def mdgate_normalize(provider: str, config: Any) -> Decoder | None:
    """Return a fresh :class:`~mdgate_yahoo.protocol.YahooDecoder`."""
    if provider != _NAME:
        return None
    return protocol.YahooDecoder()


@hookimpl
def mdgate_instrument_code(provider: str, config: Any, exchange: str, symbol: str) -> str | None:
    """Derive the Yahoo symbol (``NSE:RELIANCE`` -> ``RELIANCE.NS``)."""
    if provider != _NAME:
        return None
    return symbols.yahoo_symbol(exchange, symbol)


@hookimpl
def mdgate_backfill(
    provider: str, config: Any, instrument: str, code: str, start_ms: int, end_ms: int
) -> Backfill | None:
    """Fetch 1-minute bars through yfinance REST (worker thread), if enabled."""
    if provider != _NAME or not config.backfill:
        return None
    return backfill.fetch_bars(
        instrument,
        code,
        start_ms,
        end_ms,
        prepost=config.backfill_prepost,
        request_timeout=config.backfill_timeout,
    )
