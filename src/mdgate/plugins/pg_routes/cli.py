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

from typing import Final

import click

__all__ = ["COMMANDS", "add_commands"]

#: name -> (the command, ``module:attribute``; its short help). A command's module is imported
#: when it is used, not to list it (tests/unit/test_instrument_footprint.py checks they agree).
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "db": ("mdgate.plugins.pg_routes.cli_db:db", "create, migrate and seed the routing database"),
    "routes": ("mdgate.plugins.pg_routes.cli_routes:routes", "show (or set) exchange -> provider routes"),
    "route": ("mdgate.plugins.pg_routes.cli_routes:route", "explain how an instrument is routed"),
    "providers": ("mdgate.plugins.pg_routes.cli_providers:providers",
                  "show (add, change) providers in the database"),
    "instruments": ("mdgate.plugins.pg_routes.cli_instruments:instruments",
                    "explicit instrument -> provider code mappings"),
}


def add_commands(cli: click.Group) -> None:
    """Add ``db``, ``routes``, ``route``, ``providers`` and ``instruments`` to ``cli``."""
    from mdgate._cli.root import LazyCommand

    for name, (target, short_help) in COMMANDS.items():
        cli.add_command(LazyCommand(name, target, short_help))
