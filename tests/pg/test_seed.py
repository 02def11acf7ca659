from __future__ import annotations

import psycopg
import pytest
from tests.pg._fakes import DEFAULT_ROUTES, PLAN

from mdgate._routing.table import RouteTable
from mdgate.plugins.pg_routes.migrations import upgrade
from mdgate.plugins.pg_routes.routes import load_route_table, set_exchange_route
from mdgate.plugins.pg_routes.seed import seed

pytestmark = pytest.mark.integration

COUNTS = """
SELECT (SELECT count(*) FROM providers), (SELECT count(*) FROM exchanges),
       (SELECT count(*) FROM exchange_provider_mappings)
"""


def test_seed_twice_same_rows_and_second_inserts_nothing(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn)
        first = seed(conn, PLAN)
        counts = conn.execute(COUNTS).fetchone()
        second = seed(conn, PLAN)
        assert conn.execute(COUNTS).fetchone() == counts == (2, 4, 6)
    assert (first.providers, first.exchanges, first.mappings) == (2, 4, 6)
    assert (second.providers, second.exchanges, second.mappings) == (0, 0, 0)


def test_seed_default_data_matches_the_builtin_routes(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        providers = conn.execute(
            "SELECT name, code, display_name, is_active FROM providers ORDER BY name"
        ).fetchall()
        table = load_route_table(conn)
    assert providers == [("dhan", "DHAN", "Dhan", True), ("yahoo", "YF", "Yahoo Finance", True)]
    assert {p.name for p in PLAN.providers} == {"yahoo", "dhan"}
    assert table.exchanges == RouteTable.build(list(DEFAULT_ROUTES), {}, "x").exchanges
    assert [(r.provider, r.priority, r.primary) for r in table.exchanges["NSE"]] == [
        ("dhan", 0, True),
        ("yahoo", 10, False),
    ]


def test_seed_rerun_keeps_operator_changes_and_reset_restores(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_exchange_route(conn, "NSE", "yahoo", priority=0, primary=True)
        conn.execute("UPDATE providers SET is_active = false WHERE name = 'dhan'")
        seed(conn, PLAN)
        nse = load_route_table(conn).exchanges["NSE"]
        assert [(r.provider, r.primary, r.active) for r in nse] == [
            ("yahoo", True, True),
            ("dhan", False, False),
        ]
        result = seed(conn, PLAN, reset=True)
        assert result.providers == 1 and result.mappings >= 2
        nse = load_route_table(conn).exchanges["NSE"]
        assert [(r.provider, r.priority, r.primary, r.active) for r in nse] == [
            ("dhan", 0, True, True),
            ("yahoo", 10, False, True),
        ]
