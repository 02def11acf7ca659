"""
Hook specifications: the plugin author's reference.

Plugins register under the entry-point group ``mdgate`` (entry-point name =
provider id, value = the module holding the ``@hookimpl`` functions)::

    [project.entry-points.mdgate]
    acme = "mdgate_acme.plugin"

Hooks are synchronous (pluggy has no async); those that stand for I/O
return objects whose methods the core awaits. **No hook is called once per
tick**: ``mdgate_connect`` and ``mdgate_normalize`` are called once per
connection, ``mdgate_subscribe`` / ``mdgate_unsubscribe`` once per change of
interest (per batch of at most ``ProviderSpec.max_per_message`` codes),
``mdgate_heartbeat`` every ``ProviderSpec.heartbeat_interval`` seconds.

Provider hooks take ``provider`` (the provider name) first and are
``firstresult``: an implementation returns ``None`` when the provider is not
its own, so one plugin may ship several providers and several plugins can
coexist. ``config`` is whatever that provider's
``ProviderSpec.parse_config`` returned for its ``[providers.<name>]`` table.

Faults are contained: whatever an implementation raises (anything but
``KeyboardInterrupt``; ``SystemExit`` included) or returns with the wrong
type is recorded under the plugin's name (``/status`` ``plugins``, the
``plugin_fault`` log line) and the daemon and the other providers go on; each
hook's docstring says what happens then. A :class:`~mdgate._errors.ConfigError`
keeps its meaning (the operator's configuration is wrong). See "What happens
when your plugin faults" in docs/writing-a-provider.md.

Hooks are grouped: Registration, Provider lifecycle, Routing,
Storage, Command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from mdgate._config import Settings
    from mdgate._provider import Backfill, Connector, Decoder, Endpoint, Frame, ProviderSpec
    from mdgate._routing.table import RouteSource
    from mdgate.plugins.stores.protocol import Store

PROJECT_NAME = "mdgate"

#: Marker for hook specifications (core only).
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marker plugins use for their hook implementations (re-exported as ``mdgate.hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------


@hookspec
def mdgate_providers() -> Sequence[ProviderSpec]:
    """
    Declare the providers this plugin ships.

    Returns:
        A sequence of :class:`~mdgate._provider.ProviderSpec`. Results of all
        plugins are collected; a provider name declared twice is an error
        reported against the second plugin.

    Called once, when the daemon (or ``mdgate plugins``) starts. Every spec
    is checked field by field; if this hook raises, returns something that is
    not a sequence of valid specs, or declares more than 64, the plugin is
    marked ``failed`` and unregistered (none of its providers is declared).

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Provider lifecycle (connect per connection, subscribe per change of
# interest, normalize once per connection)
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def mdgate_connect(provider: str, config: Any, connection: int) -> Endpoint | Connector | None:
    """
    Say where connection number ``connection`` (0-based) of ``provider`` goes.

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the provider's parsed configuration.
        connection: index of the connection (a provider with more instruments
            than ``max_per_connection`` gets several).

    Returns:
        An :class:`~mdgate._provider.Endpoint` for the core's WebSocket loop
        (URL with credentials, headers, handshake frames), or a
        :class:`~mdgate._provider.Connector` for a transport of the plugin's
        own. Stops at first non-None result.

    Called before every connection attempt, including reconnects, so a new
    token from a configuration reload is picked up. Raising, or returning
    anything else, fails that attempt (retried with backoff).

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_subscribe(provider: str, config: Any, codes: Sequence[str]) -> Sequence[Frame] | None:
    """
    Encode the frames that subscribe ``codes`` on one connection.

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the provider's parsed configuration.
        codes: provider codes (``AAPL``, ``NSE_EQ:2885``), at most
            ``max_per_message`` of them.

    Returns:
        Frames to send, in order. Stops at first non-None result.

    Called when interest changes and, after every reconnect, for every code
    the connection carries.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_unsubscribe(
    provider: str, config: Any, codes: Sequence[str], remaining: Sequence[str]
) -> Sequence[Frame] | None:
    """
    Encode the frames that unsubscribe ``codes`` on one connection.

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the provider's parsed configuration.
        codes: provider codes to drop (at most ``max_per_message``).
        remaining: codes the connection keeps (for protocols that re-send the
            whole set).

    Returns:
        Frames to send, in order. Stops at first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_heartbeat(provider: str, config: Any, codes: Sequence[str]) -> Sequence[Frame] | None:
    """
    Encode the periodic keepalive frames for one connection.

    Called every ``ProviderSpec.heartbeat_interval`` seconds on a connected
    connection with subscriptions, with all of its codes.

    Returns:
        Frames to send (an empty sequence for none). Stops at first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_normalize(provider: str, config: Any) -> Decoder | None:
    """
    Return a new :class:`~mdgate._provider.Decoder` for one connection.

    The decoder turns the provider's frames into normalized ticks. It is
    called once per connection (and again after every reconnect, so decoder
    state never outlives a connection); the core then calls the decoder's
    ``feed`` per frame with no pluggy dispatch in between. Returning ``None``
    for your own provider fails the connection (retried with backoff). A
    ``feed`` that raises (not a ``DecodeError``) loses that frame; items it
    returns that are not ticks are dropped and counted (``bad_tick``).

    Stops at first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_backfill(
    provider: str, config: Any, instrument: str, code: str, start_ms: int, end_ms: int
) -> Backfill | None:
    """
    Fetch one-minute bars for ``instrument`` between ``start_ms`` and ``end_ms``.

    Optional capability (e.g. after a reconnect gap). Implementations doing
    blocking I/O must run it in a worker thread (``anyio.to_thread``).

    Returns:
        An awaitable list of :class:`~mdgate._model.Bar`, or ``None`` when the
        provider cannot backfill. Stops at first non-None result.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def mdgate_instrument_code(provider: str, config: Any, exchange: str, symbol: str) -> str | None:
    """
    Derive ``provider``'s own code for ``EXCHANGE:SYMBOL`` by a documented rule.

    Used only when the routing tables hold no explicit mapping (explicit
    mappings always win). Yahoo, for instance, derives ``RELIANCE.NS`` from
    ``NSE:RELIANCE``; a provider that needs a lookup table returns ``None``.
    Called when a route is resolved, never per tick. Raising, or returning
    anything but ``None`` or a non-empty string of at most 128 characters,
    counts as "no code" from this provider for that call.

    Stops at first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_route_source(settings: Settings) -> RouteSource | None:
    """
    Return the source of routing tables (e.g. PostgreSQL), or ``None``.

    When no plugin returns one, the built-in defaults plus the
    configuration file are used; also when a plugin raises or returns
    something that is not a ``RouteSource`` (the next plugin is asked
    first). Stops at first non-None result.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def mdgate_store(settings: Settings) -> Store | None:
    """
    Return the tick store for these settings.

    Built-in plugins provide Redis (when ``[redis] url`` or
    ``MDGATE_REDIS_URL`` is set) and an in-memory store (the fallback).
    A plugin that raises or returns something that is not a ``Store`` is
    skipped (the next is asked; failing all, the in-memory store is used).
    Stops at first non-None result.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


@hookspec
def mdgate_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Add sub-commands to the ``mdgate`` command line.

    Each added parser must set ``func`` with ``set_defaults(func=...)``: a
    callable taking the parsed ``argparse.Namespace`` and returning an exit
    code. If this hook raises, the commands it added are removed again.

    .. versionadded:: 0.1
    """
