"""
The database commands: ``mdgate db``, ``mdgate routes``, ``mdgate route``,
``mdgate providers``, ``mdgate instruments`` (one module each: ``cli_db``,
``cli_routes``, ``cli_providers``, ``cli_instruments``; shared pieces in
``cli_common``).

A failure is an exception the core turns into one ``mdgate: error: ...``
line and its exit code (:mod:`mdgate._cli.errors`): 1 an operational failure
(database unreachable, unknown provider or exchange, no route), 2 a
configuration or usage problem. Database URLs are shown with the password
masked. Every command that prints data takes ``--json``.
"""

from __future__ import annotations

import click

__all__ = ["add_commands"]


def add_commands(cli: click.Group) -> None:
    """Add ``db``, ``routes``, ``route``, ``providers`` and ``instruments`` to ``cli``."""
    from mdgate.plugins.pg_routes.cli_db import db
    from mdgate.plugins.pg_routes.cli_instruments import instruments
    from mdgate.plugins.pg_routes.cli_providers import providers
    from mdgate.plugins.pg_routes.cli_routes import route, routes

    for command in (db, routes, route, providers, instruments):
        cli.add_command(command)
