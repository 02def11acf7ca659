"""The ``providers`` table: list, add and change providers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import psycopg

from mdgate.plugins.pg_routes.errors import UnknownNameError

__all__ = ["ProviderRow", "add_provider", "list_providers", "set_provider"]

_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """One row of ``providers``."""

    name: str
    code: str
    display_name: str
    rate_limit: int | None
    active: bool


def list_providers(conn: psycopg.Connection) -> list[ProviderRow]:
    """All providers, by name."""
    rows = conn.execute(
        "SELECT name, code, display_name, rate_limit, is_active FROM providers ORDER BY name"
    ).fetchall()
    return [ProviderRow(*row) for row in rows]


def add_provider(
    conn: psycopg.Connection,
    name: str,
    code: str,
    *,
    display_name: str = "",
    rate_limit: int | None = None,
) -> None:
    """
    Add a provider (for a third-party plugin; ``name`` and ``code`` as its ProviderSpec says).

    Raises:
        ValueError: a malformed name or code, or one already taken.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"bad provider name {name!r}: lower-case letters, digits and _")
    if not code.strip():
        raise ValueError("the provider code must not be empty")
    if rate_limit is not None and rate_limit <= 0:
        raise ValueError("--rate-limit must be positive")
    with conn.transaction():
        taken = conn.execute(
            "SELECT name, code FROM providers WHERE name = %s OR code = %s", (name, code)
        ).fetchone()
        if taken is not None:
            raise ValueError(f"provider {taken[0]!r} (code {taken[1]!r}) already exists")
        conn.execute(
            "INSERT INTO providers (name, code, display_name, rate_limit) VALUES (%s, %s, %s, %s)",
            (name, code, display_name, rate_limit),
        )


def set_provider(
    conn: psycopg.Connection,
    name: str,
    *,
    active: bool | None = None,
    rate_limit: int | None = None,
    display_name: str | None = None,
) -> ProviderRow:
    """
    Change a provider's ``is_active``, ``rate_limit`` or ``display_name`` (``None``: keep).

    Raises:
        UnknownNameError: no such provider.
    """
    row = conn.execute(
        """
        UPDATE providers
           SET is_active = coalesce(%(active)s, is_active),
               rate_limit = coalesce(%(rate_limit)s, rate_limit),
               display_name = coalesce(%(display_name)s, display_name),
               updated_at = now()
         WHERE name = %(name)s
        RETURNING name, code, display_name, rate_limit, is_active
        """,
        {"name": name, "active": active, "rate_limit": rate_limit, "display_name": display_name},
    ).fetchone()
    if row is None:
        known = [p.name for p in list_providers(conn)]
        raise UnknownNameError("provider", [name], known)
    return ProviderRow(*row)
