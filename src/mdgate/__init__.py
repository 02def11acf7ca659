"""
mdgate: a market-data gateway.

Many providers in (as plugins), one normalized tick stream out, to Redis and
to WebSocket clients. The public API for plugin authors is re-exported here;
everything in ``mdgate._*`` modules is private.
"""

from __future__ import annotations

from mdgate._errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    MdgateError,
    NoRouteError,
    ProviderConnectionError,
    ProviderDisabled,
    ProviderError,
    RateLimitedError,
    SubscriptionRejected,
)
from mdgate._model import Bar, Tick, now_ms, parse_instrument
from mdgate._provider import Connector, Decoder, Endpoint, Frame, ProviderSpec, Transport
from mdgate.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Bar",
    "ConfigError",
    "Connector",
    "DecodeError",
    "Decoder",
    "Endpoint",
    "Frame",
    "MdgateError",
    "NoRouteError",
    "ProviderConnectionError",
    "ProviderDisabled",
    "ProviderError",
    "ProviderSpec",
    "RateLimitedError",
    "SubscriptionRejected",
    "Tick",
    "Transport",
    "__version__",
    "hookimpl",
    "now_ms",
    "parse_instrument",
]
