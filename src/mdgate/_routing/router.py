"""
The router: provider configurations plus the current :class:`RouteTable`.

``Router.resolve(instrument)`` returns the candidates for an instrument, best
first, skipping providers that are not installed; which candidate is used
right now (failover) is the subscription manager's decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, cast

import structlog

from mdgate._config import Settings
from mdgate._errors import ConfigError, ProviderDisabled
from mdgate._providers.faults import secret_values
from mdgate._providers.registry import Registry
from mdgate._routing.table import Route, RouteTable, default_table

__all__ = ["MAX_CODE", "ProviderConfigs", "Router", "config_table", "live_configs", "parse_provider_configs"]

log = structlog.get_logger(__name__)

#: Longest provider code ``mdgate_instrument_code`` may return.
MAX_CODE: Final = 128


@dataclass(frozen=True)
class ProviderConfigs:
    """Parsed ``[providers.*]`` tables: config per provider, or why it is disabled."""

    configs: Mapping[str, object]
    disabled: Mapping[str, str]


class Configured(Protocol):
    """What holds a provider's configuration in a running gateway (its session)."""

    @property
    def config(self) -> object:
        """The parsed configuration (None when disabled)."""

    @property
    def disabled_reason(self) -> str | None:
        """Why the provider is disabled, or None."""


class _Live(Mapping[str, object]):
    """Read-through view of the sessions' configurations (or of why they are disabled)."""

    def __init__(self, holders: Mapping[str, Configured], disabled: bool) -> None:
        self._holders = holders
        self._disabled = disabled

    def _value(self, holder: Configured) -> object:
        return holder.disabled_reason if self._disabled else holder.config

    def _has(self, holder: Configured) -> bool:
        return (holder.disabled_reason is not None) is self._disabled

    def __getitem__(self, name: str) -> object:
        holder = self._holders[name]
        if not self._has(holder):
            raise KeyError(name)
        return self._value(holder)

    def __iter__(self) -> Iterator[str]:
        return (name for name, h in self._holders.items() if self._has(h))

    def __len__(self) -> int:
        return sum(1 for h in self._holders.values() if self._has(h))


def live_configs(holders: Mapping[str, Configured]) -> ProviderConfigs:
    """
    The configurations a running gateway uses, read through from where they
    are held: each provider's session (the one place; a reload applies new
    ones there and the router sees them at once).
    """
    # the disabled view holds each session's `disabled_reason`: strings
    return ProviderConfigs(_Live(holders, False), cast("Mapping[str, str]", _Live(holders, True)))


