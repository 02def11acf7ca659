"""
Plugin faults: one ledger of everything a plugin raised or returned wrongly.

Whatever a plugin does wrong (an import that raises, a hook that raises or
returns the wrong type, a decoder that returns something that is not a
tick), the core contains it where it happens and records it here under the
plugin's name. ``/status`` shows the ledger (``plugins``), and each fault
is logged as ``plugin_fault``, at most once per ``log_interval`` seconds per
plugin and hook, with the number suppressed in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

__all__ = ["PluginFaults"]

log = structlog.get_logger(__name__)

#: Longest error text kept per fault (a plugin's exception text can be anything).
_MAX_ERROR: Final = 300


@dataclass
class _Ledger:
    faults: int = 0
    by_hook: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_hook: str | None = None
    last_at: int | None = None


def describe(exc: BaseException | str) -> str:
    """``Type: message`` of an exception (or a plain string), cut to a bounded length."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


class PluginFaults:
    """Counts and remembers plugin faults per plugin and hook."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, log_interval: float = 10.0) -> None:
        self._clock = clock
        self.log_interval = log_interval
        self._plugins: dict[str, _Ledger] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def record(self, plugin: str, hook: str, exc: BaseException | str, **context: Any) -> None:
        """
        Record one fault of ``plugin`` in ``hook`` (a hook name, ``import``, ``decoder``...).

        Args:
            plugin: the plugin's registered name.
            hook: where it happened.
            exc: what was raised, or a description of the wrong result.
            context: extra fields for the log line (never secrets).
        """
        entry = self._plugins.setdefault(plugin, _Ledger())
        entry.faults += 1
        entry.by_hook[hook] = entry.by_hook.get(hook, 0) + 1
        entry.last_error = describe(exc)
        entry.last_hook = hook
        entry.last_at = time.time_ns() // 1_000_000
        key = (plugin, hook)
        now = self._clock()
        last, suppressed = self._logged.get(key, (float("-inf"), 0))
        if now - last >= self.log_interval:
            log.error("plugin_fault", plugin=plugin, hook=hook, error=entry.last_error,
                      suppressed=suppressed, **context)
            self._logged[key] = (now, 0)
        else:
            self._logged[key] = (last, suppressed + 1)

    def count(self, plugin: str | None = None) -> int:
        """Faults recorded for ``plugin`` (all plugins when ``None``)."""
        if plugin is not None:
            entry = self._plugins.get(plugin)
            return entry.faults if entry else 0
        return sum(e.faults for e in self._plugins.values())

    def status(self) -> dict[str, dict[str, Any]]:
        """``{plugin: {faults, by_hook, last_error, last_hook, last_at}}`` for ``/status``."""
        return {
            name: {"faults": e.faults, "by_hook": dict(e.by_hook), "last_error": e.last_error,
                   "last_hook": e.last_hook, "last_at": e.last_at}
            for name, e in self._plugins.items()
        }
