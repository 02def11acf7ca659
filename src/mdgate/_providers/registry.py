"""
Plugin discovery and the provider registry.

``get_plugin_manager()`` adds the hook specifications, registers the
built-in plugins (``DEFAULT_PLUGINS``), then every entry point of group
``mdgate``, one by one: a plugin that fails to import or register (whatever
it raises, ``SystemExit`` included; only ``KeyboardInterrupt`` passes) is
recorded with its name and error, as a lasting fault in
``Registry.faults``, and skipped; the others load. An entry point's
module built for another plugin API (``MDGATE_PLUGIN_API``, see
:mod:`mdgate._plugin_api`) is refused before it is registered, the same
way; one that declares none loads with a warning. A plugin whose
``mdgate_providers`` raises or returns anything but valid
:class:`ProviderSpec` objects is failed the same way, and unregistered.

Environment switches:

* ``MDGATE_LOAD_PLUGINS``: comma-separated allow-list of entry-point names
  (set but empty = no third-party plugins);
* ``MDGATE_DISABLE_PLUGINS``: comma-separated block-list;
* ``MDGATE_TRACE_PLUGINS=1``: trace every hook call to the log.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, NamedTuple

import pluggy

from mdgate import hookspecs
from mdgate._errors import ConfigError, ProviderNotFound
from mdgate._lazylog import LazyLogger
from mdgate._plugin_api import ASSUMED_API, DECLARATION, PLUGIN_API, api_problem, undeclared_warning
from mdgate._provider import ProviderSpec
from mdgate._providers.faults import PluginFaults

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "MAX_PROVIDERS_PER_PLUGIN",
    "Answer",
    "Distribution",
    "EntryPoint",
    "PluginInfo",
    "ProviderHooks",
    "Registry",
    "check_spec",
    "find_entry_points",
    "get_plugin_manager",
    "load_registry",
]

log = LazyLogger(__name__)  # structlog on first use: `mdgate --help` stays light

ENTRY_POINT_GROUP: Final = "mdgate"

#: Built-in plugins, registered like third-party ones.
DEFAULT_PLUGINS: Final[tuple[str, ...]] = (
    "mdgate.plugins.stores.redis_store",
    "mdgate.plugins.stores.memory_store",
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
    #: the plugin API it declares (``MDGATE_PLUGIN_API``); ``None`` when it declares none
    api: str | None = None
    #: what is wrong but did not stop it loading (no declared plugin API...)
    warnings: list[str] = field(default_factory=list)


#: Most providers one plugin may declare (a generator that never ends is cut here).
MAX_PROVIDERS_PER_PLUGIN: Final = 64

_PROVIDER_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_EXCHANGE_RE: Final = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


def _split(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def get_plugin_manager(
    environ: Mapping[str, str] | None = None,
    *,
    extra: Sequence[tuple[str, object]] = (),
    entry_points: bool = True,
    faults: PluginFaults | None = None,
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """
    Build a plugin manager with the specs, built-ins, entry points and ``extra``.

    Args:
        environ: the environment for the allow/block switches.
        extra: ``(name, plugin_object)`` pairs to register too (tests, embedding).
        entry_points: load entry-point plugins (off for fully controlled tests).
        faults: where load failures are recorded (a new ledger when ``None``).

    Returns:
        The manager and one :class:`PluginInfo` per plugin seen, failed ones included.
    """
    env = os.environ if environ is None else environ
    faults = faults if faults is not None else PluginFaults()
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    blocked = _split(env.get("MDGATE_DISABLE_PLUGINS")) or set()
    allowed = _split(env.get("MDGATE_LOAD_PLUGINS"))
    for name in blocked:
        pm.set_blocked(name)

    version = _version("mdgate")  # one look at the installed distributions for all the built-ins
    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[-1]
        info = PluginInfo(short, modname, "mdgate", version, builtin=True, api=PLUGIN_API)
        infos.append(info)
        if short in blocked:
            info.status = "blocked"
            continue
        _register(pm, info, lambda m=modname: importlib.import_module(m), faults)

    if entry_points:
        for ep in _entry_points(faults):
            info = _ep_info(ep)
            infos.append(info)
            if info.name in blocked:
                info.status = "blocked"
            elif allowed is not None and info.name not in allowed:
                info.status = "not allowed"
            else:
                _register(pm, info, ep.load, faults, check_api=True)

    for name, obj in extra:
        info = PluginInfo(name, getattr(obj, "__name__", type(obj).__name__))
        infos.append(info)
        _register(pm, info, lambda o=obj: o, faults)

    if env.get("MDGATE_TRACE_PLUGINS") == "1":
        pm.trace.root.setwriter(lambda msg: log.debug("plugin_trace", message=msg.rstrip()))
        pm.enable_tracing()
    return pm, infos


def _entry_points(faults: PluginFaults) -> list[Any]:
    try:
        return find_entry_points(ENTRY_POINT_GROUP)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # broken distribution metadata: no third-party plugin, but run
        faults.record("entry_points", "discovery", exc, lasting=True, event="plugin_load_failed")
        return []


class Distribution:
    """An installed distribution's ``.dist-info`` or ``.egg-info`` directory (metadata read on first use)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._meta: tuple[str | None, str | None] | None = None

    def _read(self) -> tuple[str | None, str | None]:
        if self._meta is None:
            name = version = None
            for fn in ("METADATA", "PKG-INFO"):
                try:
                    with open(os.path.join(self.path, fn), encoding="utf-8") as fh:
                        for line in fh:  # the header ends at the first empty line
                            if not line.strip():
                                break
                            key, _, value = line.partition(":")
                            if key == "Name":
                                name = value.strip()
                            elif key == "Version":
                                version = value.strip()
                    break
                except FileNotFoundError:
                    continue
            self._meta = (name, version)
        return self._meta

    @property
    def name(self) -> str | None:
        """The ``Name`` of its metadata."""
        return self._read()[0]

    @property
    def version(self) -> str | None:
        """The ``Version`` of its metadata."""
        return self._read()[1]


