"""
mdgate: a market-data gateway.

Many providers in (as plugins), one normalized tick stream out, to Redis and
to WebSocket clients.

The public API is this package's namespace (everything in ``__all__``), the
hook reference :mod:`mdgate.hookspecs` and the test helpers
:mod:`mdgate.testing`: everything a provider, store or route-source plugin
needs. Every module with a ``_`` component in its path is private and may
change in any release; ``mdgate.plugins`` holds the built-in plugins (entry
point targets, not an API). ``tests/unit/test_public_surface.py`` guards this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mdgate._config import Secret, Settings
from mdgate._errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    InstrumentError,
    MdgateError,
    NoRouteError,
    ProviderConnectionError,
    ProviderDisabled,
    ProviderError,
    RateLimitedError,
    StoreUnavailable,
    SubscriptionRejected,
)
from mdgate._latest import LatestTicks
from mdgate._model import Bar, Tick, now_ms, parse_instrument
from mdgate._plugin_api import PLUGIN_API
from mdgate._provider import Backfill, Connector, Decoder, Endpoint, Frame, ProviderSpec, Transport
from mdgate._redact import mask_url
from mdgate._routing.table import ExchangeRoute, InstrumentMapping, RouteSource, RouteTable
from mdgate.hookspecs import hookimpl
from mdgate.plugins.stores.protocol import Store

__version__ = "0.1.0"

__all__ = [
    "PLUGIN_API",
    "AuthenticationError",
    "Backfill",
    "Bar",
    "CommandContext",
    "ConfigError",
    "Connector",
    "DecodeError",
    "Decoder",
    "Endpoint",
    "ExchangeRoute",
    "Frame",
    "InstrumentError",
    "InstrumentMapping",
    "LatestTicks",
    "MdgateError",
    "NoRouteError",
    "ProviderConnectionError",
    "ProviderDisabled",
    "ProviderError",
    "ProviderSpec",
    "RateLimitedError",
    "RouteSource",
    "RouteTable",
    "Secret",
    "Settings",
    "Store",
    "StoreUnavailable",
    "SubscriptionRejected",
    "Tick",
    "Transport",
    "__version__",
    "hookimpl",
    "mask_url",
    "now_ms",
    "parse_instrument",
    "pass_context",
]

if TYPE_CHECKING:
    from mdgate._cli.context import CommandContext, pass_context

#: Names loaded on first use: they bring click, which ``import mdgate`` (and the client) need not.
_LAZY = frozenset({"CommandContext", "pass_context"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mdgate._cli.context import CommandContext, pass_context

        return {"CommandContext": CommandContext, "pass_context": pass_context}[name]
    raise AttributeError(f"module 'mdgate' has no attribute {name!r}")
