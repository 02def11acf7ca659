"""
``mdgate dhan import-instruments``: load Dhan's instrument master.

Reads the scrip master from a file (``--csv PATH``) or downloads it
(``--url [URL]``, default the compact CSV), parses it with
:func:`mdgate_dhan.instruments.parse_scrip_master` and either writes the
mappings to PostgreSQL (``--database-url``, default ``MDGATE_DATABASE_URL``
or ``[database] url``) or, with ``--toml OUT``, writes an
``[instruments."NSE:RELIANCE"]`` config snippet (works offline, no
database).

Only mdgate's public API is used: the command gets a
:class:`mdgate.CommandContext` (settings, the routing database) and fails by
raising (:class:`click.UsageError`: exit code 2, :class:`mdgate.MdgateError`:
exit code 1); mdgate prints the one error line.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Final, TextIO

import click

from mdgate import CommandContext, MdgateError, pass_context
from mdgate_dhan.instruments import (
    COMPACT_URL,
    BadRow,
    ScripMasterError,
    mappings_to_toml,
    parse_scrip_master,
)

__all__ = ["add_commands", "dhan", "import_instruments"]

_SHOW_BAD: Final = 5


def add_commands(cli: click.Group) -> None:
    """Add ``mdgate dhan import-instruments`` to the command line."""
    cli.add_command(dhan)


@click.group("dhan", short_help="Dhan provider tools")
def dhan() -> None:
    """Dhan provider tools."""


def _read(csv_path: str | None, url: str | None) -> str:
    if csv_path:
        try:
            return Path(csv_path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise MdgateError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    import httpx

    assert url is not None
    try:
        response = httpx.get(url, timeout=120.0, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise MdgateError(f"download of {url} failed: {type(exc).__name__}: {exc}") from None
    return response.text


def _summary(out: TextIO, imported: int, bad: list[BadRow], where: str) -> None:
    out.write(f"imported {imported} Dhan instrument mappings ({where}); skipped {len(bad)} bad rows\n")
    for row in bad[:_SHOW_BAD]:
        out.write(f"  line {row.line}: {row.reason}\n")
    if len(bad) > _SHOW_BAD:
        out.write(f"  ... and {len(bad) - _SHOW_BAD} more\n")


@dhan.command(
    "import-instruments",
    short_help="import Dhan's instrument master (scrip master CSV)",
    help="Parse Dhan's scrip master (compact or detailed CSV) and store NSE/BSE equity and index "
    "codes as explicit mappings in PostgreSQL, or write them as a TOML snippet with --toml.",
)
@click.option("--csv", "csv_path", metavar="PATH", help="read the CSV from a file")
@click.option("--url", is_flag=False, flag_value=COMPACT_URL, metavar="URL",
              help=f"download the CSV (default {COMPACT_URL})")
@click.option("--database-url", metavar="DSN",
              help="PostgreSQL DSN (default: $MDGATE_DATABASE_URL, else [database] url)")
@click.option("--toml", metavar="OUT",
              help="write an [instruments] config snippet to OUT ('-' = stdout) instead of the database")
@pass_context
def import_instruments(obj: CommandContext, csv_path: str | None, url: str | None,
                       database_url: str | None, toml: str | None) -> None:
    """
    Run ``mdgate dhan import-instruments``.

    Raises:
        click.UsageError: not exactly one of ``--csv``/``--url``, no database
            configured, or the file is not a scrip master (exit code 2).
        MdgateError: reading, downloading or storing failed (exit code 1).
    """
    if (csv_path is None) == (url is None):
        raise click.UsageError("give one of --csv PATH or --url [URL]")
    text = _read(csv_path, url)
    try:
        mappings, bad = parse_scrip_master(io.StringIO(text, newline=""))
    except ScripMasterError as exc:
        raise click.UsageError(str(exc)) from None
    stdout, stderr = sys.stdout, sys.stderr
    if toml:
        snippet = mappings_to_toml(mappings)
        if toml == "-":
            stdout.write(snippet)
            _summary(stderr, len(mappings), bad, "TOML to stdout")
        else:
            Path(toml).write_text(snippet, encoding="utf-8")
            _summary(stdout, len(mappings), bad, f"TOML written to {toml}")
        return
    if not obj.database_url(database_url):
        raise click.UsageError(
            "no database: give --database-url, set MDGATE_DATABASE_URL or [database] url, or use --toml OUT"
        )
    try:
        stored = obj.store_instrument_mappings(mappings, database_url=database_url)
    except MdgateError as exc:
        raise MdgateError(f"storing mappings failed: {exc}") from None
    _summary(stdout, stored, bad, "database")