class EntryPoint(NamedTuple):
    """One entry point (``name = module:attr``) of an installed distribution."""

    name: str
    value: str
    group: str
    dist: Distribution | None

    def load(self) -> Any:
        """Import the module and return the object named (the module itself without ``:attr``)."""
        module, _, attrs = self.value.partition("[")[0].partition(":")
        obj: Any = importlib.import_module(module.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


_NORMALIZE: Final = re.compile(r"[-_.]+")


def _distributions() -> list[Distribution] | None:
    """
    Every distribution on ``sys.path``, the first of each name winning, as
    ``importlib.metadata`` finds them; ``None`` where only it can look (a
    zip on the path, a finder of distributions of its own).
    """
    finders = [f for f in sys.meta_path if f is not importlib.machinery.PathFinder]
    if any(hasattr(f, "find_distributions") for f in finders):
        return None
    seen: set[str] = set()
    out: list[Distribution] = []
    for entry in sys.path:
        where = entry or "."
        try:
            children = os.listdir(where)
        except NotADirectoryError:
            return None
        except OSError:  # a directory that is not there (yet): importlib skips it too
            continue
        found = [c for c in children if c.lower().endswith(".dist-info")]
        found += [c for c in children if c.lower().endswith(".egg-info")]
        for child in found:
            name = _dist_key(child)
            if name not in seen:
                seen.add(name)
                out.append(Distribution(os.path.join(where, child)))
    return out


def _dist_key(dirname: str) -> str:
    """The normalized distribution name of a ``name-version.dist-info`` (or ``.egg-info``) directory."""
    return _NORMALIZE.sub("_", dirname.rpartition(".")[0].partition("-")[0]).lower()


def find_entry_points(group: str) -> list[Any]:
    """
    The entry points of ``group``, as ``importlib.metadata.entry_points(group=...)``
    gives them, read from each distribution's ``entry_points.txt`` without
    importing ``importlib.metadata`` (~20 ms of ``mdgate --help``), which is
    asked only where this cannot look.
    """
    dists = _distributions()
    if dists is None:
        import importlib.metadata

        return list(importlib.metadata.entry_points(group=group))
    out: list[Any] = []
    for dist in dists:
        try:
            with open(os.path.join(dist.path, "entry_points.txt"), encoding="utf-8") as fh:
                text = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
        section = None
        for line in map(str.strip, text.splitlines()):
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line.strip("[]")
            elif section == group and "=" in line:
                name, _, value = line.partition("=")
                out.append(EntryPoint(name.strip(), value.strip(), group, dist))
    return out


def _ep_info(ep: Any) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    try:
        name, version = (dist.name, dist.version) if dist is not None else (None, None)
    except Exception:  # unreadable metadata of the distribution: still show the plugin
        name = version = None
    return PluginInfo(str(ep.name), str(ep.value), name, version)


def _fail(info: PluginInfo, stage: str, exc: BaseException | str, faults: PluginFaults) -> None:
    """Mark a plugin failed: its status and error, a lasting fault, one log line."""
    # the text of a PluginLoadError, built safely (the plugin's exception may not even print)
    info.status, info.error = "failed", f"plugin {info.name!r} failed to load: {faults.describe(exc)}"
    faults.record(info.name, stage, exc, lasting=True, event="plugin_load_failed")


def _api_problem(info: PluginInfo, plugin: object) -> str | None:
    """Check the plugin API an entry point's module declares: why it is refused, else ``None``."""
    module = plugin if isinstance(plugin, ModuleType) else sys.modules.get(info.module.split(":")[0].strip())
    declared = getattr(module, DECLARATION, None) if module is not None else None
    if declared is None:
        info.warnings.append(undeclared_warning())
        log.warning("plugin_api_undeclared", plugin=info.name, assumed=ASSUMED_API)
        return api_problem(ASSUMED_API, PLUGIN_API)
    info.api = declared if isinstance(declared, str) else repr(declared)[:40]
    return api_problem(declared, PLUGIN_API)


def _register(
    pm: pluggy.PluginManager, info: PluginInfo, load: Any, faults: PluginFaults, *, check_api: bool = False,
) -> None:
    plugin: object = None
    try:
        plugin = load()
        if plugin is None:
            raise TypeError("the entry point loaded None, not a module or an object with hooks")
        if check_api and (problem := _api_problem(info, plugin)) is not None:
            _fail(info, "plugin_api", problem, faults)  # refused before any of its hooks is registered
            return
        pm.register(plugin, name=info.name)
        pm.check_pending()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit, GeneratorExit...: a broken plugin must not end the daemon
        if plugin is not None and pm.get_plugin(info.name) is plugin:
            pm.unregister(name=info.name)
        _fail(info, "import", exc, faults)
        return
    info.hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())


