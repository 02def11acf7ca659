"""``mdgate providers`` (and ``providers add | set``): the providers table of the routing database."""

from __future__ import annotations

import dataclasses

import click

import mdgate.plugins.pg_routes.cli_common as common
from mdgate._cli.common import json_option
from mdgate._cli.context import CommandContext, pass_context

__all__ = ["providers"]


@click.group("providers", invoke_without_command=True,
             short_help="show (add, change) providers in the database")
@common.database_url_option
@json_option
@pass_context
@click.pass_context
def providers(ctx: click.Context, obj: CommandContext, database_url: str | None, as_json: bool) -> None:
    """Without a sub-command: list the providers table, and whether each is installed."""
    if ctx.invoked_subcommand is not None:
        ctx.meta["pg_routes.database_url"] = database_url
        return
    from mdgate._redact import mask_url
    from mdgate.plugins.pg_routes.providers import list_providers

    with common.database(obj, database_url) as (conn, dsn):
        rows = list_providers(conn)
    installed = set(common.registry(obj.settings).providers)
    found = [{**dataclasses.asdict(p), "installed": p.name in installed} for p in rows]
    common.emit(
        as_json, {"database": mask_url(dsn), "providers": found}, [f"Providers in {mask_url(dsn)}:"],
        ["NAME", "CODE", "DISPLAY NAME", "RATE LIMIT", "ACTIVE", "INSTALLED"],
        [[p["name"], p["code"], p["display_name"] or "-", p["rate_limit"] or "-", common.yes(p["active"]),
          common.yes(p["installed"])] for p in found],
    )


@providers.command("add", short_help="add a provider (e.g. one a third-party plugin ships)")
@click.argument("name", metavar="NAME")
@click.argument("code", metavar="CODE")
@click.option("--display-name", metavar="TEXT")
@click.option("--rate-limit", type=int, metavar="N", help="requests per second (informational)")
@common.database_url_option
@json_option
@pass_context
@click.pass_context
def providers_add(ctx: click.Context, obj: CommandContext, name: str, code: str, display_name: str | None,
                  rate_limit: int | None, database_url: str | None, as_json: bool) -> None:
    """Add provider NAME (as its plugin declares it) with CODE (stored with its ticks)."""
    from mdgate.plugins.pg_routes.providers import add_provider

    database_url = database_url or ctx.meta.get("pg_routes.database_url")
    with common.database(obj, database_url) as (conn, _):
        try:
            add_provider(conn, name, code, display_name=display_name or "", rate_limit=rate_limit)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    doc = {"name": name, "code": code, "display_name": display_name or "", "rate_limit": rate_limit}
    common.emit(as_json, doc, [
        f"added provider {name} (code {code}); route exchanges to it with "
        f"`mdgate routes set EXCHANGE {name} --priority N`"
    ])


@providers.command("set", short_help="switch a provider on or off")
@click.argument("name", metavar="NAME")
@click.option("--active/--inactive", default=None, help="switch the provider on or off")
@click.option("--rate-limit", type=int, metavar="N")
@click.option("--display-name", metavar="TEXT")
@common.database_url_option
@json_option
@pass_context
@click.pass_context
def providers_set(ctx: click.Context, obj: CommandContext, name: str, active: bool | None,
                  rate_limit: int | None, display_name: str | None, database_url: str | None,
                  as_json: bool) -> None:
    """Switch provider NAME on or off, change its rate limit or display name."""
    from mdgate.plugins.pg_routes.providers import set_provider

    if rate_limit is not None and rate_limit <= 0:
        raise click.UsageError("--rate-limit must be positive")
    database_url = database_url or ctx.meta.get("pg_routes.database_url")
    with common.database(obj, database_url) as (conn, _):
        row = set_provider(conn, name, active=active, rate_limit=rate_limit, display_name=display_name)
    common.emit(as_json, dataclasses.asdict(row), [
        f"{row.name} (code {row.code}): active {common.yes(row.active)}, rate limit {row.rate_limit or '-'}"
    ])
