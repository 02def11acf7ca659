"""
The exchange → provider tables: load them into a :class:`RouteTable`, list
and change them.

``build_route_table`` is pure (rows in, table out) so that the synchronous
CLI and the asynchronous :class:`~mdgate.plugins.pg_routes.source.PgRouteSource` share it.
Rules when building:

* a mapping of an inactive provider becomes an inactive row;
* an explicit instrument code is skipped (and reported once per reason via
  structlog) when its provider is inactive, its instrument name is not
  ``EXCHANGE:SYMBOL``, or its provider does not serve the instrument's
  exchange (the code could never be used);
* the instrument of a code skipped only because its provider is inactive
  stays *listed* (``RouteTable.listed``): switching a provider off does not
  make its instruments unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import psycopg
import structlog

from mdgate._errors import InstrumentError
from mdgate._model import parse_instrument
from mdgate._routing.table import ExchangeRoute, RouteTable
from mdgate.plugins.pg_routes.errors import UnknownNameError

__all__ = [
    "CODE_ROWS_SQL",
    "EXCHANGE_ROWS_SQL",
    "ExchangeRouteRow",
    "SetRouteResult",
    "build_route_table",
    "list_exchange_routes",
    "load_route_table",
    "set_exchange_route",
]

log = structlog.get_logger(__name__)

#: (exchange, provider, priority, is_primary, mapping active, provider active)
EXCHANGE_ROWS_SQL: Final = """
    SELECT e.code, p.name, m.priority, m.is_primary, m.is_active, p.is_active
      FROM exchange_provider_mappings m
      JOIN providers p ON p.id = m.provider_id
      JOIN exchanges e ON e.id = m.exchange_id
"""
#: (provider, provider active, instrument, code)
CODE_ROWS_SQL: Final = """
    SELECT p.name, p.is_active, i.name, m.provider_instrument_search_code
      FROM provider_instrument_mappings m
      JOIN providers p ON p.id = m.provider_id
      JOIN instruments i ON i.id = m.instrument_id
"""

ExchangeRow = tuple[str, str, int, bool, bool, bool]
CodeRow = tuple[str, bool, str, str]

_EXAMPLES: Final = 5


def build_route_table(
    exchange_rows: Iterable[ExchangeRow],
    code_rows: Iterable[CodeRow],
    source: str = "postgresql",
) -> RouteTable:
    """
    Build a :class:`RouteTable` from ``EXCHANGE_ROWS_SQL`` and ``CODE_ROWS_SQL`` rows.

    Bad code rows are skipped and logged (``route_rows_skipped``, one line per reason).
    """
    routes: list[ExchangeRoute] = []
    served: set[tuple[str, str]] = set()
    for exchange, provider, priority, primary, active, provider_active in exchange_rows:
        routes.append(ExchangeRoute(exchange, provider, priority, primary, active and provider_active))
        served.add((provider, exchange))
    codes: dict[tuple[str, str], str] = {}
    listed: set[str] = set()
    skipped: dict[str, list[str]] = {}
    for provider, provider_active, instrument, code in code_rows:
        reason: str | None = None
        try:
            name, exchange, _ = parse_instrument(instrument)
        except InstrumentError:
            reason = "bad instrument name"
        else:
            if not provider_active:
                reason = "provider inactive"
                if (provider, exchange) in served:
                    listed.add(name)
            elif (provider, exchange) not in served:
                reason = "provider does not serve the exchange"
        if reason is not None:
            skipped.setdefault(reason, []).append(f"{instrument} -> {provider}:{code}")
            continue
        codes[(provider, name)] = code
    for reason, rows in skipped.items():
        log.warning(
            "route_rows_skipped",
            reason=reason,
            count=len(rows),
            examples=rows[:_EXAMPLES],
        )
    return RouteTable.build(routes, codes, source, listed)


def load_route_table(conn: psycopg.Connection) -> RouteTable:
    """Read the routing tables (one consistent snapshot) into a :class:`RouteTable`."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        exchange_rows = conn.execute(EXCHANGE_ROWS_SQL).fetchall()
        code_rows = conn.execute(CODE_ROWS_SQL).fetchall()
    return build_route_table(exchange_rows, code_rows)


