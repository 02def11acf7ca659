"""
Explicit instrument → provider code mappings (``provider_instrument_mappings``).

:func:`upsert_instrument_mappings` is the entry point for importers (the
Dhan scrip master, generic CSV files): it creates ``instruments`` rows as
needed and upserts the mappings, with the provider's extra fields, in one
transaction, through ``COPY`` into a temporary table (about 100k rows in a
few seconds).

Known extra keys fill typed columns (``segment``, ``security_id``,
``tick_size``, ``lot_size``); every extra key is also kept in the ``extra``
jsonb column.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import psycopg
import structlog

from mdgate._errors import InstrumentError, MdgateError
from mdgate._model import parse_instrument
from mdgate._routing.table import InstrumentMapping
from mdgate.plugins.pg_routes._connect import connect
from mdgate.plugins.pg_routes.errors import UnknownNameError
from mdgate.plugins.pg_routes.routes import exchange_ids, provider_ids

__all__ = [
    "CsvImportError",
    "InstrumentRow",
    "list_instrument_mappings",
    "read_csv_mappings",
    "store_instrument_mappings",
    "upsert_instrument_mappings",
]

log = structlog.get_logger(__name__)


class CsvImportError(MdgateError):
    """A CSV file of mappings is malformed (names the file and line)."""


_TEMP_TABLE: Final = """
CREATE TEMP TABLE mdgate_import (
    provider_id integer, exchange_id integer, symbol text, name text, code text,
    segment text, security_id text, tick_size numeric, lot_size integer, extra jsonb
) ON COMMIT DROP
"""
_COPY: Final = """
COPY mdgate_import (provider_id, exchange_id, symbol, name, code,
                    segment, security_id, tick_size, lot_size, extra) FROM STDIN
"""
_INSERT_INSTRUMENTS: Final = """
INSERT INTO instruments (exchange_id, symbol, name)
SELECT DISTINCT t.exchange_id, t.symbol, t.name FROM mdgate_import t
 WHERE NOT EXISTS (SELECT 1 FROM instruments i WHERE i.name = t.name)
ON CONFLICT DO NOTHING
"""
# A code moving to another instrument: drop its old holder first so that
# (provider, code) stays unique.
_DROP_STALE: Final = """
DELETE FROM provider_instrument_mappings m
 USING mdgate_import t JOIN instruments i ON i.name = t.name
 WHERE m.provider_id = t.provider_id AND m.provider_instrument_search_code = t.code
   AND m.instrument_id <> i.id
"""
_UPSERT: Final = """
INSERT INTO provider_instrument_mappings
       (provider_id, instrument_id, provider_instrument_search_code,
        segment, security_id, tick_size, lot_size, extra)
SELECT t.provider_id, i.id, t.code, t.segment, t.security_id, t.tick_size,
       t.lot_size, t.extra
  FROM mdgate_import t JOIN instruments i ON i.name = t.name
ON CONFLICT (provider_id, instrument_id) DO UPDATE
   SET provider_instrument_search_code = EXCLUDED.provider_instrument_search_code,
       segment = EXCLUDED.segment, security_id = EXCLUDED.security_id,
       tick_size = EXCLUDED.tick_size, lot_size = EXCLUDED.lot_size,
       extra = EXCLUDED.extra, updated_at = now()
 WHERE (provider_instrument_mappings.provider_instrument_search_code,
        provider_instrument_mappings.segment, provider_instrument_mappings.security_id,
        provider_instrument_mappings.tick_size, provider_instrument_mappings.lot_size,
        provider_instrument_mappings.extra)
       IS DISTINCT FROM
       (EXCLUDED.provider_instrument_search_code, EXCLUDED.segment, EXCLUDED.security_id,
        EXCLUDED.tick_size, EXCLUDED.lot_size, EXCLUDED.extra)
