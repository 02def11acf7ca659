"""
A structlog logger that imports structlog on its first use.

For the few modules the command line imports before it knows what it will run (the plugin
registry, its fault ledger, the global hook calls): importing structlog costs tens of
milliseconds (it brings asyncio), which ``mdgate --help`` should not pay. Everything else uses
``structlog.get_logger`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LazyLogger", "before_first_log"]

_before: Callable[[], None] | None = None
_used = False


def before_first_log(fn: Callable[[], None]) -> None:
    """
    Run ``fn`` (the command line's logging set-up) before the first lazy logger is used, or
    now if one was used already: nothing is logged unconfigured, and a command that logs
    nothing (``mdgate --help``) configures nothing. The last ``fn`` given is the one run.
    """
    global _before
    if _used:
        fn()
    else:
        _before = fn


class LazyLogger:
    """``structlog.get_logger(name)``, created when a method of it is first used."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._log: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._log is None:
            global _used, _before
            _used = True
            if _before is not None:
                fn, _before = _before, None
                fn()
            import structlog

            self._log = structlog.get_logger(self._name)
        return getattr(self._log, attr)
