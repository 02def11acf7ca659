"""Fake provider plugins for the routing tests (registered like real ones)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mdgate._errors import ProviderDisabled
from mdgate._provider import ProviderSpec
from mdgate._providers.registry import Registry, load_registry
from mdgate.hookspecs import hookimpl
from mdgate.plugins.pg_routes.seed import seed_plan

_YAHOO_SUFFIX = {"NSE": ".NS", "BSE": ".BO", "NASDAQ": "", "NYSE": ""}


def _dhan_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    if not environ.get("DHAN_CLIENT_ID") or not environ.get("DHAN_ACCESS_TOKEN"):
        raise ProviderDisabled("dhan", "DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN not set")
    return dict(table)


class FakeProviders:
    """Yahoo with its suffix rule, and Dhan that needs explicit codes and credentials."""

    @hookimpl
    def mdgate_providers(self) -> Sequence[ProviderSpec]:
        return [
            ProviderSpec("yahoo", "YF", ("NASDAQ", "NYSE", "NSE", "BSE"), backup_for=("NSE", "BSE"),
                         display_name="Yahoo Finance"),
            ProviderSpec("dhan", "DHAN", ("NSE", "BSE"), parse_config=_dhan_config, display_name="Dhan"),
        ]

    @hookimpl
    def mdgate_instrument_code(self, provider: str, config: Any, exchange: str, symbol: str) -> str | None:
        if provider != "yahoo" or exchange not in _YAHOO_SUFFIX:
            return None
        return symbol + _YAHOO_SUFFIX[exchange]


#: The seed of the fake Yahoo and Dhan (what ``mdgate db seed`` writes with the real ones).
PLAN = seed_plan(FakeProviders().mdgate_providers())
#: Its exchange mappings: NASDAQ/NYSE -> yahoo; NSE/BSE -> dhan, yahoo as backup.
DEFAULT_ROUTES = PLAN.routes


def fake_registry() -> Registry:
    """A registry with the built-ins and the fake providers only."""
    return load_registry({}, extra=[("fake_providers", FakeProviders())], entry_points=False)
