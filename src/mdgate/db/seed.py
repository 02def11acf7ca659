"""
Default data: the providers mdgate ships and which exchanges they serve.

``seed(conn)`` only inserts what is missing, so it can run any number of
times and never undoes an operator's change (a provider switched off, a
backup made primary). ``seed(conn, reset=True)`` also puts the rows it owns
back to the defaults. It never deletes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, LiteralString

import psycopg

from mdgate.routing import DEFAULT_EXCHANGES, ExchangeRoute

__all__ = [
    "DEFAULT_EXCHANGE_NAMES",
    "DEFAULT_PROVIDERS",
    "SeedProvider",
    "SeedResult",
    "seed",
]


@dataclass(frozen=True, slots=True)
class SeedProvider:
    """A default ``providers`` row."""

    name: str
    code: str
    display_name: str
    rate_limit: int | None = None


DEFAULT_PROVIDERS: Final = (
    SeedProvider("yahoo", "YF", "Yahoo Finance"),
    SeedProvider("dhan", "DHAN", "Dhan"),
)

DEFAULT_EXCHANGE_NAMES: Final = {
    "NSE": "National Stock Exchange of India",
    "BSE": "BSE (Bombay Stock Exchange)",
    "NYSE": "New York Stock Exchange",
    "NASDAQ": "Nasdaq Stock Market",
}


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What seeding changed (rows inserted or reset) per table."""

    providers: int
    exchanges: int
    mappings: int


_PROVIDERS_INSERT: Final = """
    INSERT INTO providers (name, code, display_name, rate_limit) VALUES (%s, %s, %s, %s)
    ON CONFLICT DO NOTHING
"""
_PROVIDERS_RESET: Final = """
    INSERT INTO providers (name, code, display_name, rate_limit) VALUES (%s, %s, %s, %s)
    ON CONFLICT (name) DO UPDATE
       SET code = EXCLUDED.code, display_name = EXCLUDED.display_name,
           rate_limit = EXCLUDED.rate_limit, is_active = true, updated_at = now()
     WHERE (providers.code, providers.display_name, providers.rate_limit,
            providers.is_active)
           IS DISTINCT FROM
           (EXCLUDED.code, EXCLUDED.display_name, EXCLUDED.rate_limit, true)
"""
_EXCHANGES_INSERT: Final = "INSERT INTO exchanges (code, name) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_EXCHANGES_RESET: Final = """
    INSERT INTO exchanges (code, name) VALUES (%s, %s)
    ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name
     WHERE exchanges.name IS DISTINCT FROM EXCLUDED.name
"""
# A default primary is inserted as primary only when its exchange has none yet.
_MAPPINGS_INSERT: Final = """
    INSERT INTO exchange_provider_mappings
           (provider_id, exchange_id, is_active, is_primary, priority)
    SELECT p.id, e.id, %(active)s,
           %(primary)s AND NOT EXISTS (SELECT 1 FROM exchange_provider_mappings o
                                        WHERE o.exchange_id = e.id AND o.is_primary),
           %(priority)s
      FROM providers p, exchanges e
     WHERE p.name = %(provider)s AND e.code = %(exchange)s
    ON CONFLICT DO NOTHING
"""
_DEMOTE_OTHERS: Final = """
    UPDATE exchange_provider_mappings m SET is_primary = false, updated_at = now()
      FROM exchanges e, providers p
     WHERE m.exchange_id = e.id AND m.provider_id = p.id AND m.is_primary
       AND e.code = %(exchange)s AND p.name <> %(provider)s AND %(primary)s
"""
_MAPPINGS_RESET: Final = """
    INSERT INTO exchange_provider_mappings
           (provider_id, exchange_id, is_active, is_primary, priority)
    SELECT p.id, e.id, %(active)s, %(primary)s, %(priority)s
      FROM providers p, exchanges e
     WHERE p.name = %(provider)s AND e.code = %(exchange)s
    ON CONFLICT (provider_id, exchange_id) DO UPDATE
       SET is_active = EXCLUDED.is_active, is_primary = EXCLUDED.is_primary,
           priority = EXCLUDED.priority, updated_at = now()
     WHERE (exchange_provider_mappings.is_active, exchange_provider_mappings.is_primary,
            exchange_provider_mappings.priority)
           IS DISTINCT FROM (EXCLUDED.is_active, EXCLUDED.is_primary, EXCLUDED.priority)
"""


def _run(conn: psycopg.Connection, sql: LiteralString, rows: list[tuple[object, ...]]) -> int:
    n = 0
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(sql, row)
            n += max(cur.rowcount, 0)
    return n


def seed(
    conn: psycopg.Connection,
    *,
    reset: bool = False,
    routes: tuple[ExchangeRoute, ...] = DEFAULT_EXCHANGES,
) -> SeedResult:
    """
    Insert the default providers, exchanges and exchange mappings (one transaction).

    Args:
        conn: a connection to an upgraded database.
        reset: also put existing default rows back to their default values.
        routes: the exchange mappings to seed.

    Returns:
        How many rows of each table were inserted (or reset).
    """
    with conn.transaction():
        providers = _run(
            conn,
            _PROVIDERS_RESET if reset else _PROVIDERS_INSERT,
            [(p.name, p.code, p.display_name, p.rate_limit) for p in DEFAULT_PROVIDERS],
        )
        exchanges = _run(
            conn,
            _EXCHANGES_RESET if reset else _EXCHANGES_INSERT,
            list(DEFAULT_EXCHANGE_NAMES.items()),
        )
        mappings = 0
        with conn.cursor() as cur:
            for r in routes:
                params = {
                    "provider": r.provider,
                    "exchange": r.exchange,
                    "active": r.active,
                    "primary": r.primary,
                    "priority": r.priority,
                }
                if reset:
                    cur.execute(_DEMOTE_OTHERS, params)
                    cur.execute(_MAPPINGS_RESET, params)
                else:
                    cur.execute(_MAPPINGS_INSERT, params)
                mappings += max(cur.rowcount, 0)
    return SeedResult(providers, exchanges, mappings)
