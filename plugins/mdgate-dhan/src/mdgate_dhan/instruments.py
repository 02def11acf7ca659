"""
Dhan's instrument master (scrip master CSV) -> explicit instrument mappings.

:func:`parse_scrip_master` is pure: lines in, mappings and bad rows out. It
reads both published formats (compact ``SEM_*`` headers and the detailed
``EXCH_ID, SEGMENT, SECURITY_ID...`` headers), mapping columns by header
name, never by position.

What is imported (columns and segments: docs/protocols/dhan.md#instrument-master):

* **NSE cash equity** (``EXCH_ID=NSE, SEGMENT=E, INSTRUMENT=EQUITY``) as
  ``NSE:<SYMBOL>`` -> ``NSE_EQ:<SecurityId>``. A symbol trades in one series
  at a time; when it appears in several, the preferred series wins:
  ``EQ`` > ``BE`` (trade-for-trade) > ``BZ`` > ``SM`` (SME) > ``ST``. Other
  series (debt, rights, partly paid...) are not imported.
* **BSE cash equity** (``EXCH_ID=BSE, SEGMENT=E, INSTRUMENT=EQUITY``) as
  ``BSE:<SYMBOL>`` -> ``BSE_EQ:<SecurityId>`` (the BSE scrip code), any
  group; the first row of a symbol wins, later ones are reported.
* **Indices** (``SEGMENT=I`` or ``INSTRUMENT=INDEX``) as ``NSE:<SYMBOL>`` /
  ``BSE:<SYMBOL>`` -> ``IDX_I:<SecurityId>``, the symbol being the trading
  symbol with blanks removed (``INDIA VIX`` -> ``NSE:INDIAVIX``).
* Derivatives, currency and commodity rows are skipped (no exchange names
  for them in mdgate's routing yet); they are not errors.

The trading symbol is ``SEM_TRADING_SYMBOL`` in the compact format; the
detailed format dropped that column, and its ``UNDERLYING_SYMBOL`` holds the
trading symbol for equity and index rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from mdgate import InstrumentError, InstrumentMapping, parse_instrument
from mdgate_dhan.protocol import NAME

__all__ = [
    "COMPACT_URL",
    "DETAILED_URL",
    "BadRow",
    "ScripMasterError",
    "mappings_to_toml",
    "parse_scrip_master",
]

COMPACT_URL: Final = "https://images.dhan.co/api-data/api-scrip-master.csv"
DETAILED_URL: Final = "https://images.dhan.co/api-data/api-scrip-master-detailed.csv"

# Compact header -> detailed (canonical) header.
_COMPACT: Final[Mapping[str, str]] = {
    "SEM_EXM_EXCH_ID": "EXCH_ID",
    "SEM_SEGMENT": "SEGMENT",
    "SEM_SMST_SECURITY_ID": "SECURITY_ID",
    "SEM_INSTRUMENT_NAME": "INSTRUMENT",
    "SEM_EXPIRY_CODE": "EXPIRY_CODE",
    "SEM_TRADING_SYMBOL": "TRADING_SYMBOL",
    "SEM_LOT_UNITS": "LOT_SIZE",
    "SEM_CUSTOM_SYMBOL": "DISPLAY_NAME",
    "SEM_EXPIRY_DATE": "SM_EXPIRY_DATE",
    "SEM_STRIKE_PRICE": "STRIKE_PRICE",
    "SEM_OPTION_TYPE": "OPTION_TYPE",
    "SEM_TICK_SIZE": "TICK_SIZE",
    "SEM_EXPIRY_FLAG": "EXPIRY_FLAG",
    "SEM_EXCH_INSTRUMENT_TYPE": "INSTRUMENT_TYPE",
    "SEM_SERIES": "SERIES",
    "SM_SYMBOL_NAME": "SYMBOL_NAME",
}
_REQUIRED: Final = ("EXCH_ID", "SEGMENT", "SECURITY_ID", "INSTRUMENT")
#: NSE series in order of preference for the cash-equity pick.
NSE_SERIES: Final[tuple[str, ...]] = ("EQ", "BE", "BZ", "SM", "ST")
_EXTRA_COLUMNS: Final[Mapping[str, str]] = {
    "TICK_SIZE": "tick_size",
    "LOT_SIZE": "lot_size",
    "SERIES": "series",
    "ISIN": "isin",
    "INSTRUMENT_TYPE": "instrument_type",
    "DISPLAY_NAME": "display_name",
    "SYMBOL_NAME": "symbol_name",
}


class ScripMasterError(ValueError):
    """The file is not a Dhan scrip master (no header, or required columns missing)."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be imported: 1-based line number and the reason."""

    line: int
    reason: str


def _canonical(header: list[str]) -> list[str]:
    return [_COMPACT.get(h.strip().lstrip("\ufeff"), h.strip().lstrip("\ufeff")) for h in header]


