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

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mdgate._cli.context import CommandContext, pass_context
    from mdgate._config import Settings
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
    from mdgate._redact import Secret, mask_url
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

#: Where each public name lives. The names are imported on first use (PEP 562), so that
#: ``import mdgate`` (and the command line, whose modules are under it) stays light: a plugin or
#: a client pays only for what it touches.
_HOME: Final[dict[str, str]] = {
    **dict.fromkeys(("CommandContext", "pass_context"), "mdgate._cli.context"),
    "Secret": "mdgate._redact",
    "Settings": "mdgate._config",
    **dict.fromkeys((
        "AuthenticationError", "ConfigError", "DecodeError", "InstrumentError", "MdgateError",
        "NoRouteError", "ProviderConnectionError", "ProviderDisabled", "ProviderError",
        "RateLimitedError", "StoreUnavailable", "SubscriptionRejected"), "mdgate._errors"),
    "LatestTicks": "mdgate._latest",
    **dict.fromkeys(("Bar", "Tick", "now_ms", "parse_instrument"), "mdgate._model"),
    "PLUGIN_API": "mdgate._plugin_api",
    **dict.fromkeys(("Backfill", "Connector", "Decoder", "Endpoint", "Frame", "ProviderSpec", "Transport"),
                    "mdgate._provider"),
    "mask_url": "mdgate._redact",
    **dict.fromkeys(("ExchangeRoute", "InstrumentMapping", "RouteSource", "RouteTable"),
                    "mdgate._routing.table"),
    "hookimpl": "mdgate.hookspecs",
    "Store": "mdgate.plugins.stores.protocol",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'mdgate' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
