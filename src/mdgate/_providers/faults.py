"""
Plugin faults: one ledger of everything a plugin raised or returned wrongly.

Whatever a plugin does wrong (an import that raises, a hook that raises or
returns the wrong type, a decoder that returns something that is not a
tick), the core contains it where it happens and records it here under the
plugin's name. ``/status`` shows the ledger (``plugins``), and each fault
is logged as ``plugin_fault``, at most once per ``log_interval`` seconds per
plugin and hook, with the number suppressed in between.

A fault is either *lasting* (the plugin failed to load or to declare its
providers, or its store or route source was replaced by the built-in
fallback: it stays so until the daemon restarts) or *passing* (one call
failed; the next may work). A plugin's ``state`` in ``/status`` is
``failed`` while it has a lasting fault, ``faulting`` while its last fault is
less than ``recent`` seconds old, else ``ok``; the gateway is
``degraded`` while any plugin is not ``ok``.

Only what is contained is recorded: ``KeyboardInterrupt`` (the operator's
Ctrl-C) always passes through. Error texts are cut to a bounded length and
scrubbed of credentials (URL passwords and query values, bearer tokens,
``password=``-style pairs, and the values of the secrets the providers
declare).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from mdgate._lazylog import LazyLogger
from mdgate._ratelog import EveryLog
from mdgate._redact import Secret, mask_url

__all__ = ["PluginFaults", "describe", "scrub", "secret_values"]

log = LazyLogger(__name__)  # structlog on first use: `mdgate --help` stays light

#: Longest error text kept per fault (a plugin's exception text can be anything).
_MAX_ERROR: Final = 300
#: Text scanned for secrets before cutting (a longer exception text is cut first).
_MAX_SCAN: Final = 4096
#: Seconds a passing fault keeps its plugin ``faulting`` (and the gateway degraded).
RECENT: Final = 60.0
#: Shortest value :meth:`PluginFaults.hide` masks (shorter ones would mask ordinary words).
_MIN_HIDDEN: Final = 6

_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{},]+")
_BEARER_RE: Final = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;]+")
_PAIR_RE: Final = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|access[_-]?token|api[_-]?key|apikey|signature)"
    r"(\s*[=:]\s*)(['\"]?)[^\s'\",;&]+"
)


def _text(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    try:
        message = str(exc)
    except Exception:  # a plugin's exception whose __str__ raises
        message = "<unprintable message>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def scrub(text: str, hidden: Iterable[str] = ()) -> str:
    """Mask credentials in free text: URLs' passwords and query values, tokens, ``key=value`` secrets."""
    for value in hidden:
        text = text.replace(value, "***")
    text = _URL_RE.sub(lambda m: mask_url(m.group(0)), text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _PAIR_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}***", text)


def describe(exc: BaseException | str, hidden: Iterable[str] = ()) -> str:
    """``Type: message`` of an exception (or a plain string), scrubbed and cut to a bounded length."""
    text = scrub(_text(exc)[:_MAX_SCAN], hidden)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


@dataclass
class _Ledger:
    faults: int = 0
    by_hook: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_hook: str | None = None
    last_at: int | None = None
    #: monotonic time of the last fault
    last_clock: float | None = None
    #: part (a hook name, or e.g. ``parse_config(provider)``) -> why it is out of service
    failed: dict[str, str] = field(default_factory=dict)


def secret_values(config: object) -> list[str]:
    """
    The values of the :class:`~mdgate._config.Secret` objects a provider's
    parsed configuration holds (its fields, one level deep, and tuples of
    them), so that they can be masked in fault texts: a token read from a
    file is as secret as one from the environment.
    """
    if isinstance(config, dict):
        values: list[object] = list(config.values())
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        values = [getattr(config, f.name, None) for f in dataclasses.fields(config)]
    elif hasattr(config, "__dict__"):
        values = list(vars(config).values())
    else:
        values = []
    found: list[str] = []
    for value in values:
        items = value if isinstance(value, tuple | list) else (value,)
        found.extend(v.reveal() for v in items if isinstance(v, Secret))
    return found


