"""``mdgate db upgrade | seed | status``: the routing database's schema and default rows."""

from __future__ import annotations

from typing import Any

import click

import mdgate.plugins.pg_routes.cli_common as common
from mdgate._cli.common import json_option
from mdgate._cli.context import CommandContext, pass_context

__all__ = ["db"]


@click.group("db", short_help="create, migrate and seed the routing database")
def db() -> None:
    """Manage the PostgreSQL routing schema."""


@db.command("upgrade", short_help="apply pending migrations")
@common.database_url_option
@json_option
@pass_context
def upgrade(obj: CommandContext, database_url: str | None, as_json: bool) -> None:
    """Apply pending migrations."""
    from mdgate._redact import mask_url
    from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, upgrade as apply

    with common.database(obj, database_url, check_schema=False) as (conn, dsn):
        applied = apply(conn)
    where = mask_url(dsn)
    lines = [f"applied {mig.version:04d} {mig.name}" for mig in applied]
    if applied:
        lines.append(f"schema of {where} is now at version {SCHEMA_VERSION}")
    else:
        lines.append(f"schema of {where} is up to date (version {SCHEMA_VERSION})")
    doc = {"database": where, "schema_version": SCHEMA_VERSION,
           "applied": [{"version": m.version, "name": m.name} for m in applied]}
    common.emit(as_json, doc, lines)


@db.command("seed", short_help="insert the default providers and exchange mappings")
@click.option("--reset", is_flag=True, help="also put existing default rows back to their defaults")
@common.database_url_option
@json_option
@pass_context
def seed(obj: CommandContext, reset: bool, database_url: str | None, as_json: bool) -> None:
    """Insert the loaded providers and their exchange mappings."""
    from mdgate._redact import mask_url
    from mdgate.plugins.pg_routes.seed import seed as apply, seed_plan

    settings = obj.settings
    with common.database(obj, database_url) as (conn, dsn):
        plan = seed_plan([hooks.spec for hooks in common.registry(settings).providers.values()], settings)
        result = apply(conn, plan, reset=reset)
    verb = "inserted or reset" if reset else "inserted"
    doc = {"database": mask_url(dsn), "reset": reset, "providers": result.providers,
           "exchanges": result.exchanges, "mappings": result.mappings}
    common.emit(as_json, doc, [
        f"seeded {mask_url(dsn)}: {verb} {result.providers} provider(s), "
        f"{result.exchanges} exchange(s), {result.mappings} exchange mapping(s)"
    ])


@db.command("status", short_help="show applied and pending migrations")
@common.database_url_option
@json_option
@pass_context
def status(obj: CommandContext, database_url: str | None, as_json: bool) -> None:
    """Show applied and pending migrations."""
    from mdgate._redact import mask_url
    from mdgate.plugins.pg_routes.migrations import MIGRATIONS, SCHEMA_VERSION, applied_migrations

    with common.database(obj, database_url, check_schema=False) as (conn, dsn):
        applied = {a.version: a for a in applied_migrations(conn)}
    current = max(applied, default=0)
    pending = [m for m in MIGRATIONS if m.version not in applied]
    state = "up to date" if not pending else f"{len(pending)} pending: run `mdgate db upgrade`"
    migrations: list[dict[str, Any]] = []
    for mig in MIGRATIONS:
        a = applied.get(mig.version)
        migrations.append({
            "version": mig.version, "name": mig.name, "state": "pending" if a is None else "applied",
            "applied_at": None if a is None else a.applied_at.isoformat(),
            "changed": a is not None and a.checksum != mig.checksum,
        })
    known = {m.version for m in MIGRATIONS}
    for version in sorted(set(applied) - known):
        migrations.append({"version": version, "name": applied[version].name, "state": "applied",
                           "applied_at": applied[version].applied_at.isoformat(), "changed": False,
                           "unknown": True})
    rows = []
    for m in migrations:
        if m["state"] == "pending":
            text = "pending"
        elif m.get("unknown"):
            text = "applied (unknown to this mdgate)"
        else:
            at = applied[m["version"]].applied_at
            text = f"applied {at:%Y-%m-%d %H:%M:%S%z}" + (" (file changed since)" if m["changed"] else "")
        rows.append([f"{m['version']:04d}", m["name"], text])
    doc = {"database": mask_url(dsn), "schema_version": current, "needed": SCHEMA_VERSION,
           "pending": len(pending), "migrations": migrations}
    common.emit(as_json, doc, [
        f"database: {mask_url(dsn)}",
        f"schema version: {current} (this mdgate needs {SCHEMA_VERSION}; {state})",
    ], ["VERSION", "NAME", "STATE"], rows)
