"""
``[providers.yahoo]``: the Yahoo provider's settings.

Every key is optional::

    [providers.yahoo]
    url = "wss://streamer.finance.yahoo.com/?version=2"
    heartbeat_interval = 15      # seconds between re-subscribes (spec default 15)
    stall_timeout = 30           # seconds of silence before reconnecting (default 30)
    backfill = true              # allow one-minute backfill through yfinance REST
    backfill_prepost = false     # include pre/post-market minutes in backfill
    backfill_timeout = 30        # seconds allowed per yfinance request
    history_url = "http://127.0.0.1:8901"  # send yfinance's requests here (a local fake; tests)

The provider needs no credentials and reads no environment variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mdgate import ConfigError, mask_url

__all__ = ["DEFAULT_URL", "SETTINGS", "YahooConfig", "parse_config"]

#: Yahoo's streamer (the URL yfinance uses).
DEFAULT_URL: Final = "wss://streamer.finance.yahoo.com/?version=2"

#: Keys of ``[providers.yahoo]`` with a one-line description each.
SETTINGS: Final[dict[str, str]] = {
    "url": f"streamer WebSocket URL (default {DEFAULT_URL})",
    "heartbeat_interval": "seconds between re-subscribes of the whole set (default 15)",
    "stall_timeout": "seconds without a frame before reconnecting (default 30)",
    "backfill": "allow one-minute backfill through yfinance REST (default true)",
    "backfill_prepost": "include pre/post-market minutes in backfill (default false)",
    "backfill_timeout": "seconds allowed per yfinance history request (default 30)",
    "history_url": "send yfinance's Yahoo requests (chart, cookie, crumb) to this http(s) base URL "
    "instead (a local fake; default: Yahoo)",
}

_PREFIX: Final = "providers.yahoo"


@dataclass(frozen=True, slots=True)
class YahooConfig:
    """
    Validated ``[providers.yahoo]`` settings.

    Attributes:
        url: the streamer URL (``ws://`` or ``wss://``).
        heartbeat_interval: seconds between re-subscribes; ``None`` keeps the
            spec's default (15).
        stall_timeout: seconds of silence before a reconnect; ``None`` keeps
            the spec's default (30).
        backfill: whether ``mdgate_backfill`` serves one-minute bars.
        backfill_prepost: include pre/post-market minutes in backfill.
        backfill_timeout: seconds allowed per yfinance history request.
        history_url: base URL yfinance's requests to ``*.yahoo.com`` are sent to
            instead (path and query kept), or ``None`` for Yahoo itself.
    """

    url: str = DEFAULT_URL
    heartbeat_interval: float | None = None
    stall_timeout: float | None = None
    backfill: bool = True
    backfill_prepost: bool = False
    backfill_timeout: float = 30.0
    history_url: str | None = None

    def __repr__(self) -> str:
        # hooks receive this object and plugin tracing logs it: a URL may carry a credential
        return (
            f"YahooConfig(url={mask_url(self.url)!r}, heartbeat_interval={self.heartbeat_interval!r}, "
            f"stall_timeout={self.stall_timeout!r}, backfill={self.backfill!r}, "
            f"backfill_prepost={self.backfill_prepost!r}, backfill_timeout={self.backfill_timeout!r}, "
            f"history_url={mask_url(self.history_url) if self.history_url else None!r})"
        )


def _positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{_PREFIX}.{key}", f"expected a number of seconds, got {value!r}")
    if not value > 0:
        raise ConfigError(f"{_PREFIX}.{key}", f"must be greater than 0, got {value!r}")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{_PREFIX}.{key}", f"expected true or false, got {value!r}")
    return value


def parse_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> YahooConfig:
    """
    Validate ``[providers.yahoo]`` (``ProviderSpec.parse_config``).

    Args:
        table: the raw TOML table.
        environ: the environment (unused: Yahoo needs no credentials).

    Raises:
        ConfigError: naming the key (``providers.yahoo.<key>``) of an unknown
            key or a bad value.
    """
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in SETTINGS:
            raise ConfigError(
                f"{_PREFIX}.{key}",
                f"unknown key (known: {', '.join(sorted(SETTINGS))})",
            )
        if key == "url":
            if not isinstance(value, str) or not value.startswith(("ws://", "wss://")):
                shown = mask_url(value) if isinstance(value, str) else type(value).__name__
                raise ConfigError(f"{_PREFIX}.url", f"expected a ws:// or wss:// URL, got {shown!r}")
            kwargs[key] = value
        elif key == "history_url":
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                shown = mask_url(value) if isinstance(value, str) else type(value).__name__
                raise ConfigError(f"{_PREFIX}.history_url", f"expected an http(s):// URL, got {shown!r}")
            kwargs[key] = value.rstrip("/")
        elif key in ("backfill", "backfill_prepost"):
            kwargs[key] = _bool(key, value)
        else:
            kwargs[key] = _positive(key, value)
    return YahooConfig(**kwargs)
