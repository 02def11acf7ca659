"""
The router: provider configurations plus the current :class:`RouteTable`.

``Router.resolve(instrument)`` returns the candidates for an instrument, best
first, skipping providers that are not installed; which candidate is used
right now (failover) is the subscription manager's decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from mdgate._plugins import Registry
from mdgate.config import Settings
from mdgate.errors import ConfigError, ProviderDisabled
from mdgate.routing import Route, RouteTable, default_table

__all__ = ["ProviderConfigs", "Router", "parse_provider_configs"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ProviderConfigs:
    """Parsed ``[providers.*]`` tables: config per provider, or why it is disabled."""

    configs: Mapping[str, Any]
    disabled: Mapping[str, str]


def parse_provider_configs(registry: Registry, settings: Settings) -> ProviderConfigs:
    """
    Validate every installed provider's table with its ``parse_config``.

    Raises:
        ConfigError: a provider table is invalid (names the key path).
    """
    configs: dict[str, Any] = {}
    disabled: dict[str, str] = {}
    for name, hooks in registry.providers.items():
        table = settings.providers.get(name, {})
        try:
            configs[name] = hooks.spec.parse_config(table, settings.environ)
        except ProviderDisabled as exc:
            disabled[name] = exc.message
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"providers.{name}", f"{type(exc).__name__}: {exc}") from exc
    for name in settings.providers:
        if name not in registry.providers:
            log.warning("provider_table_unused", provider=name, reason="no loaded plugin provides it")
    return ProviderConfigs(configs, disabled)


class Router:
    """Resolves instruments to provider routes using the installed providers' rules."""

    def __init__(self, registry: Registry, configs: ProviderConfigs, table: RouteTable) -> None:
        self.registry = registry
        self.configs = configs
        self.table = table
        self._providers = frozenset(registry.providers)

    @classmethod
    def from_settings(cls, registry: Registry, settings: Settings) -> Router:
        """A router on the built-in defaults plus the config file's instruments."""
        return cls(
            registry, parse_provider_configs(registry, settings), default_table(settings, registry.declared())
        )

    def derive(self, provider: str, exchange: str, symbol: str) -> str | None:
        """Apply ``provider``'s derivation rule (``mdgate_instrument_code``)."""
        hooks = self.registry.providers.get(provider)
        if hooks is None:
            return None
        code: str | None = hooks.instrument_code(
            provider=provider,
            config=self.configs.configs.get(provider),
            exchange=exchange,
            symbol=symbol,
        )
        return code

    def resolve(self, instrument: str) -> list[Route]:
        """Return the candidates for ``instrument``, best first (raises NoRouteError)."""
        return self.table.resolve(instrument, self.derive, self._providers)
