"""Developer sessions: tests, lint, typecheck, bench (``nox -s NAME``)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True

PACKAGES = ["-e", ".[dev]", "-e", "plugins/mdgate-yahoo", "-e", "plugins/mdgate-dhan"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole suite: unit, plugin and integration tests (throw-away Redis/PostgreSQL)."""
    session.install(*PACKAGES)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff")
    session.run("ruff", "check", "src", "plugins", "tests", "benchmarks", "noxfile.py")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and both plugins."""
    session.install(*PACKAGES)
    session.run("mypy", "src/mdgate", "plugins/mdgate-yahoo/src", "plugins/mdgate-dhan/src")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Decoder, store, routing and end-to-end benchmarks (loopback only; prints markdown tables)."""
    session.install(*PACKAGES)
    for script in ("bench_yahoo_decode.py", "bench_dhan_decode.py", "bench_redis_store.py",
                   "bench_pg_routes.py"):
        session.run("python", f"benchmarks/{script}")
    # posargs go to the end-to-end run only, e.g. `nox -s bench -- --quick`
    session.run("python", "benchmarks/bench_e2e.py", *session.posargs)
