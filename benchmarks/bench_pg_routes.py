"""
Benchmark: importing explicit instrument mappings and loading the route table.

Needs a PostgreSQL server (trust auth); creates and drops a scratch database.

    .venv/bin/python benchmarks/bench_pg_routes.py [--dsn DSN] [--rows 100000]

DSN defaults to $MDGATE_BENCH_PG_DSN, else postgresql://postgres@127.0.0.1:5432/postgres.

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

from mdgate.db.instruments import upsert_instrument_mappings
from mdgate.db.migrations import upgrade
from mdgate.db.routes import CODE_ROWS_SQL, EXCHANGE_ROWS_SQL, build_route_table, load_route_table
from mdgate.db.seed import seed
from mdgate.routing import InstrumentMapping


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("MDGATE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    name = f"mdgate_bench_{os.getpid()}"
    admin = psycopg.connect(args.dsn, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = args.dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            upgrade(conn)
            seed(conn)
        half = args.rows // 2
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
            for i in range(args.rows)
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
        f"PostgreSQL routing, {args.rows:,} mappings "
        f"(Python {platform.python_version()}, {os.cpu_count()} CPUs)\n"
    )
    print("| operation | rows | seconds | rows/s |")
    print("| --- | ---: | ---: | ---: |")
    for label, secs, n in rows:
        print(f"| {label} | {n:,} | {secs:.2f} | {n / secs:,.0f} |")


if __name__ == "__main__":
    main()
