"""mdgate hook implementations for the Yahoo provider."""

from __future__ import annotations

from collections.abc import Sequence

from mdgate import ProviderSpec, hookimpl


@hookimpl
def mdgate_providers() -> Sequence[ProviderSpec]:
    """Declare the yahoo provider."""
    return []