def _version(dist: str) -> str | None:
    """The installed version of ``dist`` (None when it is not installed)."""
    dists = _distributions()
    if dists is None:
        import importlib.metadata

        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
    want = _NORMALIZE.sub("_", dist).lower()
    for d in dists:
        if _dist_key(os.path.basename(d.path)) == want:
            return d.version
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_spec(spec: object) -> ProviderSpec:
    """
    Check that ``spec`` is a usable :class:`ProviderSpec` (what ``mdgate_providers`` returns).

    Raises:
        TypeError, ValueError: naming the first bad field.
    """
    if not isinstance(spec, ProviderSpec):
        raise TypeError(f"mdgate_providers returned {type(spec).__name__}, not ProviderSpec")
    s: Any = spec  # any field may hold anything: a plugin built it
    name = s.name
    if not isinstance(name, str) or not _PROVIDER_NAME_RE.match(name):
        raise ValueError(f"provider name {name!r:.80} is not a name (letters, digits, _ . -; at most 64)")
    problems: list[str] = []
    if not isinstance(s.code, str) or not 0 < len(s.code) <= 16:
        problems.append("code must be a string of 1 to 16 characters")
    ex = s.exchanges
    if isinstance(ex, str | bytes) or not isinstance(ex, Sequence) or not all(
        isinstance(e, str) and _EXCHANGE_RE.match(e) for e in ex
    ):
        problems.append("exchanges must be a sequence of EXCHANGE names (A-Z, 0-9, _; at most 16)")
    elif isinstance(s.backup_for, str | bytes) or not all(e in ex for e in s.backup_for):
        problems.append("backup_for must be a sequence of names listed in exchanges")
    if not isinstance(s.display_name, str):
        problems.append("display_name must be a string")
    if not isinstance(s.settings, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in s.settings.items()
    ):
        problems.append("settings must map key names to descriptions")
    if isinstance(s.secrets, str | bytes) or not all(isinstance(v, str) for v in s.secrets):
        problems.append("secrets must be a sequence of environment variable names")
    for limit in ("max_per_message", "max_per_connection", "max_connections"):
        value = getattr(spec, limit)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{limit} must be an integer >= 1")
    if s.heartbeat_interval is not None and not (
        _is_number(s.heartbeat_interval) and s.heartbeat_interval > 0
    ):
        problems.append("heartbeat_interval must be None or a number > 0")
    if not (_is_number(s.stall_timeout) and s.stall_timeout >= 0):
        problems.append("stall_timeout must be a number >= 0")
    if not callable(s.parse_config):
        problems.append("parse_config must be callable")
    if not isinstance(getattr(spec, "instrument_table", False), bool):
        problems.append("instrument_table must be a bool")
    if problems:
        raise ValueError(f"provider {name!r}: " + "; ".join(problems))
    return spec


