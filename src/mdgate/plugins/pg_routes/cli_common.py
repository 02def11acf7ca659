"""
What the database commands share: ``--database-url``, the connection (schema
checked, driver errors turned into one-line mdgate errors), the registry,
``--json`` output.

Nothing here imports psycopg at module level: ``mdgate --help`` lists these
commands without loading the database driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mdgate._cli.context import NO_DATABASE, CommandContext
from mdgate._errors import MdgateError
from mdgate.plugins.pg_routes._output import out, table

if TYPE_CHECKING:
    import psycopg

    from mdgate._config import Settings
    from mdgate._providers.registry import Registry

__all__ = [
    "DatabaseError",
    "database",
    "database_url_option",
    "dsn",
    "emit",
    "registry",
    "yes",
]

F = TypeVar("F", bound=Callable[..., Any])


class DatabaseError(MdgateError):
    """The database answered with an error (exit code 1); the message is its first line."""


def database_url_option(fn: F) -> F:
    """``--database-url URL`` (default: ``[database] url`` or ``MDGATE_DATABASE_URL``)."""
    return click.option(
        "--database-url", metavar="URL",
        help="PostgreSQL URL (default: [database] url or MDGATE_DATABASE_URL)",
    )(fn)


def registry(settings: Settings) -> Registry:
    """The plugins' registry (the providers installed here)."""
    from mdgate._providers.registry import load_registry

    return load_registry(settings.environ)


def dsn(obj: CommandContext, url: str | None) -> str | None:
    """``--database-url``, else the settings' ``[database] url`` (``MDGATE_DATABASE_URL`` included)."""
    if url:
        return url
    configured = obj.settings.database.url
    return configured.reveal() if configured else None


@contextmanager
def database(
    obj: CommandContext, url: str | None, *, check_schema: bool = True
) -> Iterator[tuple[psycopg.Connection, str]]:
    """
    A connection (autocommit) to the routing database and its URL.

    Raises:
        click.UsageError: no database configured.
        SchemaError: ``check_schema`` and the schema is behind this mdgate.
        DatabaseUnavailable: the database cannot be reached.
        DatabaseError: the database answered a statement with an error.
    """
    import psycopg

    from mdgate.plugins.pg_routes._connect import connect
    from mdgate.plugins.pg_routes.errors import SchemaError
    from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, applied_migrations

    found = dsn(obj, url)
    if found is None:
        raise click.UsageError(NO_DATABASE)
    try:
        with connect(found, obj.settings.database.connect_timeout, autocommit=True) as conn:
            if check_schema:
                applied = applied_migrations(conn)
                version = applied[-1].version if applied else 0
                if version < SCHEMA_VERSION:
                    raise SchemaError(version, SCHEMA_VERSION)
            yield conn, found
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines()
        raise DatabaseError(f"database error: {lines[0] if lines else type(exc).__name__}") from None


def yes(flag: bool) -> str:
    """``yes`` / ``no``."""
    return "yes" if flag else "no"


def emit(
    as_json: bool,
    document: object,
    lines: Sequence[str] = (),
    headers: Sequence[str] = (),
    rows: Sequence[Sequence[object]] = (),
) -> None:
    """
    Print ``document`` as JSON (``--json``), else ``lines`` then the table of
    ``headers`` and ``rows`` (indented two spaces), when ``headers`` are given.
    """
    if as_json:
        out(json.dumps(document, indent=2, default=str))
        return
    for line in lines:
        out(line)
    if headers:
        for line in table(headers, rows, "  "):
            out(line)
