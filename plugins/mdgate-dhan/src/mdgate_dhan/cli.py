"""
``mdgate dhan import-instruments``: load Dhan's instrument master.

Reads the scrip master from a file (``--csv PATH``) or downloads it
(``--url [URL]``, default the compact CSV), parses it with
:func:`mdgate_dhan.instruments.parse_scrip_master` and either writes the
mappings to PostgreSQL (``--database-url``, default ``MDGATE_DATABASE_URL``
or ``[database] url``) or, with ``--toml OUT``, writes an
``[instruments."NSE:RELIANCE"]`` config snippet (works offline, no
database).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Final, TextIO

from mdgate_dhan.instruments import (
    COMPACT_URL,
    BadRow,
    ScripMasterError,
    mappings_to_toml,
    parse_scrip_master,
)

__all__ = ["add_commands", "import_instruments"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
_SHOW_BAD: Final = 5


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``mdgate dhan import-instruments`` to the command line."""
    dhan = subparsers.add_parser("dhan", help="Dhan provider tools")
    sub = dhan.add_subparsers(dest="dhan_command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "import-instruments",
        help="import Dhan's instrument master (scrip master CSV)",
        description="Parse Dhan's scrip master (compact or detailed CSV) and store "
        "NSE/BSE equity and index codes as explicit mappings in PostgreSQL, or "
        "write them as a TOML snippet with --toml.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", metavar="PATH", help="read the CSV from a file")
    source.add_argument(
        "--url",
        nargs="?",
        const=COMPACT_URL,
        metavar="URL",
        help=f"download the CSV (default {COMPACT_URL})",
    )
    p.add_argument(
        "--database-url",
        metavar="DSN",
        help="PostgreSQL DSN (default: $MDGATE_DATABASE_URL, else [database] url)",
    )
    p.add_argument(
        "--toml",
        metavar="OUT",
        help="write an [instruments] config snippet to OUT ('-' = stdout) instead of the database",
    )
    p.set_defaults(func=import_instruments)


def _read(args: argparse.Namespace) -> str:
    if args.csv:
        return Path(args.csv).read_text(encoding="utf-8-sig")
    import httpx

    response = httpx.get(args.url, timeout=120.0, follow_redirects=True)
    response.raise_for_status()
    return response.text


def _database_url(args: argparse.Namespace) -> str | None:
    if args.database_url:
        return str(args.database_url)
    if os.environ.get("MDGATE_DATABASE_URL"):
        return os.environ["MDGATE_DATABASE_URL"]
    from mdgate._config import load_settings

    settings = load_settings(getattr(args, "config", None), os.environ)
    return settings.database.url.reveal() if settings.database.url else None


def _summary(out: TextIO, imported: int, bad: list[BadRow], where: str) -> None:
    out.write(f"imported {imported} Dhan instrument mappings ({where}); skipped {len(bad)} bad rows\n")
    for row in bad[:_SHOW_BAD]:
        out.write(f"  line {row.line}: {row.reason}\n")
    if len(bad) > _SHOW_BAD:
        out.write(f"  ... and {len(bad) - _SHOW_BAD} more\n")


def import_instruments(args: argparse.Namespace) -> int:
    """
    Run ``mdgate dhan import-instruments``.

    Returns:
        0 on success, 1 when reading or storing failed, 2 for a usage error
        (no database configured, not a scrip master).
    """
    out, err = sys.stdout, sys.stderr
    try:
        text = _read(args)
    except OSError as exc:
        err.write(f"error: cannot read {args.csv}: {exc.strerror or exc}\n")
        return EXIT_FAILED
    except Exception as exc:  # httpx errors: report and fail, no traceback
        err.write(f"error: download of {args.url} failed: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED
    try:
        mappings, bad = parse_scrip_master(io.StringIO(text, newline=""))
    except ScripMasterError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    if args.toml:
        snippet = mappings_to_toml(mappings)
        if args.toml == "-":
            out.write(snippet)
            _summary(err, len(mappings), bad, "TOML to stdout")
        else:
            Path(args.toml).write_text(snippet, encoding="utf-8")
            _summary(out, len(mappings), bad, f"TOML written to {args.toml}")
        return EXIT_OK
    dsn = _database_url(args)
    if not dsn:
        err.write(
            "error: no database: give --database-url, set MDGATE_DATABASE_URL or "
            "[database] url, or use --toml OUT\n"
        )
        return EXIT_USAGE
    from mdgate._errors import MdgateError
    from mdgate.plugins.pg_routes.instruments import upsert_instrument_mappings

    try:
        stored = upsert_instrument_mappings(dsn, mappings)
    except MdgateError as exc:
        err.write(f"error: storing mappings failed: {exc}\n")
        return EXIT_FAILED
    _summary(out, stored, bad, "database")
    return EXIT_OK
