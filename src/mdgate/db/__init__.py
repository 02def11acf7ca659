"""
PostgreSQL routing tables: schema migrations, seed data, repository
functions, the database CLI commands and the live :class:`PgRouteSource`.

Public entry points:

* :func:`mdgate.db.instruments.upsert_instrument_mappings`: bulk import of
  explicit provider codes (used by provider importers such as Dhan's);
* :func:`mdgate.db.routes.load_route_table`: read the tables into a
  :class:`~mdgate.routing.RouteTable`;
* :func:`mdgate.db.migrations.upgrade` and :func:`mdgate.db.seed.seed`;
* :class:`mdgate.db.source.PgRouteSource`: the daemon's route source.
"""

from __future__ import annotations

from mdgate.db.errors import DatabaseUnavailable, SchemaError, UnknownNameError
from mdgate.db.instruments import upsert_instrument_mappings
from mdgate.db.migrations import SCHEMA_VERSION, upgrade
from mdgate.db.routes import load_route_table
from mdgate.db.seed import seed
from mdgate.db.source import PgRouteSource

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseUnavailable",
    "PgRouteSource",
    "SchemaError",
    "UnknownNameError",
    "load_route_table",
    "seed",
    "upgrade",
    "upsert_instrument_mappings",
]
