"""
The PostgreSQL routing plugin (built in): a live route source when
``[database] url`` (or ``MDGATE_DATABASE_URL``) is set, and the ``db``,
``routes``, ``route`` and ``instruments`` commands. Hook implementations
only; the work is in :mod:`mdgate.plugins.pg_routes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdgate.hookspecs import hookimpl

if TYPE_CHECKING:
    import click

    from mdgate._config import Settings
    from mdgate._routing.table import RouteSource


@hookimpl
def mdgate_route_source(settings: Settings) -> RouteSource | None:
    """Routes from PostgreSQL when a database URL is configured."""
    if settings.database.url is None:
        return None
    from mdgate.plugins.pg_routes.source import PgRouteSource

    return PgRouteSource(settings)


@hookimpl
def mdgate_add_commands(cli: click.Group) -> None:
    """Add the database and routing commands."""
    from mdgate.plugins.pg_routes.cli import add_commands

    add_commands(cli)
