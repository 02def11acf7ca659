"""
A throw-away PostgreSQL for the routing tests (:mod:`mdgate.testing.postgres`).

One server per test session; every test gets a fresh, empty database. Fault
tests get a server of their own (``pg_factory``) that they may stop and start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.pg._fakes import PLAN

from mdgate.testing.postgres import PostgresServer as PgServer, Pristine, free_port, init_pristine, new_server


@pytest.fixture(scope="session")
def pg_pristine() -> Iterator[Pristine]:
    """An initdb'd cluster directory, copied by every server (initdb runs once)."""
    pristine = init_pristine()
    yield pristine
    pristine.remove()


@pytest.fixture(scope="session")
def pg_server(pg_pristine: Pristine) -> Iterator[PgServer]:
    """The session's PostgreSQL server (never stopped by tests)."""
    server = new_server(pg_pristine)
    yield server
    server.remove()


@pytest.fixture
def pg_factory(pg_pristine: Pristine) -> Iterator[Any]:
    """Make servers of a test's own, which it may stop and start."""
    servers: list[PgServer] = []

    def make() -> PgServer:
        server = new_server(pg_pristine)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.remove()


@pytest.fixture
def empty_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session server."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn)


@pytest.fixture(scope="session")
def _seeded_template(pg_server: PgServer) -> str:
    from mdgate.plugins.pg_routes.migrations import upgrade
    from mdgate.plugins.pg_routes.seed import seed

    dsn = pg_server.create_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        upgrade(conn)
        seed(conn, PLAN)
    return dsn.rsplit("/", 1)[1]


@pytest.fixture
def dsn(pg_server: PgServer, _seeded_template: str) -> Iterator[str]:
    """A fresh database, upgraded and seeded."""
    url = pg_server.create_database(template=_seeded_template)
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def anyio_backend() -> str:
    # psycopg's AsyncConnection runs on asyncio; the daemon uses anyio's asyncio backend.
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never write route caches into the real ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("MDGATE_DATABASE_URL", raising=False)
    with contextlib.suppress(FileNotFoundError):
        monkeypatch.chdir(tmp_path)  # no stray ./mdgate.toml


@pytest.fixture
def unused_dsn() -> str:
    """A DSN nothing listens on."""
    return f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/mdgate"
