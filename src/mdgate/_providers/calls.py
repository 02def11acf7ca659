"""
Calling the plugins' global hooks with their faults contained.

Each function here calls one hook the way the daemon or the command line
needs it, and turns whatever a plugin raises or returns wrongly into a
recorded fault (``Registry.faults``, under the plugin's name) plus the
behaviour an operator expects:

* ``mdgate_store``: the next plugin in line is asked; when none answers
  after a fault, the in-memory store takes over (live ticks flow, nothing is
  persisted), logged as ``store_fallback`` and shown as a lasting fault, so
  ``/status`` stays ``degraded`` until the plugin is fixed and the daemon
  restarted. A :class:`~mdgate._errors.ConfigError` (a bad ``[redis] url``)
  is the operator's and still stops the start.
* ``mdgate_route_source``: the built-in defaults plus the config file are
  used (``route_source_fallback``), a lasting fault.
* ``mdgate_add_commands``: the plugin's commands are left out (whatever it
  added before failing is removed); every other command works.
* ``mdgate_backfill``: one clear :class:`~mdgate._errors.PluginError` naming
  the plugin, instead of a traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio

from mdgate._errors import MdgateError, PluginError
from mdgate._lazylog import LazyLogger
from mdgate._model import Bar
from mdgate._providers.registry import Registry
from mdgate._routing.table import RouteSource
from mdgate.plugins.stores.protocol import Store

if TYPE_CHECKING:
    import click

    from mdgate._config import Settings

__all__ = ["add_commands", "backfill", "select_route_source", "select_store", "select_store_and_plugin"]

log = LazyLogger(__name__)  # structlog on first use: `mdgate --help` stays light


def select_store(registry: Registry, settings: Settings) -> Store:
    """
    Return the tick store the plugins provide for ``settings`` (``mdgate_store``).

    Raises:
        ConfigError: a store plugin refused the configuration.
        PluginError: no plugin provides a store (the memory store is blocked) and none faulted.
    """
    return select_store_and_plugin(registry, settings)[0]


def select_store_and_plugin(registry: Registry, settings: Settings) -> tuple[Store, str]:
    """:func:`select_store`, with the name of the plugin the store came from (for its faults)."""
    answer = registry.first("mdgate_store", lambda v: isinstance(v, Store), lasting=True, settings=settings)
    if answer.value is not None:
        store: Store = answer.value
        if answer.faulted:
            log.error("store_fallback", store=store.kind, provided_by=answer.plugin,
                      faulted=list(answer.faulted))
        return store, answer.plugin or f"store:{store.kind}"
    if answer.faulted:
        from mdgate.plugins.stores.memory_store import MemoryStore

        log.error("store_fallback", store="memory", faulted=list(answer.faulted),
                  consequence="ticks are kept in memory only: not persisted, lost on restart")
        return MemoryStore(), "memory_store"
    raise PluginError("no plugin provided a tick store")


def select_route_source(registry: Registry, settings: Settings) -> tuple[RouteSource | None, str | None]:
    """
    Return the route source the plugins provide (``mdgate_route_source``) and its plugin's name.

    ``(None, None)``: the built-in defaults plus the config file route.

    Raises:
        ConfigError: a route-source plugin refused the configuration.
    """
    answer = registry.first(
        "mdgate_route_source", lambda v: isinstance(v, RouteSource), lasting=True, settings=settings,
    )
    if answer.value is None and answer.faulted:
        log.error("route_source_fallback", using="built-in defaults and the config file",
                  faulted=list(answer.faulted))
    return answer.value, answer.plugin


def add_commands(registry: Registry, cli: click.Group) -> None:
    """Let every plugin add its commands to ``cli`` (``mdgate_add_commands``), faults contained."""
    for impl in registry.pm.hook.mdgate_add_commands.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        commands = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit included: the other commands must still work
            # take back what the plugin added before it failed: a half-built command is worse than none
            cli.commands.clear()
            cli.commands.update(commands)
            registry.faults.record(impl.plugin_name, "mdgate_add_commands", exc)


def backfill(
    registry: Registry, provider: str, *, config: Any, instrument: str, code: str, start_ms: int, end_ms: int,
) -> Awaitable[list[Bar]] | None:
    """
    Ask ``provider`` for one-minute bars (``mdgate_backfill``); ``None`` when it cannot backfill.

    The returned awaitable raises :class:`PluginError` naming the plugin when
    the plugin faults (raises something that is not an mdgate error, or
    returns anything but a list of bars); the fault is recorded.

    Raises:
        PluginError: the hook itself raised or returned something that is not awaitable.
    """
    hooks = registry.provider(provider)
    plugin = hooks.plugin

    def fault(exc: BaseException | str) -> PluginError:
        registry.faults.record(plugin, "mdgate_backfill", exc, provider=provider)
        return PluginError(f"plugin {plugin!r} faulted in mdgate_backfill: {registry.faults.describe(exc)}")

    try:
        pending = hooks.backfill(provider=provider, config=config, instrument=instrument, code=code,
                                 start_ms=start_ms, end_ms=end_ms)
    except (KeyboardInterrupt, MdgateError):
        raise
    except BaseException as exc:
        raise fault(exc) from None
    if pending is None:
        return None
    if not inspect.isawaitable(pending):
        if inspect.iscoroutine(pending):  # pragma: no cover - a coroutine is always awaitable
            pending.close()
        raise fault(f"returned {type(pending).__name__}, not an awaitable list of bars")

    async def wait() -> list[Bar]:
        try:
            bars = await pending
        except (KeyboardInterrupt, MdgateError, anyio.get_cancelled_exc_class()):
            raise
        except BaseException as exc:
            raise fault(exc) from None
        if not isinstance(bars, list) or not all(isinstance(b, Bar) for b in bars):
            raise fault(f"returned {type(bars).__name__}, not a list of Bar")
        return bars

    return wait()