"""


def _decimal(value: str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _int(value: str | None) -> int | None:
    d = _decimal(value)
    if d is None or d != d.to_integral_value() or abs(d) > 2**31 - 1:
        return None
    return int(d)


def _dedupe(
    mappings: Sequence[InstrumentMapping],
) -> list[tuple[InstrumentMapping, str, str, str]]:
    # Validate names; keep the last mapping per (provider, instrument) and per
    # (provider, code).
    by_instrument: dict[tuple[str, str], tuple[InstrumentMapping, str, str, str]] = {}
    for m in mappings:
        if not m.code:
            raise InstrumentError(m.instrument, f"empty {m.provider} code")
        name, exchange, symbol = parse_instrument(m.instrument)
        key = (m.provider, name)
        by_instrument.pop(key, None)  # re-insert so the latest position wins below
        by_instrument[key] = (m, name, exchange, symbol)
    by_code: dict[tuple[str, str], tuple[InstrumentMapping, str, str, str]] = {}
    for row in by_instrument.values():
        by_code.pop((row[0].provider, row[0].code), None)
        by_code[(row[0].provider, row[0].code)] = row
    dropped = len(mappings) - len(by_code)
    if dropped:
        log.warning(
            "instrument_mappings_duplicates_dropped",
            count=dropped,
            reason="same (provider, instrument) or (provider, code): last one wins",
        )
    return list(by_code.values())


def store_instrument_mappings(conn: psycopg.Connection, mappings: Sequence[InstrumentMapping]) -> int:
    """
    Upsert ``mappings`` through ``conn`` in one transaction.

    See :func:`upsert_instrument_mappings`.

    Returns:
        The number of mappings now stored (after de-duplication), changed or not.
    """
    rows = _dedupe(mappings)
    if not rows:
        return 0
    with conn.transaction():
        pids = provider_ids(conn)
        eids = exchange_ids(conn)
        bad_providers = sorted({m.provider for m, *_ in rows} - pids.keys())
        if bad_providers:
            raise UnknownNameError("provider", bad_providers, sorted(pids))
        bad_exchanges = sorted({ex for _, _, ex, _ in rows} - eids.keys())
        if bad_exchanges:
            raise UnknownNameError("exchange", bad_exchanges, sorted(eids))
        conn.execute(_TEMP_TABLE)
        with conn.cursor() as cur:
            with cur.copy(_COPY) as copy:
                for m, name, exchange, symbol in rows:
                    extra: Mapping[str, str] = m.extra
                    copy.write_row(
                        (
                            pids[m.provider],
                            eids[exchange],
                            symbol,
                            name,
                            m.code,
                            extra.get("segment") or None,
                            extra.get("security_id") or None,
                            _decimal(extra.get("tick_size")),
                            _int(extra.get("lot_size")),
                            json.dumps(dict(extra), separators=(",", ":")),
                        )
                    )
            cur.execute("ANALYZE mdgate_import")
            cur.execute(_INSERT_INSTRUMENTS)
            cur.execute(_DROP_STALE)
            moved = max(cur.rowcount, 0)
            cur.execute(_UPSERT)
            changed = max(cur.rowcount, 0)
    log.info("instrument_mappings_stored", count=len(rows), changed=changed, moved=moved)
    return len(rows)


def upsert_instrument_mappings(dsn: str, mappings: Sequence[InstrumentMapping]) -> int:
    """
    Create instruments as needed and upsert their provider codes, in one transaction.

    Args:
        dsn: PostgreSQL connection string (schema upgraded and seeded).
        mappings: e.g. ``InstrumentMapping("NSE:RELIANCE", "dhan", "NSE_EQ:2885",
            {"segment": "NSE_EQ", "security_id": "2885", "tick_size": "0.05",
            "lot_size": "1"})``. Later duplicates of the same (provider,
            instrument) or (provider, code) win.

    Returns:
        The number of mappings now stored (after de-duplication); rows that
        were already identical count too but are not rewritten.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
        UnknownNameError: a provider or exchange is not in the database
            (nothing is stored).
        InstrumentError: a name is not ``EXCHANGE:SYMBOL`` or a code is empty.
    """
    with connect(dsn, autocommit=True) as conn:
        return store_instrument_mappings(conn, mappings)


@dataclass(frozen=True, slots=True)
class InstrumentRow:
    """One row of ``mdgate instruments list``."""

    instrument: str
    provider: str
    code: str
    extra: Mapping[str, Any]


def list_instrument_mappings(
    conn: psycopg.Connection,
    *,
    provider: str | None = None,
    exchange: str | None = None,
    limit: int | None = None,
) -> list[InstrumentRow]:
    """Explicit mappings, by instrument then provider, optionally filtered."""
    rows = conn.execute(
        """
        SELECT i.name, p.name, m.provider_instrument_search_code, m.extra
          FROM provider_instrument_mappings m
          JOIN providers p ON p.id = m.provider_id
          JOIN instruments i ON i.id = m.instrument_id
          JOIN exchanges e ON e.id = i.exchange_id
         WHERE (%(provider)s::text IS NULL OR p.name = %(provider)s)
           AND (%(exchange)s::text IS NULL OR e.code = %(exchange)s)
         ORDER BY i.name, p.name
         LIMIT %(limit)s
        """,
        {
            "provider": provider,
            "exchange": exchange.upper() if exchange else None,
            "limit": limit,
        },
    ).fetchall()
    return [InstrumentRow(*row) for row in rows]


def read_csv_mappings(path: str | Path, provider: str) -> list[InstrumentMapping]:
    """
    Read a CSV file with a header ``instrument,code[,extra...]``.

    Extra columns become the mapping's ``extra`` fields (empty cells left out).

    Raises:
        CsvImportError: missing columns, a bad instrument or an empty code
            (names the line).
    """
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CsvImportError(f"{p}: {exc.strerror}") from None
    out: list[InstrumentMapping] = []
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("instrument", "code") if c not in header]
        if missing:
            raise CsvImportError(
                f"{p}: missing column(s) {', '.join(missing)} (expected a header instrument,code[,extra...])"
            )
        reader.fieldnames = header
        try:
            for row in reader:
                line = reader.line_num
                instrument = (row.get("instrument") or "").strip()
                code = (row.get("code") or "").strip()
                if not instrument and not code:
                    continue
                try:
                    name, _, _ = parse_instrument(instrument)
                except InstrumentError as exc:
                    raise CsvImportError(f"{p}:{line}: {exc}") from None
                if not code:
                    raise CsvImportError(f"{p}:{line}: empty code for {name}")
                extra = {
                    k: v.strip()
                    for k, v in row.items()
                    if k not in ("instrument", "code") and k and isinstance(v, str) and v.strip()
                }
                out.append(InstrumentMapping(name, provider, code, extra))
        except csv.Error as exc:
            raise CsvImportError(f"{p}:{reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise CsvImportError(f"{p}: not UTF-8 text ({exc.reason})") from None
    return out
