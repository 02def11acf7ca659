"""
A throw-away PostgreSQL for the routing tests.

One server per test session (``initdb`` into a temporary directory, fsync
off, on a free loopback port); every test gets a fresh, empty database.
Fault tests get a server of their own (``pg_factory``) that they may stop
and start. Running as root (CI containers), the server runs as the
``postgres`` user (or ``nobody``), since PostgreSQL refuses to run as root.

Binaries: ``MDGATE_TEST_PG_BIN``, else the newest
``/usr/lib/postgresql/*/bin``, else ``postgres`` on ``PATH``. Missing
binaries fail the tests; they are not skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest


def _bin_dir() -> Path:
    env = os.environ.get("MDGATE_TEST_PG_BIN")
    if env:
        return Path(env)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for candidate in reversed(versions):
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    pytest.fail("PostgreSQL binaries not found: set MDGATE_TEST_PG_BIN")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_as() -> dict[str, Any]:
    """Popen keyword arguments that drop root privileges, if we have them."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    pytest.fail("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _chown_tree(path: Path, as_user: dict[str, Any]) -> None:
    if not as_user:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, as_user["user"], as_user["group"])
        for name in dirs + files:
            os.chown(os.path.join(root, name), as_user["user"], as_user["group"])


@dataclass
class PgServer:
    """One throw-away PostgreSQL server."""

    bin: Path
    base: Path
    port: int
    as_user: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    _dbs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        assert self.proc is None, "already running"
        log = open(self.base / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-k",
                str(self.base),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ],
            stdout=log,
            stderr=log,
            **self.as_user,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                tail = (self.base / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"postgres exited with {self.proc.returncode}:\n{tail}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail("postgres did not become ready within 30 s")
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected); wait for the exit."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def create_database(self, template: str | None = None) -> str:
        """Create a fresh database and return its DSN."""
        name = f"t{os.getpid()}_{next(self._dbs)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1]
        if self.proc is None:
            return
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _init_cluster(bin_dir: Path, base: Path, as_user: dict[str, Any]) -> None:
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(base / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        **as_user,
    )


@pytest.fixture(scope="session")
def pg_pristine() -> Iterator[tuple[Path, Path, dict[str, Any]]]:
    """An initdb'd cluster directory, copied by every server (initdb runs once)."""
    bin_dir = _bin_dir()
    as_user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="mdgate-pg-"))
    _chown_tree(root, as_user)
    _init_cluster(bin_dir, root, as_user)
    yield bin_dir, root / "data", as_user
    shutil.rmtree(root, ignore_errors=True)


def _new_server(pristine: tuple[Path, Path, dict[str, Any]]) -> PgServer:
    bin_dir, data, as_user = pristine
    base = Path(tempfile.mkdtemp(prefix="mdgate-pg-"))
    shutil.copytree(data, base / "data", symlinks=True)
    os.chmod(base / "data", 0o700)
    _chown_tree(base, as_user)
    server = PgServer(bin_dir, base, _free_port(), as_user)
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server(pg_pristine: tuple[Path, Path, dict[str, Any]]) -> Iterator[PgServer]:
    """The session's PostgreSQL server (never stopped by tests)."""
    server = _new_server(pg_pristine)
    yield server
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def pg_factory(pg_pristine: tuple[Path, Path, dict[str, Any]]) -> Iterator[Any]:
    """Make servers of a test's own, which it may stop and start."""
    servers: list[PgServer] = []

    def make() -> PgServer:
        server = _new_server(pg_pristine)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def empty_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session server."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn)


@pytest.fixture(scope="session")
def _seeded_template(pg_server: PgServer) -> str:
    from mdgate.db.migrations import upgrade
    from mdgate.db.seed import seed

    dsn = pg_server.create_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        upgrade(conn)
        seed(conn)
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
    return f"postgresql://postgres:s3cret@127.0.0.1:{_free_port()}/mdgate"