def _lot(value: str) -> str:
    try:
        f = float(value)
    except ValueError:
        return value
    return str(int(f)) if f.is_integer() else value


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where each column the import reads stands in a row."""

    width: int
    exch: int
    segment: int
    security_id: int
    instrument: int
    symbol: int
    series: int | None
    extras: list[tuple[int, str]]

    @classmethod
    def from_header(cls, header: list[str]) -> _Columns:
        col = {name: i for i, name in enumerate(header)}
        missing = [name for name in _REQUIRED if name not in col]
        symbol = col.get("TRADING_SYMBOL", col.get("UNDERLYING_SYMBOL"))
        if symbol is None:
            missing.append("SEM_TRADING_SYMBOL or UNDERLYING_SYMBOL")
        if missing or symbol is None:
            raise ScripMasterError(f"not a Dhan scrip master: missing column(s) {', '.join(missing)}")
        exch, segment, security_id, instrument = (col[n] for n in _REQUIRED)
        extras = [(col[c], key) for c, key in _EXTRA_COLUMNS.items() if c in col]
        return cls(len(header), exch, segment, security_id, instrument, symbol, col.get("SERIES"), extras)


#: What one row becomes: ``(rank, mapping)`` to keep, ``None`` to skip silently,
#: or the reason it is a bad row.
_Row = tuple[int, InstrumentMapping] | str | None


def _segment(exch: str, seg: str, kind: str, series: str) -> tuple[str, int] | str | None:
    # (feed segment, rank: lower is preferred), None for rows not imported, or why the row is bad.
    if seg == "I" or kind == "INDEX":
        return ("IDX_I", 0) if exch in ("NSE", "BSE") else f"index on unknown exchange {exch!r}"
    if seg == "E":
        if exch not in ("NSE", "BSE"):
            return f"equity on unknown exchange {exch!r}"
        if kind != "EQUITY":
            return None
        if exch == "BSE":
            return "BSE_EQ", 0
        return ("NSE_EQ", NSE_SERIES.index(series)) if series in NSE_SERIES else None
    if seg in ("D", "C", "M"):
        return None  # derivatives, currency, commodity: not imported
    return f"unknown segment {seg!r} for exchange {exch!r}"


def _row(row: list[str], cols: _Columns) -> _Row:
    if len(row) != cols.width:
        return f"expected {cols.width} columns, got {len(row)}"
    exch = row[cols.exch].strip().upper()
    series = row[cols.series].strip().upper() if cols.series is not None else ""
    picked = _segment(exch, row[cols.segment].strip().upper(), row[cols.instrument].strip().upper(), series)
    if not isinstance(picked, tuple):
        return picked
    segment, rank = picked
    sid = row[cols.security_id].strip()
    if not (sid.isascii() and sid.isdigit()) or int(sid) > 0xFFFFFFFF:
        return f"bad security id {sid!r}"
    symbol = row[cols.symbol].strip().upper()
    if segment == "IDX_I":
        symbol = "".join(symbol.split())
    if not symbol:
        return "empty trading symbol"
    try:
        name, _, _ = parse_instrument(f"{exch}:{symbol}")
    except InstrumentError:
        return f"symbol {symbol!r} is not a valid instrument name"
    extra = {"segment": segment, "security_id": sid}
    for index, key in cols.extras:
        value = row[index].strip()
        if value:
            extra[key] = _lot(value) if key == "lot_size" else value
    return rank, InstrumentMapping(name, NAME, f"{segment}:{sid}", extra)


def parse_scrip_master(
    text_lines: Iterable[str],
) -> tuple[list[InstrumentMapping], list[BadRow]]:
    """
    Parse Dhan's scrip master (compact or detailed) into instrument mappings.

    Args:
        text_lines: the CSV's lines, header first (a file object works).

    Returns:
        ``(mappings, bad_rows)``: one mapping per instrument (see the module
        docstring for the selection rules) and the rows that were skipped
        because they are malformed, each with its line number and reason.

    Raises:
        ScripMasterError: no header, or a required column is missing.
    """
    reader = csv.reader(text_lines)
    try:
        cols = _Columns.from_header(_canonical(next(reader)))
    except StopIteration:
        raise ScripMasterError("empty file: no header line") from None
    chosen: dict[str, tuple[int, InstrumentMapping]] = {}  # instrument -> (rank, mapping)
    bad: list[BadRow] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        result = _row(row, cols)
        if isinstance(result, str):
            bad.append(BadRow(line, result))
        elif result is not None:
            rank, mapping = result
            previous = chosen.get(mapping.instrument)
            if previous is not None and previous[0] == rank:
                reason = f"duplicate {mapping.instrument}: kept {previous[1].code}, skipped {mapping.code}"
                bad.append(BadRow(line, reason))
            if previous is None or rank < previous[0]:  # else a preferred series (or the first row) stays
                chosen[mapping.instrument] = (rank, mapping)
    return [m for _, m in chosen.values()], bad


def mappings_to_toml(mappings: Iterable[InstrumentMapping]) -> str:
    """Render mappings as ``[instruments."NSE:RELIANCE"]`` TOML tables."""
    out = ["# Dhan codes from the instrument master (mdgate dhan import-instruments --toml)"]
    for m in sorted(mappings, key=lambda m: m.instrument):
        out.append(f'\n[instruments."{m.instrument}"]\n{m.provider} = "{m.code}"')
    return "\n".join(out) + "\n"
