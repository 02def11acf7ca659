"""
Default data: the loaded providers and the exchanges they serve.

Nothing here names a provider: :func:`seed_plan` takes the providers, their
codes and the exchange mappings from the loaded providers' specs (and the
config file's ``[exchanges]``, which overrides them exchange by exchange),
i.e. exactly the table the daemon routes with when no database is
configured.

``seed(conn, plan)`` only inserts what is missing, so it can run any number
of times and never undoes an operator's change (a provider switched off, a
backup made primary). ``seed(conn, plan, reset=True)`` also puts the rows it
owns back to the plan. It never deletes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, LiteralString

import psycopg

from mdgate._config import Settings
from mdgate._routing.table import ExchangeRoute, default_table

if TYPE_CHECKING:
    from mdgate._provider import ProviderSpec

__all__ = [
    "EXCHANGE_NAMES",
    "SeedPlan",
    "SeedProvider",
    "SeedResult",
    "installed_plan",
    "seed",
    "seed_plan",
]


@dataclass(frozen=True, slots=True)
class SeedProvider:
    """A default ``providers`` row."""

    name: str
    code: str
    display_name: str
    rate_limit: int | None = None


#: Long names of well-known exchanges (``exchanges.name``); any other exchange
#: is stored under its code.
EXCHANGE_NAMES: Final = {
    "NSE": "National Stock Exchange of India",
    "BSE": "BSE (Bombay Stock Exchange)",
    "NYSE": "New York Stock Exchange",
    "NASDAQ": "Nasdaq Stock Market",
}


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """What :func:`seed` writes: ``providers``, ``exchanges`` (code → name) and mappings."""

    providers: tuple[SeedProvider, ...]
    exchanges: Mapping[str, str]
    routes: tuple[ExchangeRoute, ...]


def seed_plan(specs: Iterable[ProviderSpec], settings: Settings | None = None) -> SeedPlan:
    """
    The seed for the loaded providers: one ``providers`` row per spec (name,
    code, display name), and the mappings of :func:`mdgate._routing.table.default_table`
    (the specs' roles, then ``[exchanges]`` when ``settings`` is given).
    A mapping naming a provider that no spec declares is left out (the
    database refuses a mapping to an unknown provider).
    """
    specs = list(specs)
    table = default_table(settings or Settings(), specs)
    names = {s.name for s in specs}
    routes = tuple(r for rows in table.exchanges.values() for r in rows if r.provider in names)
    exchanges = {r.exchange: EXCHANGE_NAMES.get(r.exchange, r.exchange) for r in routes}
    providers = tuple(SeedProvider(s.name, s.code, s.display_name or s.name) for s in specs)
    return SeedPlan(providers, exchanges, routes)


def installed_plan(settings: Settings) -> SeedPlan:
    """The seed for the providers the installed plugins declare (``MDGATE_LOAD_PLUGINS`` honoured)."""
    from mdgate._providers.registry import load_registry

    registry = load_registry(settings.environ)
    return seed_plan([hooks.spec for hooks in registry.providers.values()], settings)


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


def seed(conn: psycopg.Connection, plan: SeedPlan, *, reset: bool = False) -> SeedResult:
    """
    Insert the plan's providers, exchanges and exchange mappings (one transaction).

    Args:
        conn: a connection to an upgraded database.
        plan: what to write (:func:`seed_plan`, :func:`installed_plan`).
        reset: also put existing rows of the plan back to the plan's values.

    Returns:
        How many rows of each table were inserted (or reset).
    """
    with conn.transaction():
        providers = _run(
            conn,
            _PROVIDERS_RESET if reset else _PROVIDERS_INSERT,
            [(p.name, p.code, p.display_name, p.rate_limit) for p in plan.providers],
        )
        exchanges = _run(
            conn,
            _EXCHANGES_RESET if reset else _EXCHANGES_INSERT,
            list(plan.exchanges.items()),
        )
        mappings = 0
        with conn.cursor() as cur:
            for r in plan.routes:
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
