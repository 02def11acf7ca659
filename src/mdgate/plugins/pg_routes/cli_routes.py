"""``mdgate routes`` (and ``routes set``), ``mdgate route``: exchange routes, how an instrument resolves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

import mdgate.plugins.pg_routes.cli_common as common
from mdgate._cli.common import json_option
from mdgate._cli.context import CommandContext, pass_context
from mdgate._errors import InstrumentError, MdgateError

if TYPE_CHECKING:
    from mdgate._routing.table import RouteTable

__all__ = ["route", "routes"]

ROUTE_HEADERS = ["EXCHANGE", "PRIORITY", "PROVIDER", "CODE", "PRIMARY", "ACTIVE"]


def _route_doc(exchange: str, priority: int, provider: str, code: str, primary: bool,
               active: bool | str) -> dict[str, Any]:
    return {"exchange": exchange, "priority": priority, "provider": provider, "code": code,
            "primary": primary, "active": active}


def _row(d: dict[str, Any]) -> list[object]:
    active = d["active"] if isinstance(d["active"], str) else common.yes(d["active"])
    return [d["exchange"], d["priority"], d["provider"], d["code"], common.yes(d["primary"]), active]


@click.group("routes", invoke_without_command=True,
             short_help="show (or set) exchange -> provider routes")
@common.database_url_option
@json_option
@pass_context
@click.pass_context
def routes(ctx: click.Context, obj: CommandContext, database_url: str | None, as_json: bool) -> None:
    """Without a sub-command: list exchange -> providers by priority."""
    if ctx.invoked_subcommand is not None:
        ctx.meta["pg_routes.database_url"] = database_url
        return
    if common.dsn(obj, database_url) is None:
        from mdgate._routing.router import config_table

        registry = common.registry(obj.settings)
        found = [
            _route_doc(r.exchange, r.priority, r.provider,
                       registry.providers[r.provider].spec.code if r.provider in registry.providers else "?",
                       r.primary, r.active)
            for _, rows in sorted(config_table(registry, obj.settings).exchanges.items())
            for r in rows
        ]
        head = ("No database configured: these are the built-in defaults (the routes the installed "
                "providers declare) with the config file's [exchanges] on top (set --database-url, "
                "MDGATE_DATABASE_URL or [database] url to use PostgreSQL).")
        common.emit(as_json, {"source": "defaults", "database": None, "routes": found}, [head],
                    ROUTE_HEADERS, [_row(d) for d in found])
        return
    from mdgate._redact import mask_url
    from mdgate.plugins.pg_routes.routes import list_exchange_routes

    with common.database(obj, database_url) as (conn, dsn):
        listed = list_exchange_routes(conn)
    found = [
        _route_doc(r.exchange, r.priority, r.provider, r.provider_code, r.primary,
                   r.active if r.provider_active else "no (provider inactive)")
        for r in listed
    ]
    doc = {"source": "database", "database": mask_url(dsn), "routes": found}
    if not found:
        common.emit(as_json, doc, [f"Routes in {mask_url(dsn)}:",
                                   "  (none: run `mdgate db seed` or `mdgate routes set`)"])
        return
    common.emit(as_json, doc, [f"Routes in {mask_url(dsn)}:"], ROUTE_HEADERS, [_row(d) for d in found])


@routes.command("set", short_help="create or replace an exchange -> provider mapping")
@click.argument("exchange", metavar="EXCHANGE")
@click.argument("provider", metavar="PROVIDER")
@click.option("--priority", type=int, metavar="N",
              help="lower is tried first (default: keep, or 0 for a new mapping)")
@click.option("--primary", is_flag=True, help="make it the exchange's primary (demotes the previous one)")
@click.option("--inactive", is_flag=True, help="keep the row but do not use it")
@click.option("--create-exchange", is_flag=True, help="add EXCHANGE if the database does not know it yet")
@common.database_url_option
@json_option
@pass_context
@click.pass_context
def routes_set(ctx: click.Context, obj: CommandContext, exchange: str, provider: str, priority: int | None,
               primary: bool, inactive: bool, create_exchange: bool, database_url: str | None,
               as_json: bool) -> None:
    """Create or replace one exchange -> provider mapping."""
    from mdgate.plugins.pg_routes.routes import list_exchange_routes, set_exchange_route

    database_url = database_url or ctx.meta.get("pg_routes.database_url")
    with common.database(obj, database_url) as (conn, _):
        result = set_exchange_route(conn, exchange, provider, priority=priority, primary=primary,
                                    active=not inactive, create_exchange=create_exchange)
        listed = [r for r in list_exchange_routes(conn) if r.exchange == exchange.upper()]
    name = exchange.upper()
    lines = [f"added exchange {name}"] if result.exchange_created else []
    lines += [f"{demoted} is no longer primary for {name}" for demoted in result.demoted]
    lines.append(f"{'added' if result.created else 'updated'} {name} -> {provider}")
    found = [_route_doc(r.exchange, r.priority, r.provider, r.provider_code, r.primary,
                        r.active and r.provider_active) for r in listed]
    doc = {"exchange": name, "provider": provider, "created": result.created,
           "exchange_created": result.exchange_created, "demoted": list(result.demoted), "routes": found}
    common.emit(as_json, doc, lines, ROUTE_HEADERS, [_row(d) for d in found])


@click.command("route", short_help="explain how an instrument is routed")
@click.argument("instrument", metavar="INSTRUMENT")
@common.database_url_option
@json_option
@pass_context
def route(obj: CommandContext, instrument: str, database_url: str | None, as_json: bool) -> None:
    """Explain how INSTRUMENT (EXCHANGE:SYMBOL, e.g. NSE:RELIANCE) resolves, and why."""
    from mdgate._model import parse_instrument
    from mdgate._routing.router import Router, parse_provider_configs

    try:
        name, exchange, _ = parse_instrument(instrument)
    except InstrumentError as exc:
        raise click.UsageError(str(exc)) from None
    registry = common.registry(obj.settings)
    configs = parse_provider_configs(registry, obj.settings)
    route_table, codes_by_provider, where = _route_table(obj, database_url, registry)
    resolved = Router(registry, configs, route_table).resolve(name)  # NoRouteError names the exchange

    def code_of(provider: str) -> str:
        hooks = registry.providers.get(provider)
        return hooks.spec.code if hooks is not None else codes_by_provider.get(provider, "?")

    candidates = [
        {"rank": i, "provider": r.provider, "provider_code": code_of(r.provider), "code": r.code,
         "reason": r.reason,
         "state": f"disabled: {configs.disabled[r.provider]}" if r.provider in configs.disabled else "ok"}
        for i, r in enumerate(resolved, 1)
    ]
    used = {r.provider for r in resolved}
    skipped = [
        {"provider": row.provider, "why": "inactive" if not row.active else (
            "not installed" if row.provider not in registry.providers
            else f"no explicit mapping and its rule derives no code for {name}")}
        for row in route_table.exchanges.get(exchange, ()) if row.provider not in used
    ]
    live = [r for r in resolved if r.provider not in configs.disabled]
    doc = {"instrument": name, "routes_from": where, "candidates": candidates, "not_candidates": skipped,
           "served_by": {"provider": live[0].provider, "code": live[0].code} if live else None,
           "failover": [r.provider for r in live[1:]]}
    lines = [f"  not a candidate: {s['provider']} ({s['why']})" for s in skipped]
    if live:
        lines.append(f"served by {live[0].provider} as {live[0].code}"
                     + (f"; failover to {', '.join(r.provider for r in live[1:])}" if live[1:] else ""))
    _print_route(as_json, doc, candidates, lines)
    if not live:
        raise MdgateError(f"no enabled provider for {name}: every candidate is disabled")


def _route_table(obj: CommandContext, database_url: str | None,
                 registry: Any) -> tuple[RouteTable, dict[str, str], str]:
    from mdgate._routing.router import config_table

    if common.dsn(obj, database_url) is None:
        return (config_table(registry, obj.settings), {},
                "built-in defaults and the config file (no database configured)")
    from mdgate._redact import mask_url
    from mdgate.plugins.pg_routes.routes import load_route_table

    with common.database(obj, database_url) as (conn, dsn):
        table = load_route_table(conn)
        codes = dict(conn.execute("SELECT name, code FROM providers").fetchall())
    return table, codes, mask_url(dsn)


def _print_route(as_json: bool, doc: dict[str, Any], candidates: list[dict[str, Any]],
                 lines: list[str]) -> None:
    if as_json:
        common.emit(True, doc)
        return
    rows = [[c["rank"], c["provider"], c["provider_code"], c["code"], c["reason"], c["state"]]
            for c in candidates]
    common.emit(False, doc, [f"{doc['instrument']} (routes from {doc['routes_from']})"],
                ["#", "PROVIDER", "PCODE", "CODE", "WHY", "STATE"], rows)
    common.emit(False, doc, lines)
