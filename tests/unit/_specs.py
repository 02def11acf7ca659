"""The real Yahoo and Dhan specs, in entry-point order, for tests of the routing table."""

from __future__ import annotations

from mdgate._provider import ProviderSpec
from mdgate_dhan import plugin as dhan_plugin
from mdgate_yahoo import plugin as yahoo_plugin

#: What ``load_registry`` collects with both plugins installed (yahoo loads first).
SPECS: tuple[ProviderSpec, ...] = (*yahoo_plugin.mdgate_providers(), *dhan_plugin.mdgate_providers())
