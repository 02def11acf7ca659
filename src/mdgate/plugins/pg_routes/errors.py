"""
Errors of the PostgreSQL routing package.

::

    MdgateError
    ├── RoutingError
    │   └── DatabaseUnavailable   the database cannot be reached (or refused us)
    ├── SchemaError               the schema is missing or behind this mdgate
    └── UnknownNameError          no such provider / exchange / instrument row
"""

from __future__ import annotations

from mdgate._errors import MdgateError, RoutingError

__all__ = ["DatabaseUnavailable", "SchemaError", "UnknownNameError"]


class DatabaseUnavailable(RoutingError):
    """The database cannot be reached; the message names it, password masked."""


class SchemaError(MdgateError):
    """The schema is missing or older than this mdgate needs."""

    def __init__(self, current: int, needed: int) -> None:
        self.current = current
        self.needed = needed
        super().__init__(
            f"schema is at version {current}, this mdgate needs {needed}: run `mdgate db upgrade`"
        )


class UnknownNameError(MdgateError):
    """A provider, exchange or instrument named on input is not in the database."""

    def __init__(self, kind: str, names: list[str], known: list[str]) -> None:
        self.kind = kind
        self.names = names
        listed = ", ".join(repr(n) for n in names)
        hint = f" (known: {', '.join(known)})" if known else f" (no {kind}s yet)"
        super().__init__(f"unknown {kind} {listed}{hint}")
