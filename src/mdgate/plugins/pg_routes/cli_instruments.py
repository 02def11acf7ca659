"""``mdgate instruments add | list | import``: explicit instrument -> provider code mappings."""

from __future__ import annotations

import json

import click

import mdgate.plugins.pg_routes.cli_common as common
from mdgate._cli.common import json_option
from mdgate._cli.context import CommandContext, pass_context
from mdgate._errors import InstrumentError
from mdgate.plugins.pg_routes._output import out, table

__all__ = ["instruments"]


@click.group("instruments", short_help="explicit instrument -> provider code mappings")
def instruments() -> None:
    """Explicit instrument -> provider code mappings in the routing database."""


def _extra_pairs(items: tuple[str, ...]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--extra expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()
    return extra


@instruments.command("add", short_help="add or replace one mapping")
@click.argument("instrument", metavar="INSTRUMENT")
@click.argument("provider", metavar="PROVIDER")
@click.argument("code", metavar="CODE")
@click.option("--extra", multiple=True, metavar="KEY=VALUE",
              help="provider-specific field (repeatable), e.g. segment=NSE_EQ")
@common.database_url_option
@json_option
@pass_context
def add(obj: CommandContext, instrument: str, provider: str, code: str, extra: tuple[str, ...],
        database_url: str | None, as_json: bool) -> None:
    """Add or replace the mapping INSTRUMENT -> PROVIDER CODE."""
    from mdgate._model import parse_instrument
    from mdgate._routing.table import InstrumentMapping
    from mdgate.plugins.pg_routes.instruments import store_instrument_mappings

    try:
        name, exchange, _ = parse_instrument(instrument)
    except InstrumentError as exc:
        raise click.UsageError(str(exc)) from None
    mapping = InstrumentMapping(name, provider, code.strip(), _extra_pairs(extra))
    if not mapping.code:
        raise click.UsageError("CODE must not be empty")
    with common.database(obj, database_url) as (conn, _):
        store_instrument_mappings(conn, [mapping])
        serves = conn.execute(
            """SELECT 1 FROM exchange_provider_mappings m
                 JOIN providers p ON p.id = m.provider_id
                 JOIN exchanges e ON e.id = m.exchange_id
                WHERE p.name = %s AND e.code = %s""",
            (provider, exchange),
        ).fetchone()
    note = None if serves is not None else (
        f"{provider} has no route for {exchange}, so this code is unused until "
        f"`mdgate routes set {exchange} {provider} --priority N`"
    )
    doc = {"instrument": name, "provider": provider, "code": mapping.code, "extra": dict(mapping.extra),
           "note": note}
    common.emit(as_json, doc, [f"{name} -> {provider} {mapping.code}", *([f"note: {note}"] if note else [])])


@instruments.command("list", short_help="list mappings")
@click.option("--provider", metavar="P")
@click.option("--exchange", metavar="E")
@click.option("--limit", type=int, metavar="N")
@common.database_url_option
@json_option
@pass_context
def list_(obj: CommandContext, provider: str | None, exchange: str | None, limit: int | None,
          database_url: str | None, as_json: bool) -> None:
    """List explicit mappings (all, or of one provider or exchange)."""
    from mdgate.plugins.pg_routes.instruments import list_instrument_mappings

    with common.database(obj, database_url) as (conn, _):
        rows = list_instrument_mappings(conn, provider=provider, exchange=exchange, limit=limit)
    found = [{"instrument": r.instrument, "provider": r.provider, "code": r.code, "extra": dict(r.extra)}
             for r in rows]
    if as_json:
        common.emit(True, found)
    elif not rows:
        out("no instrument mappings" + (" match" if provider or exchange else ""))
    else:
        for line in table(
            ["INSTRUMENT", "PROVIDER", "CODE", "EXTRA"],
            [[r["instrument"], r["provider"], r["code"],
              json.dumps(r["extra"], separators=(",", ":")) if r["extra"] else ""] for r in found],
        ):
            out(line)


@instruments.command("import", short_help="import mappings from a CSV file (instrument,code[,extra...])")
@click.option("--csv", "path", required=True, metavar="PATH")
@click.option("--provider", required=True, metavar="P")
@common.database_url_option
@json_option
@pass_context
def import_(obj: CommandContext, path: str, provider: str, database_url: str | None, as_json: bool) -> None:
    """Import mappings for one provider from a CSV file (instrument,code[,extra...])."""
    from mdgate.plugins.pg_routes.instruments import read_csv_mappings, store_instrument_mappings

    mappings = read_csv_mappings(path, provider)
    with common.database(obj, database_url) as (conn, _):
        stored = store_instrument_mappings(conn, mappings)
    common.emit(as_json, {"provider": provider, "csv": path, "imported": stored},
                [f"imported {stored} mapping(s) for {provider} from {path}"])
