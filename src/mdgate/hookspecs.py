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
its own (``if provider != NAME: return None``), so one plugin may ship
several providers and several plugins can coexist.

``config`` is typed ``object`` here because the core never looks inside it:
it is exactly the object that provider's own ``ProviderSpec.parse_config``
returned for its ``[providers.<name>]`` table (re-parsed on every reload).
An implementation annotates it with its own class (``config: AcmeConfig``);
it only ever receives configs of the providers it answers for.

Every name these signatures use is importable from :mod:`mdgate`.

Faults are contained: whatever an implementation raises (anything but
``KeyboardInterrupt``; ``SystemExit`` included) or returns with the wrong
type is recorded under the plugin's name (``/status`` ``plugins``, the
``plugin_fault`` log line) and the daemon and the other providers go on; each
hook's docstring says what happens then. A :class:`mdgate.ConfigError`
keeps its meaning (the operator's configuration is wrong). See "What happens
when your plugin faults" in docs/writing-a-provider.md.

Hooks are grouped: Registration, Provider lifecycle, Routing,
Storage, Command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    # the defining modules (``mdgate`` re-exports every one of these names)
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

    Called once, when the daemon (or ``mdgate plugins``) starts. Every spec
    is checked field by field; if this hook raises, returns something that is
    not a sequence of valid specs, or declares more than 64, the plugin is
    marked ``failed`` and unregistered (none of its providers is declared).

    Returns:
        A sequence of :class:`mdgate.ProviderSpec`. Results of all plugins
        are collected; a provider name declared twice is an error reported
        against the second plugin.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Provider lifecycle (connect per connection, subscribe per change of
# interest, normalize once per connection)
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def mdgate_connect(provider: str, config: object, connection: int) -> Endpoint | Connector | None:
    """
    Say where connection number ``connection`` (0-based) of ``provider`` goes.

    Called before every connection attempt, including reconnects, so a new
    token from a configuration reload is picked up. Raising, or returning
    anything else, fails that attempt (retried with backoff).

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned for
            this provider.
        connection: index of the connection (a provider with more instruments
            than ``max_per_connection`` gets several).

    Returns:
        An :class:`mdgate.Endpoint` for the core's WebSocket loop (URL with
        credentials, headers, handshake frames), a :class:`mdgate.Connector`
        for a transport of the plugin's own, or ``None`` for another
        plugin's provider. Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_subscribe(provider: str, config: object, codes: Sequence[str]) -> Sequence[Frame] | None:
    """
    Encode the frames that subscribe ``codes`` on one connection.

    Called when interest changes and, after every reconnect, for every code
    the connection carries. Raising :class:`mdgate.SubscriptionRejected`
    refuses the codes (clients get an error); any other fault fails the
    connection (retried with backoff).

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned.
        codes: provider codes (``AAPL``, ``NSE_EQ:2885``), at most
            ``max_per_message`` of them.

    Returns:
        Frames to send, in order (``str`` text, ``bytes`` binary), or
        ``None`` for another plugin's provider. Stops at the first non-None
        result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_unsubscribe(
    provider: str, config: object, codes: Sequence[str], remaining: Sequence[str]
) -> Sequence[Frame] | None:
    """
    Encode the frames that unsubscribe ``codes`` on one connection.

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned.
        codes: provider codes to drop (at most ``max_per_message``).
        remaining: codes the connection keeps (for protocols that re-send the
            whole set).

    Returns:
        Frames to send, in order, or ``None`` for another plugin's provider.
        Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_heartbeat(provider: str, config: object, codes: Sequence[str]) -> Sequence[Frame] | None:
    """
    Encode the periodic keepalive frames for one connection.

    Called every ``ProviderSpec.heartbeat_interval`` seconds on a connected
    connection with subscriptions (never when the interval is ``None``).

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned.
        codes: every code the connection carries.

    Returns:
        Frames to send (an empty sequence for none), or ``None`` for another
        plugin's provider. Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_normalize(provider: str, config: object) -> Decoder | None:
    """
    Return a new :class:`mdgate.Decoder` for one connection.

    The decoder turns the provider's frames into normalized ticks. It is
    called once per connection (and again after every reconnect, so decoder
    state never outlives a connection); the core then calls the decoder's
    ``feed`` per frame with no pluggy dispatch in between. A ``feed`` that
    raises (not a ``DecodeError``) loses that frame; items it returns that
    are not ticks are dropped and counted (``bad_tick``).

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned.

    Returns:
        A fresh decoder, or ``None`` for another plugin's provider.
        Returning ``None`` for your own provider fails the connection
        (retried with backoff). Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_backfill(
    provider: str, config: object, instrument: str, code: str, start_ms: int, end_ms: int
) -> Backfill | None:
    """
    Fetch one-minute bars for ``instrument`` between ``start_ms`` and ``end_ms``.

    Optional capability (e.g. after a reconnect gap). Implementations doing
    blocking I/O must run it in a worker thread (``anyio.to_thread``).

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned.
        instrument: the instrument (``NASDAQ:AAPL``), to name the bars.
        code: the provider's code for it (``AAPL``).
        start_ms: start of the gap, epoch ms UTC (inclusive).
        end_ms: end of the gap, epoch ms UTC (exclusive).

    Returns:
        A :data:`mdgate.Backfill` (an awaitable list of :class:`mdgate.Bar`),
        or ``None`` when the provider is not yours or cannot backfill this
        code. Stops at the first non-None result.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def mdgate_instrument_code(provider: str, config: object, exchange: str, symbol: str) -> str | None:
    """
    Derive ``provider``'s own code for ``EXCHANGE:SYMBOL`` by a documented rule.

    Used only when the routing tables hold no explicit mapping (explicit
    mappings always win). Yahoo, for instance, derives ``RELIANCE.NS`` from
    ``NSE:RELIANCE``; a provider with an instrument table answers from it.
    Called when a route is resolved, never per tick. Raising, or returning
    anything but ``None`` or a non-empty string of at most 128 characters,
    counts as "no code" from this provider for that call.

    Args:
        provider: provider name; return ``None`` if it is not yours.
        config: the object your ``ProviderSpec.parse_config`` returned.
        exchange: upper-case exchange (``NSE``).
        symbol: upper-case symbol (``RELIANCE``).

    Returns:
        The provider code, or ``None`` (not yours, or no code by your rule).
        Stops at the first non-None result.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def mdgate_route_source(settings: Settings) -> RouteSource | None:
    """
    Return the source of routing tables (e.g. PostgreSQL), or ``None``.

    When no plugin returns one, the loaded providers' specs plus the
    configuration file's ``[exchanges]`` are used; also when a plugin raises
    or returns something that is not a :class:`mdgate.RouteSource` (the next
    plugin is asked first).

    Args:
        settings: the loaded configuration (:class:`mdgate.Settings`).

    Returns:
        A route source, or ``None`` when this plugin is not configured to
        provide one. Stops at the first non-None result.

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
    A plugin that raises or returns something that is not a
    :class:`mdgate.Store` is skipped (the next is asked; failing all, the
    in-memory store is used).

    Args:
        settings: the loaded configuration (:class:`mdgate.Settings`).

    Returns:
        A store, or ``None`` when this plugin is not configured to provide
        one. Stops at the first non-None result.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


@hookspec
def mdgate_add_commands(cli: click.Group) -> None:
    """
    Add commands to the ``mdgate`` command line.

    Called once per ``mdgate`` invocation that needs the plugins' commands
    (a command that is not built in, ``--help``, shell completion, the start
    of ``mdgate run``). Register click commands or groups on ``cli``, e.g.
    ``@cli.group("acme")``. Every command gets ``--config PATH`` added; its
    function receives the :class:`mdgate.CommandContext` through
    ``@mdgate.pass_context`` (settings, the routing database). A failure is
    an exception: :class:`click.UsageError` (exit code 2),
    :class:`mdgate.ConfigError` (2) or :class:`mdgate.MdgateError` (1),
    printed as one ``mdgate: error: ...`` line; a command may also return an
    ``int`` exit code. See docs/cli.md.

    If this hook raises, the commands it added are removed again and the
    fault is recorded under the plugin's name; every other command works.

    Args:
        cli: the root ``mdgate`` click group.

    Returns:
        Nothing: the commands are added to ``cli``.

    .. versionadded:: 0.1
        Receives the root click group (before issue 11: argparse's sub-parsers object).
    """
