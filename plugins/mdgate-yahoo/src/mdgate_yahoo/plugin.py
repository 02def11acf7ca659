"""mdgate hook implementations for the Yahoo provider (``@hookimpl`` functions only)."""

from __future__ import annotations

from collections.abc import Sequence

from mdgate import Backfill, Endpoint, Frame, ProviderSpec, hookimpl, mask_url
from mdgate_yahoo.backfill import fetch_bars, yfinance_loader
from mdgate_yahoo.config import SETTINGS, YahooConfig, parse_config
from mdgate_yahoo.protocol import (
    CODE,
    NAME,
    YahooDecoder,
    encode_heartbeat,
    encode_subscribe,
    encode_unsubscribe,
)
from mdgate_yahoo.symbols import EXCHANGES, yahoo_symbol

MDGATE_PLUGIN_API = "1.0"  # the mdgate plugin API this plugin is built for (docs/plugin-api.md)

SPEC = ProviderSpec(
    name=NAME,
    code=CODE,
    display_name="Yahoo Finance",
    exchanges=EXCHANGES,
    # primary for the US exchanges; on NSE/BSE (.NS/.BO) only the backup
    backup_for=("NSE", "BSE"),
    settings=SETTINGS,
    max_per_message=100,
    # Yahoo keeps only the first 100 symbols of a connection (docs/protocols/yahoo.md#limits).
    max_per_connection=100,
    max_connections=50,
    heartbeat_interval=15.0,
    stall_timeout=30.0,
    parse_config=parse_config,
)


@hookimpl
def mdgate_providers() -> Sequence[ProviderSpec]:
    """Declare the ``yahoo`` provider (code ``YF``)."""
    return [SPEC]


@hookimpl
def mdgate_connect(provider: str, config: YahooConfig, connection: int) -> Endpoint | None:
    """Connect to the streamer URL (no handshake, no credentials)."""
    if provider != NAME:
        return None
    return Endpoint(url=config.url, display_url=mask_url(config.url))


@hookimpl
def mdgate_subscribe(provider: str, config: YahooConfig, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Encode ``{"subscribe": [...]}``."""
    if provider != NAME:
        return None
    return [encode_subscribe(codes)] if codes else []


@hookimpl
def mdgate_unsubscribe(
    provider: str, config: YahooConfig, codes: Sequence[str], remaining: Sequence[str]
) -> Sequence[Frame] | None:
    """Encode ``{"unsubscribe": [...]}`` for the dropped codes only."""
    if provider != NAME:
        return None
    return [encode_unsubscribe(codes)] if codes else []


@hookimpl
def mdgate_heartbeat(provider: str, config: YahooConfig, codes: Sequence[str]) -> Sequence[Frame] | None:
    """Re-send the whole subscribe set (as yfinance does every 15 s)."""
    if provider != NAME:
        return None
    return [encode_heartbeat(codes)] if codes else []


@hookimpl
def mdgate_normalize(provider: str, config: YahooConfig) -> YahooDecoder | None:
    """Return a fresh decoder for one connection."""
    if provider != NAME:
        return None
    return YahooDecoder()


@hookimpl
def mdgate_instrument_code(provider: str, config: YahooConfig, exchange: str, symbol: str) -> str | None:
    """Derive the Yahoo symbol (``NSE:RELIANCE`` -> ``RELIANCE.NS``)."""
    if provider != NAME:
        return None
    return yahoo_symbol(exchange, symbol)


@hookimpl
def mdgate_backfill(
    provider: str, config: YahooConfig, instrument: str, code: str, start_ms: int, end_ms: int
) -> Backfill | None:
    """Fetch one-minute bars through yfinance REST (worker thread), if enabled."""
    if provider != NAME or not config.backfill:
        return None
    return fetch_bars(
        instrument,
        code,
        start_ms,
        end_ms,
        prepost=config.backfill_prepost,
        request_timeout=config.backfill_timeout,
        loader=yfinance_loader(config.history_url),
    )
