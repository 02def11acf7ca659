"""
Fixtures of the Dhan plugin tests.

``pg_dsn`` starts a throw-away PostgreSQL once per session (mdgate's public
:mod:`mdgate.testing.postgres`) and hands each test a fresh database with
mdgate's schema and default data. Missing binaries fail the test (no skip).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from mdgate.testing.postgres import PostgresServer, init_pristine, new_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server."""
    pristine = init_pristine()
    server = new_server(pristine)
    try:
        yield server
    finally:
        server.remove()
        pristine.remove()


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> str:
    """A fresh database with mdgate's schema and default providers/exchanges."""
    from mdgate._config import Settings
    from mdgate.plugins.pg_routes.migrations import upgrade
    from mdgate.plugins.pg_routes.seed import installed_plan, seed

    dsn = pg_server.create_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        upgrade(conn)
        seed(conn, installed_plan(Settings()))
    return dsn
