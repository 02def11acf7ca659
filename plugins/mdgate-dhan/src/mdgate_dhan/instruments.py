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

from mdgate._errors import InstrumentError
from mdgate._model import parse_instrument
from mdgate._routing.table import InstrumentMapping

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
PROVIDER: Final = "dhan"

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
        header = _canonical(next(reader))
    except StopIteration:
        raise ScripMasterError("empty file: no header line") from None
    col = {name: i for i, name in enumerate(header)}
    missing = [name for name in _REQUIRED if name not in col]
    symbol_col = col.get("TRADING_SYMBOL", col.get("UNDERLYING_SYMBOL"))
    if symbol_col is None:
        missing.append("SEM_TRADING_SYMBOL or UNDERLYING_SYMBOL")
    if missing:
        raise ScripMasterError(f"not a Dhan scrip master: missing column(s) {', '.join(missing)}")
    assert symbol_col is not None
    i_exch, i_seg, i_sid, i_inst = (col[n] for n in _REQUIRED)
    i_series = col.get("SERIES")
    extras = [(col[c], key) for c, key in _EXTRA_COLUMNS.items() if c in col]
    width = len(header)

    chosen: dict[str, tuple[int, InstrumentMapping]] = {}  # instrument -> (rank, mapping)
    bad: list[BadRow] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != width:
            bad.append(BadRow(line, f"expected {width} columns, got {len(row)}"))
            continue
        exch = row[i_exch].strip().upper()
        seg = row[i_seg].strip().upper()
        instrument_kind = row[i_inst].strip().upper()
        series = row[i_series].strip().upper() if i_series is not None else ""
        if seg == "I" or instrument_kind == "INDEX":
            segment = "IDX_I"
            if exch not in ("NSE", "BSE"):
                bad.append(BadRow(line, f"index on unknown exchange {exch!r}"))
                continue
            rank = 0
        elif seg == "E":
            if exch not in ("NSE", "BSE"):
                bad.append(BadRow(line, f"equity on unknown exchange {exch!r}"))
                continue
            if instrument_kind != "EQUITY":
                continue
            segment = f"{exch}_EQ"
            if exch == "NSE":
                if series not in NSE_SERIES:
                    continue
                rank = NSE_SERIES.index(series)
            else:
                rank = 0
        elif seg in ("D", "C", "M"):
            continue  # derivatives, currency, commodity: not imported
        else:
            bad.append(BadRow(line, f"unknown segment {seg!r} for exchange {exch!r}"))
            continue
        sid = row[i_sid].strip()
        if not (sid.isascii() and sid.isdigit()) or int(sid) > 0xFFFFFFFF:
            bad.append(BadRow(line, f"bad security id {sid!r}"))
            continue
        symbol = row[symbol_col].strip().upper()
        if segment == "IDX_I":
            symbol = "".join(symbol.split())
        if not symbol:
            bad.append(BadRow(line, "empty trading symbol"))
            continue
        try:
            name, _, _ = parse_instrument(f"{exch}:{symbol}")
        except InstrumentError:
            bad.append(BadRow(line, f"symbol {symbol!r} is not a valid instrument name"))
            continue
        extra = {"segment": segment, "security_id": sid}
        for index, key in extras:
            value = row[index].strip()
            if value:
                extra[key] = _lot(value) if key == "lot_size" else value
        mapping = InstrumentMapping(name, PROVIDER, f"{segment}:{sid}", extra)
        previous = chosen.get(name)
        if previous is not None:
            if previous[0] == rank:
                bad.append(
                    BadRow(
                        line,
                        f"duplicate {name}: kept {previous[1].code}, skipped {mapping.code}",
                    )
                )
            if previous[0] <= rank:
                continue  # a preferred series (or the first row) is already chosen
        chosen[name] = (rank, mapping)
    return [m for _, m in chosen.values()], bad


def mappings_to_toml(mappings: Iterable[InstrumentMapping]) -> str:
    """Render mappings as ``[instruments."NSE:RELIANCE"]`` TOML tables."""
    out = ["# Dhan codes from the instrument master (mdgate dhan import-instruments --toml)"]
    for m in sorted(mappings, key=lambda m: m.instrument):
        out.append(f'\n[instruments."{m.instrument}"]\n{m.provider} = "{m.code}"')
    return "\n".join(out) + "\n"
