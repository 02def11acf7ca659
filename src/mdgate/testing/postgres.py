"""
A throw-away PostgreSQL server for tests (of mdgate and of plugins).

``initdb`` runs once into a *pristine* directory; every
:class:`PostgresServer` copies it, listens on a free loopback port with
fsync off, and may be stopped and started (fault tests). Running as root
(CI containers), the server runs as the ``postgres`` user (or ``nobody``),
since PostgreSQL refuses to run as root.

Binaries: ``MDGATE_TEST_PG_BIN``, else the newest
``/usr/lib/postgresql/*/bin``, else ``postgres`` on ``PATH``. Missing
binaries raise :class:`RuntimeError` (tests fail; they are not skipped).
"""

from __future__ import annotations

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

__all__ = ["PostgresServer", "Pristine", "free_port", "init_pristine", "new_server"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    raise RuntimeError("PostgreSQL binaries not found: install postgresql or set MDGATE_TEST_PG_BIN")


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
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _chown_tree(path: Path, as_user: dict[str, Any]) -> None:
    if not as_user:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, as_user["user"], as_user["group"])
        for name in dirs + files:
            os.chown(os.path.join(root, name), as_user["user"], as_user["group"])


@dataclass(frozen=True)
class Pristine:
    """An ``initdb``'d cluster directory that servers copy."""

    bin: Path
    data: Path
    as_user: dict[str, Any]

    def remove(self) -> None:
        """Delete the pristine directory."""
        shutil.rmtree(self.data.parent, ignore_errors=True)


def init_pristine() -> Pristine:
    """Run ``initdb`` once into a temporary directory."""
    bin_dir, as_user = _bin_dir(), _run_as()
    root = Path(tempfile.mkdtemp(prefix="mdgate-pg-"))
    _chown_tree(root, as_user)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
         "--no-sync", "-E", "UTF8", "--locale=C"],
        check=True, capture_output=True, **as_user,
    )
    return Pristine(bin_dir, root / "data", as_user)


@dataclass
class PostgresServer:
    """One throw-away PostgreSQL server."""

    bin: Path
    base: Path
    port: int
    as_user: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    _dbs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def datadir(self) -> Path:
        """The server's data directory."""
        return self.base / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        """A DSN for ``dbname`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.proc is not None:
            raise RuntimeError("already running")
        with open(self.base / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-k", str(self.base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=50"],
                stdout=log, stderr=log, **self.as_user,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                tail = (self.base / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{tail}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError("postgres did not become ready within 30 s") from None
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

    def remove(self) -> None:
        """Stop and delete the server's directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

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
        """Drop the database of ``dsn`` (if the server runs)."""
        name = dsn.rsplit("/", 1)[1]
        if self.proc is None:
            return
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_server(pristine: Pristine) -> PostgresServer:
    """Copy ``pristine`` and start a server on a free port."""
    base = Path(tempfile.mkdtemp(prefix="mdgate-pg-"))
    shutil.copytree(pristine.data, base / "data", symlinks=True)
    os.chmod(base / "data", 0o700)
    _chown_tree(base, pristine.as_user)
    server = PostgresServer(pristine.bin, base, free_port(), pristine.as_user)
    server.start()
    return server