def parse_provider_configs(
    registry: Registry, settings: Settings, previous: ProviderConfigs | None = None,
) -> ProviderConfigs:
    """
    Validate every installed provider's table with its ``parse_config``.

    A ``parse_config`` that raises anything but :class:`ConfigError` or
    :class:`ProviderDisabled` is a plugin fault, not a configuration error:
    it is recorded under the plugin's name and that provider alone is
    disabled (reason: the fault), or, on a reload (``previous`` given), keeps
    the configuration it was running with. The other providers go on.

    Args:
        registry: the loaded plugins.
        settings: the configuration to validate.
        previous: the configurations in use (a reload), kept for a provider
            whose ``parse_config`` faults.

    Raises:
        ConfigError: a provider table is invalid (names the key path).
    """
    configs: dict[str, object] = {}
    disabled: dict[str, str] = {}
    faults = registry.faults
    for name, hooks in registry.providers.items():
        # ``replay`` is the core's (a recording to play back instead of connecting)
        table = {k: v for k, v in settings.providers.get(name, {}).items() if k != "replay"}
        part = f"parse_config({name})"
        try:
            configs[name] = hooks.spec.parse_config(table, settings.environ)
        except ProviderDisabled as exc:
            disabled[name] = exc.message
        except (ConfigError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # a plugin bug: this provider only
            if previous is not None and name in previous.configs:
                configs[name] = previous.configs[name]
                faults.record(hooks.plugin, "parse_config", exc, provider=name,
                              kept="the configuration in use before the reload")
            else:
                disabled[name] = f"plugin {hooks.plugin!r} faulted in parse_config: {faults.describe(exc)}"
                faults.record(hooks.plugin, "parse_config", exc, lasting=True, part=part, provider=name)
            continue
        if name in configs:
            faults.hide(secret_values(configs[name]))
        faults.recover(hooks.plugin, part)
    for name in settings.providers:
        if name not in registry.providers:
            log.warning("provider_table_unused", provider=name, reason="no loaded plugin provides it")
    return ProviderConfigs(configs, disabled)


def config_table(registry: Registry, settings: Settings, source: object | None = None) -> RouteTable:
    """
    The table routing uses without a route source: the loaded providers'
    specs, then ``[exchanges]`` (:func:`mdgate._routing.table.default_table`).

    Says what it cannot honour, once per call (start, reload, a command):
    ``exchange_provider_not_installed`` for an ``[exchanges]`` entry naming a
    provider no loaded plugin declares (the entry is kept; the provider is
    skipped when resolving, like a database row naming it), and
    ``exchanges_not_live`` when ``source`` (a route source, e.g. PostgreSQL)
    is given: the source is the routing table then, and ``[exchanges]``
    only seeds a fresh database.
    """
    if settings.exchanges and source is not None:
        log.warning("exchanges_not_live", source=getattr(source, "description", repr(source)),
                    effect="[exchanges] is not used while routes come from the route source; "
                           "it only seeds a fresh database (mdgate db seed)")
    for exchange, providers in settings.exchanges.items():
        for name in providers:
            if name not in registry.providers:
                log.warning("exchange_provider_not_installed", key=f"exchanges.{exchange}", provider=name,
                            effect="skipped when resolving until a plugin provides it")
    return default_table(settings, [hooks.spec for hooks in registry.providers.values()])


class Router:
    """Resolves instruments to provider routes using the installed providers' rules."""

    def __init__(self, registry: Registry, configs: ProviderConfigs, table: RouteTable) -> None:
        self.registry = registry
        self.configs = configs
        self.table = table
        self._providers = frozenset(registry.providers)
        self._tables = frozenset(n for n, h in registry.providers.items() if h.spec.instrument_table)

    @classmethod
    def from_settings(cls, registry: Registry, settings: Settings) -> Router:
        """A router on the specs' routes plus the config file's ``[exchanges]`` and ``[instruments]``."""
        return cls(registry, parse_provider_configs(registry, settings), config_table(registry, settings))

    def derive(self, provider: str, exchange: str, symbol: str) -> str | None:
        """
        Apply ``provider``'s derivation rule (``mdgate_instrument_code``).

        A rule that raises, or returns anything but ``None`` or a code (a
        non-empty string of at most :data:`MAX_CODE` characters), is a plugin
        fault: recorded under the plugin's name, and that provider has no
        code for the instrument this time (the others are still asked).
        """
        hooks = self.registry.providers.get(provider)
        if hooks is None:
            return None
        try:
            code: object = hooks.instrument_code(
                provider=provider,
                config=self.configs.configs.get(provider),
                exchange=exchange,
                symbol=symbol,
            )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin bug must not fail the route, nor the daemon
            self.registry.faults.record(hooks.plugin, "mdgate_instrument_code", exc, provider=provider)
            return None
        if code is None or (isinstance(code, str) and 0 < len(code) <= MAX_CODE):
            return code
        self.registry.faults.record(
            hooks.plugin, "mdgate_instrument_code",
            f"returned {type(code).__name__}, not a code (a non-empty str of at most {MAX_CODE} characters)",
            provider=provider,
        )
        return None

    def resolve(self, instrument: str) -> list[Route]:
        """Return the candidates for ``instrument``, best first (raises NoRouteError)."""
        return self.table.resolve(instrument, self.derive, self._providers, self._tables)
