"""
Plugin discovery and the provider registry.

``get_plugin_manager()`` adds the hook specifications, registers the
built-in plugins (``DEFAULT_PLUGINS``), then every entry point of group
``mdgate``, one by one: a plugin that fails to import or register is
recorded with its name and error and skipped; the others load.

Environment switches:

* ``MDGATE_LOAD_PLUGINS``: comma-separated allow-list of entry-point names
  (set but empty = no third-party plugins);
* ``MDGATE_DISABLE_PLUGINS``: comma-separated block-list;
* ``MDGATE_TRACE_PLUGINS=1``: trace every hook call to the log.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import pluggy
import structlog

from mdgate import hookspecs
from mdgate._faults import PluginFaults
from mdgate.errors import PluginLoadError, ProviderNotFound
from mdgate.provider import ProviderSpec

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "ProviderHooks",
    "Registry",
    "get_plugin_manager",
    "load_registry",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP: Final = "mdgate"

#: Built-in plugins, registered like third-party ones.
DEFAULT_PLUGINS: Final[tuple[str, ...]] = (
    "mdgate.plugins.redis_store",
    "mdgate.plugins.memory_store",
    "mdgate.plugins.pg_routes",
)


@dataclass
class PluginInfo:
    """What ``mdgate plugins`` shows for one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    status: str = "loaded"  # loaded | failed | blocked | not allowed
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)


def _split(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def get_plugin_manager(
    environ: Mapping[str, str] | None = None,
    *,
    extra: Sequence[tuple[str, object]] = (),
    entry_points: bool = True,
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """
    Build a plugin manager with the specs, built-ins, entry points and ``extra``.

    Args:
        environ: the environment for the allow/block switches.
        extra: ``(name, plugin_object)`` pairs to register too (tests, embedding).
        entry_points: load entry-point plugins (off for fully controlled tests).

    Returns:
        The manager and one :class:`PluginInfo` per plugin seen, failed ones included.
    """
    env = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    blocked = _split(env.get("MDGATE_DISABLE_PLUGINS")) or set()
    allowed = _split(env.get("MDGATE_LOAD_PLUGINS"))
    for name in blocked:
        pm.set_blocked(name)

    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[-1]
        info = PluginInfo(short, modname, "mdgate", _version("mdgate"), builtin=True)
        infos.append(info)
        if short in blocked:
            info.status = "blocked"
            continue
        _register(pm, info, lambda m=modname: importlib.import_module(m))

    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else None
            info = PluginInfo(ep.name, ep.value, dist, ep.dist.version if ep.dist else None)
            infos.append(info)
            if ep.name in blocked:
                info.status = "blocked"
            elif allowed is not None and ep.name not in allowed:
                info.status = "not allowed"
            else:
                _register(pm, info, ep.load)

    for name, obj in extra:
        info = PluginInfo(name, getattr(obj, "__name__", type(obj).__name__))
        infos.append(info)
        _register(pm, info, lambda o=obj: o)

    if env.get("MDGATE_TRACE_PLUGINS") == "1":
        pm.trace.root.setwriter(lambda msg: log.debug("plugin_trace", message=msg.rstrip()))
        pm.enable_tracing()
    return pm, infos


def _register(pm: pluggy.PluginManager, info: PluginInfo, load: Any) -> None:
    try:
        plugin = load()
        pm.register(plugin, name=info.name)
    except Exception as exc:  # a broken plugin must not take the daemon down
        err = PluginLoadError(info.name, exc)
        info.status, info.error = "failed", str(err)
        log.error("plugin_load_failed", plugin=info.name, error=str(err))
        return
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=info.name)
        info.status, info.error = "failed", str(PluginLoadError(info.name, exc))
        log.error("plugin_load_failed", plugin=info.name, error=info.error)
        return
    info.hooks = sorted(
        caller.name
        for caller in pm.get_hookcallers(pm.get_plugin(info.name)) or ()
    )


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class ProviderHooks:
    """
    One provider's hooks, bound to the plugin that declared it, so that a
    fault in another plugin can never reach this provider's calls.
    """

    def __init__(self, pm: pluggy.PluginManager, spec: ProviderSpec, plugin: str) -> None:
        self.spec = spec
        self.plugin = plugin
        others = [p for p in pm.get_plugins() if pm.get_name(p) != plugin]
        hook = pm.subset_hook_caller
        self.connect = hook("mdgate_connect", others)
        self.subscribe = hook("mdgate_subscribe", others)
        self.unsubscribe = hook("mdgate_unsubscribe", others)
        self.heartbeat = hook("mdgate_heartbeat", others)
        self.normalize = hook("mdgate_normalize", others)
        self.backfill = hook("mdgate_backfill", others)
        self.instrument_code = hook("mdgate_instrument_code", others)


@dataclass
class Registry:
    """Loaded plugins and the providers they declare."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    providers: dict[str, ProviderHooks]
    #: Every fault of a plugin after loading (hooks raising, wrong results, decoders).
    faults: PluginFaults = field(default_factory=PluginFaults)

    def declared(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(provider, exchanges it can serve)`` for every provider, in load order."""
        return [(name, hooks.spec.exchanges) for name, hooks in self.providers.items()]

    def provider(self, name: str) -> ProviderHooks:
        """Return a provider's hooks, or raise :class:`ProviderNotFound`."""
        try:
            return self.providers[name]
        except KeyError:
            raise ProviderNotFound(f"no installed plugin provides {name!r}") from None


def load_registry(
    environ: Mapping[str, str] | None = None,
    *,
    extra: Sequence[tuple[str, object]] = (),
    entry_points: bool = True,
) -> Registry:
    """Load plugins and collect every provider they declare, isolating failures."""
    pm, infos = get_plugin_manager(environ, extra=extra, entry_points=entry_points)
    by_name = {i.name: i for i in infos}
    providers: dict[str, ProviderHooks] = {}
    for impl in pm.hook.mdgate_providers.get_hookimpls():
        info = by_name.get(impl.plugin_name)
        try:
            specs = cast("Sequence[Any]", impl.function())
            for spec in specs:
                if not isinstance(spec, ProviderSpec):
                    raise TypeError(f"mdgate_providers returned {type(spec).__name__}, not ProviderSpec")
                if spec.name in providers:
                    raise ValueError(
                        f"provider {spec.name!r} already declared by {providers[spec.name].plugin!r}"
                    )
                providers[spec.name] = ProviderHooks(pm, spec, impl.plugin_name)
                if info is not None:
                    info.providers.append(spec.name)
        except Exception as exc:
            err = PluginLoadError(impl.plugin_name, exc)
            log.error("plugin_providers_failed", plugin=impl.plugin_name, error=str(err))
            if info is not None:
                info.status, info.error = "failed", str(err)
    return Registry(pm, infos, providers)
