"""
mdgate's exception hierarchy.

::

    MdgateError
    ├── ConfigError                 carries the key path (``providers.yahoo.url``)
    ├── InstrumentError             not ``EXCHANGE:SYMBOL``
    ├── PluginError
    │   ├── PluginLoadError         a plugin failed to import or register
    │   └── ProviderNotFound
    ├── RoutingError
    │   └── NoRouteError            carries the exchange
    ├── ProviderError               carries ``provider``; ``retryable`` class attribute
    │   ├── ProviderDisabled        missing credentials or switched off (not retried)
    │   ├── ProviderConnectionError retryable: drops, timeouts, server errors
    │   │   └── RateLimitedError    retryable, but back off hard (Dhan 805)
    │   ├── AuthenticationError     fatal for that provider until new credentials
    │   ├── SubscriptionRejected
    │   └── DecodeError             one malformed frame or packet; the stream goes on
    └── SinkError
        ├── StoreUnavailable
        └── FanoutError

Provider plugins raise these from their pure decode functions; the core's
connection runtime decides from ``retryable`` whether to back off and retry,
or to wait for new credentials.

This module imports nothing of mdgate (``_model`` imports it for
``InstrumentError``), so the ticks an error carries are typed ``object``:
the core screens them like any decoder result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DecodeError",
    "FanoutError",
    "InstrumentError",
    "MdgateError",
    "NoRouteError",
    "PluginError",
    "PluginLoadError",
    "ProviderConnectionError",
    "ProviderDisabled",
    "ProviderError",
    "ProviderNotFound",
    "RateLimitedError",
    "RoutingError",
    "SinkError",
    "StoreUnavailable",
    "SubscriptionRejected",
]


class MdgateError(Exception):
    """Base class of every error mdgate raises on purpose."""


class ConfigError(MdgateError):
    """A configuration key is missing, unknown or has a bad value."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class InstrumentError(MdgateError):
    """An instrument name is not of the form ``EXCHANGE:SYMBOL``."""

    def __init__(self, text: str, message: str) -> None:
        self.text = text
        super().__init__(f"bad instrument {text!r}: {message}")


class PluginError(MdgateError):
    """Base class of plugin loading problems."""


class PluginLoadError(PluginError):
    """A plugin failed to import or to register; carries its name."""

    def __init__(self, plugin: str, error: BaseException) -> None:
        self.plugin = plugin
        self.error = error
        super().__init__(f"plugin {plugin!r} failed to load: {type(error).__name__}: {error}")


class ProviderNotFound(PluginError):
    """No installed plugin declares a provider of that name."""


class RoutingError(MdgateError):
    """Base class of routing problems."""


class NoRouteError(RoutingError):
    """No active provider serves the exchange (or the instrument)."""

    def __init__(self, instrument: str, exchange: str, message: str | None = None) -> None:
        self.instrument = instrument
        self.exchange = exchange
        super().__init__(message or f"no provider serves exchange {exchange!r} ({instrument})")


class ProviderError(MdgateError):
    """
    A provider failed. ``retryable`` tells the runtime whether to back off and
    try again (True) or to wait for new credentials or configuration (False).
    """

    retryable: ClassVar[bool] = True

    def __init__(
        self, provider: str, message: str, *, code: int | None = None,
        ticks: Sequence[object] = (),
    ) -> None:
        self.provider = provider
        self.message = message
        self.code = code
        #: Ticks (:class:`mdgate.Tick`) decoded from the same frame before the
        #: failure; never lost (the core screens them like any decoder result).
        self.ticks = ticks
        super().__init__(f"{provider}: {message}")


class ProviderDisabled(ProviderError):
    """The provider cannot run with this configuration (e.g. missing credentials)."""

    retryable = False


class ProviderConnectionError(ProviderError):
    """A retryable connection failure: drop, timeout, server-side error."""


class RateLimitedError(ProviderConnectionError):
    """The provider asked us to slow down; back off to the cap at once."""


class AuthenticationError(ProviderError):
    """Credentials were refused or expired. Retried at most once a minute."""

    retryable = False

    def __init__(
        self, provider: str, message: str, *, code: int | None = None,
        hint: str | None = None, ticks: Sequence[object] = (),
    ) -> None:
        super().__init__(provider, message, code=code, ticks=ticks)
        self.hint = hint


class SubscriptionRejected(ProviderError):
    """The provider refused a subscription request."""

    retryable = False


class DecodeError(ProviderError):
    """
    One frame or packet could not be decoded. ``kind`` is a short,
    countable label (``bad_json``, ``bad_base64``, ``short_packet``...),
    ``excerpt`` a truncated, secret-free view of the raw bytes.
    """

    def __init__(
        self, provider: str, kind: str, message: str, *, excerpt: bytes | str = b"",
        ticks: Sequence[object] = (),
    ) -> None:
        super().__init__(provider, f"{kind}: {message}", ticks=ticks)
        self.kind = kind
        self.excerpt = excerpt[:64]


class SinkError(MdgateError):
    """Base class of output-side failures."""


class StoreUnavailable(SinkError):
    """The tick store cannot be reached right now."""


class FanoutError(SinkError):
    """A client could not be served."""