class ProviderHooks:
    """
    One provider's hooks, bound to the plugin that declared it, so that a
    fault in another plugin can never reach this provider's calls. Whoever
    calls them records what they raise or return wrongly in
    ``Registry.faults``, under ``plugin``.
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


class Answer(NamedTuple):
    """What :meth:`Registry.first` found: the answering plugin and its result, and who faulted."""

    plugin: str | None
    value: Any
    faulted: tuple[str, ...]


@dataclass
class Registry:
    """Loaded plugins and the providers they declare."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    providers: dict[str, ProviderHooks]
    #: Every fault of a plugin (loading, hooks raising, wrong results, decoders).
    faults: PluginFaults = field(default_factory=PluginFaults)

    def provider(self, name: str) -> ProviderHooks:
        """Return a provider's hooks, or raise :class:`ProviderNotFound`."""
        try:
            return self.providers[name]
        except KeyError:
            raise ProviderNotFound(f"no installed plugin provides {name!r}") from None

    def first(
        self, hook: str, accept: Callable[[Any], bool], *, lasting: bool = False, **kwargs: Any,
    ) -> Answer:
        """
        Call a ``firstresult`` hook plugin by plugin, containing each plugin's faults.

        Implementations are called in pluggy's order (wrappers skipped). One
        that raises (anything but ``KeyboardInterrupt`` and
        :class:`~mdgate._errors.ConfigError`, which is the operator's to fix)
        or returns a value ``accept`` refuses is recorded in :attr:`faults`
        and skipped; the first accepted non-``None`` value wins.

        Args:
            hook: the hook name (``mdgate_store``...).
            accept: whether a non-``None`` result has the right type.
            lasting: record faults as lasting (the plugin's part is replaced until restart).
            kwargs: the hook's arguments.
        """
        caller = getattr(self.pm.hook, hook)
        faulted: list[str] = []
        plugins = self.pm.get_plugins()
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            one = self.pm.subset_hook_caller(hook, [p for p in plugins if p is not impl.plugin])
            try:
                value = one(**kwargs)
                if value is not None and not accept(value):
                    raise TypeError(f"{hook} returned {type(value).__name__}")
            except (KeyboardInterrupt, ConfigError):
                raise
            except BaseException as exc:  # a plugin bug: skip this plugin, ask the next
                self.faults.record(impl.plugin_name, hook, exc, lasting=lasting)
                faulted.append(impl.plugin_name)
                continue
            if value is not None:
                return Answer(impl.plugin_name, value, tuple(faulted))
        return Answer(None, None, tuple(faulted))


def load_registry(
    environ: Mapping[str, str] | None = None,
    *,
    extra: Sequence[tuple[str, object]] = (),
    entry_points: bool = True,
) -> Registry:
    """Load plugins and collect every provider they declare, isolating failures."""
    env = os.environ if environ is None else environ
    faults = PluginFaults()
    pm, infos = get_plugin_manager(env, extra=extra, entry_points=entry_points, faults=faults)
    by_name = {i.name: i for i in infos}
    declared: dict[str, str] = {}  # provider -> plugin
    specs: list[tuple[str, ProviderSpec]] = []
    for impl in pm.hook.mdgate_providers.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        info = by_name.get(impl.plugin_name) or PluginInfo(impl.plugin_name, str(impl.plugin_name))
        try:
            result: Any = impl.function()
            if isinstance(result, str | bytes | Mapping) or not hasattr(result, "__iter__"):
                raise TypeError(f"mdgate_providers returned {type(result).__name__}, not a sequence")
            mine = [check_spec(s) for s in itertools.islice(result, MAX_PROVIDERS_PER_PLUGIN + 1)]
            if len(mine) > MAX_PROVIDERS_PER_PLUGIN:
                raise ValueError(f"more than {MAX_PROVIDERS_PER_PLUGIN} providers declared")
            for spec in mine:
                if spec.name in declared:
                    raise ValueError(f"provider {spec.name!r} already declared by {declared[spec.name]!r}")
                declared[spec.name] = impl.plugin_name  # checked against its own earlier specs too
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # none of its providers, and the plugin is out
            for spec_name in [n for n, p in declared.items() if p == impl.plugin_name]:
                del declared[spec_name]
            if pm.get_plugin(impl.plugin_name) is not None:
                pm.unregister(name=impl.plugin_name)
            info.hooks = []
            _fail(info, "mdgate_providers", exc, faults)
            continue
        specs.extend((impl.plugin_name, spec) for spec in mine)
    providers: dict[str, ProviderHooks] = {}
    for plugin, spec in specs:
        providers[spec.name] = ProviderHooks(pm, spec, plugin)
        owner = by_name.get(plugin)
        if owner is not None:
            owner.providers.append(spec.name)
        faults.hide(env.get(var) for var in spec.secrets)
    return Registry(pm, infos, providers, faults)