@dataclass(frozen=True, slots=True)
class ExchangeRouteRow:
    """One exchange mapping as ``mdgate routes`` shows it."""

    exchange: str
    provider: str
    provider_code: str
    priority: int
    primary: bool
    active: bool
    provider_active: bool


def list_exchange_routes(conn: psycopg.Connection) -> list[ExchangeRouteRow]:
    """All exchange mappings, by exchange then priority."""
    rows = conn.execute(
        """
        SELECT e.code, p.name, p.code, m.priority, m.is_primary, m.is_active,
               p.is_active
          FROM exchange_provider_mappings m
          JOIN providers p ON p.id = m.provider_id
          JOIN exchanges e ON e.id = m.exchange_id
         ORDER BY e.code, m.priority, NOT m.is_primary, p.name
        """
    ).fetchall()
    return [ExchangeRouteRow(*row) for row in rows]


def provider_ids(conn: psycopg.Connection) -> dict[str, int]:
    """``providers.name`` → id."""
    return {name: pid for pid, name in conn.execute("SELECT id, name FROM providers")}


def exchange_ids(conn: psycopg.Connection) -> dict[str, int]:
    """``exchanges.code`` → id."""
    return {code: eid for eid, code in conn.execute("SELECT id, code FROM exchanges")}


@dataclass(frozen=True, slots=True)
class SetRouteResult:
    """What ``set_exchange_route`` did."""

    created: bool
    exchange_created: bool
    demoted: tuple[str, ...]


def set_exchange_route(
    conn: psycopg.Connection,
    exchange: str,
    provider: str,
    *,
    priority: int | None = None,
    primary: bool = False,
    active: bool = True,
    create_exchange: bool = False,
) -> SetRouteResult:
    """
    Create or replace the mapping ``exchange`` → ``provider`` (one transaction).

    Making a provider primary demotes the exchange's previous primary.
    ``priority=None`` keeps an existing row's priority (0 for a new row).

    Raises:
        UnknownNameError: no such provider, or no such exchange and not
            ``create_exchange``.
    """
    exchange = exchange.strip().upper()
    with conn.transaction():
        pids = provider_ids(conn)
        if provider not in pids:
            raise UnknownNameError("provider", [provider], sorted(pids))
        eids = exchange_ids(conn)
        exchange_created = False
        if exchange not in eids:
            if not create_exchange:
                raise UnknownNameError("exchange", [exchange], sorted(eids))
            row = conn.execute(
                "INSERT INTO exchanges (code, name) VALUES (%s, %s) RETURNING id",
                (exchange, exchange),
            ).fetchone()
            assert row is not None
            eids[exchange] = row[0]
            exchange_created = True
        pid, eid = pids[provider], eids[exchange]
        demoted: tuple[str, ...] = ()
        if primary:
            demoted = tuple(
                name
                for (name,) in conn.execute(
                    """
                    UPDATE exchange_provider_mappings m
                       SET is_primary = false, updated_at = now()
                      FROM providers p
                     WHERE p.id = m.provider_id AND m.exchange_id = %s
                       AND m.provider_id <> %s AND m.is_primary
                    RETURNING p.name
                    """,
                    (eid, pid),
                )
            )
        row = conn.execute(
            """
            INSERT INTO exchange_provider_mappings
                   (provider_id, exchange_id, is_active, is_primary, priority)
            VALUES (%(pid)s, %(eid)s, %(active)s, %(primary)s,
                    coalesce(%(priority)s, 0))
            ON CONFLICT (provider_id, exchange_id) DO UPDATE
               SET is_active = EXCLUDED.is_active, is_primary = EXCLUDED.is_primary,
                   priority = coalesce(%(priority)s,
                                       exchange_provider_mappings.priority),
                   updated_at = now()
            RETURNING (xmax = 0)
            """,
            {
                "pid": pid,
                "eid": eid,
                "active": active,
                "primary": primary,
                "priority": priority,
            },
        ).fetchone()
        created = bool(row and row[0])
    return SetRouteResult(created, exchange_created, demoted)
