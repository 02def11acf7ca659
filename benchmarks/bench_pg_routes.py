"""
Benchmark: importing explicit instrument mappings and loading the route table.

Needs a PostgreSQL server (trust auth); creates and drops a scratch database.

    .venv/bin/python benchmarks/bench_pg_routes.py [--dsn DSN] [--rows 100000]

Without --dsn (or $MDGATE_BENCH_PG_DSN) it starts a throw-away PostgreSQL on a free
loopback port (mdgate.testing.postgres) and removes it afterwards.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from mdgate._routing.table import InstrumentMapping
from mdgate.plugins.pg_routes.instruments import upsert_instrument_mappings
from mdgate.plugins.pg_routes.migrations import upgrade
from mdgate.plugins.pg_routes.routes import (
    CODE_ROWS_SQL,
    EXCHANGE_ROWS_SQL,
    build_route_table,
    load_route_table,
)
from mdgate.plugins.pg_routes.seed import seed


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("MDGATE_BENCH_PG_DSN"),
                        help="an admin DSN of an existing server (default: a throw-away one)")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if args.dsn:
        run(args.dsn, args.rows)
        return
    from mdgate.testing.postgres import init_pristine, new_server

    pristine = init_pristine()
    server = new_server(pristine)
    try:
        run(server.dsn(), args.rows)
    finally:
        server.remove()
        pristine.remove()


def run(admin_dsn: str, n_rows: int) -> None:
    """Import ``n_rows`` mappings into a fresh database on ``admin_dsn``'s server; print a table."""

    name = f"mdgate_bench_{os.getpid()}"
    admin = psycopg.connect(admin_dsn, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            upgrade(conn)
            seed(conn)
        half = n_rows // 2
        mappings = [
            InstrumentMapping(
                f"{'NSE' if i < half else 'BSE'}:SYM{i}",
                "dhan",
                f"{'NSE_EQ' if i < half else 'BSE_EQ'}:{i}",
                {
                    "segment": "NSE_EQ" if i < half else "BSE_EQ",
                    "security_id": str(i),
                    "tick_size": "0.05",
                    "lot_size": "1",
                },
            )
            for i in range(n_rows)
        ]
        rows: list[tuple[str, float, int]] = []
        t, n = _timed(lambda: upsert_instrument_mappings(dsn, mappings))
        rows.append(("upsert_instrument_mappings, empty tables", t, n))
        t, n = _timed(lambda: upsert_instrument_mappings(dsn, mappings))
        rows.append(("upsert_instrument_mappings, same rows again", t, n))
        with psycopg.connect(dsn, autocommit=True) as conn:
            t, table = _timed(lambda: load_route_table(conn))
            rows.append(("load_route_table (query + build)", t, len(table.codes)))
            ex = conn.execute(EXCHANGE_ROWS_SQL).fetchall()
            codes = conn.execute(CODE_ROWS_SQL).fetchall()
        t, table = _timed(lambda: build_route_table(ex, codes))
        rows.append(("build_route_table (pure, no I/O)", t, len(table.codes)))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    print(
        f"PostgreSQL routing, {n_rows:,} mappings "
        f"(Python {platform.python_version()}, {os.cpu_count()} CPUs)\n"
    )
    print("| operation | rows | seconds | rows/s |")
    print("| --- | ---: | ---: | ---: |")
    for label, secs, n in rows:
        print(f"| {label} | {n:,} | {secs:.2f} | {n / secs:,.0f} |")


if __name__ == "__main__":
    main()
