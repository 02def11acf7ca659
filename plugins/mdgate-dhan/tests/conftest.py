"""
Fixtures of the Dhan plugin tests.

``pg_dsn`` starts a throw-away PostgreSQL (``initdb`` into a temporary
directory, free loopback port, fsync off) once per session and hands each
test a fresh database with mdgate's schema and default data. Binaries:
``MDGATE_TEST_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``.
Missing binaries fail the test (no skip). As root, the server runs as the
``postgres`` (or ``nobody``) user, since PostgreSQL refuses to run as root.
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
from pathlib import Path
from typing import Any

import psycopg
import pytest

_db_numbers = itertools.count(1)


def _bin_dir() -> Path:
    env = os.environ.get("MDGATE_TEST_PG_BIN")
    if env:
        return Path(env)
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.fail("PostgreSQL binaries not found: set MDGATE_TEST_PG_BIN")
    return found[-1]


def _run_as() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    pytest.fail("running as root without a 'postgres' or 'nobody' user")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throw-away PostgreSQL server; yields the admin DSN."""
    bin_dir, as_user = _bin_dir(), _run_as()
    base = Path(tempfile.mkdtemp(prefix="mdgate-dhan-pg-"))
    if as_user:
        os.chown(base, as_user["user"], as_user["group"])
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
    port = _free_port()
    with open(base / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(base / "data"),
                "-p",
                str(port),
                "-k",
                str(base),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=log,
            stderr=log,
            **as_user,
        )
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail((base / "server.log").read_text(errors="replace")[-2000:])
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("postgres did not start within 30 s")
            time.sleep(0.05)
    try:
        yield dsn
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: str) -> str:
    """A fresh database with mdgate's schema and default providers/exchanges."""
    from mdgate.db.migrations import upgrade
    from mdgate.db.seed import seed

    name = f"dhan_{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        upgrade(conn)
        seed(conn)
    return dsn