class PluginFaults:
    """Counts and remembers plugin faults per plugin and hook."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, log_interval: float = 10.0,
        recent: float = RECENT,
    ) -> None:
        self._clock = clock
        self.log_interval = log_interval
        self.recent = recent
        self._plugins: dict[str, _Ledger] = {}
        self._log = EveryLog(log_interval, clock=clock)
        self._hidden: set[str] = set()

    def hide(self, values: Iterable[str | None]) -> None:
        """Mask these secret values (e.g. provider tokens from the environment) in every error text."""
        self._hidden.update(v for v in values if isinstance(v, str) and len(v) >= _MIN_HIDDEN)

    def describe(self, exc: BaseException | str) -> str:
        """:func:`describe` with this ledger's hidden values masked too."""
        return describe(exc, self._hidden)

    def record(
        self, plugin: str, hook: str, exc: BaseException | str, *, lasting: bool = False,
        part: str | None = None, event: str = "plugin_fault", **context: Any,
    ) -> None:
        """
        Record one fault of ``plugin`` in ``hook`` (a hook name, ``import``, ``decoder``...).

        Args:
            plugin: the plugin's registered name.
            hook: where it happened.
            exc: what was raised, or a description of the wrong result.
            lasting: the plugin (or ``part`` of it) stays out of service
                until a restart, or until :meth:`recover`: it shows
                ``failed`` and keeps the gateway degraded.
            part: what is out of service, for a lasting fault (default: ``hook``).
            event: the log event name.
            context: extra fields for the log line (never secrets).
        """
        entry = self._plugins.setdefault(plugin, _Ledger())
        error = self.describe(exc)
        entry.faults += 1
        entry.by_hook[hook] = entry.by_hook.get(hook, 0) + 1
        entry.last_error = error
        entry.last_hook = hook
        entry.last_at = time.time_ns() // 1_000_000
        now = self._clock()
        entry.last_clock = now
        if lasting:
            entry.failed[part or hook] = error
        self._log.log((plugin, hook), log.error, event, plugin=plugin, hook=hook, error=error, **context)

    def recover(self, plugin: str, part: str) -> None:
        """``part`` of ``plugin`` works again (e.g. a reload's ``parse_config`` succeeded)."""
        entry = self._plugins.get(plugin)
        if entry is not None and entry.failed.pop(part, None) is not None:
            log.info("plugin_recovered", plugin=plugin, part=part)

    def count(self, plugin: str | None = None) -> int:
        """Faults recorded for ``plugin`` (all plugins when ``None``)."""
        if plugin is not None:
            entry = self._plugins.get(plugin)
            return entry.faults if entry else 0
        return sum(e.faults for e in self._plugins.values())

    def state(self, plugin: str) -> str:
        """``failed`` (a lasting fault), ``faulting`` (a fault in the last ``recent`` s) or ``ok``."""
        entry = self._plugins.get(plugin)
        if entry is None:
            return "ok"
        if entry.failed:
            return "failed"
        if entry.last_clock is not None and self._clock() - entry.last_clock < self.recent:
            return "faulting"
        return "ok"

    def degraded(self) -> bool:
        """True while any plugin is ``failed`` or ``faulting``."""
        return any(self.state(name) != "ok" for name in self._plugins)

    def status(self) -> dict[str, dict[str, Any]]:
        """``{plugin: {state, faults, by_hook, last_error, last_hook, last_at, failed}}`` for ``/status``."""
        return {
            name: {"state": self.state(name), "faults": e.faults, "by_hook": dict(e.by_hook),
                   "last_error": e.last_error, "last_hook": e.last_hook, "last_at": e.last_at,
                   "failed": dict(e.failed)}
            for name, e in self._plugins.items()
        }
