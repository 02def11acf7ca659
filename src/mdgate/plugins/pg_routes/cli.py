"""
The database commands: ``mdgate db``, ``mdgate routes``, ``mdgate route``, ``mdgate providers``,
``mdgate instruments``.

Each command takes the parsed ``argparse.Namespace`` and returns an exit
code: 0 success, 1 an operational failure (database unreachable, unknown
provider or exchange, no route), 2 a configuration or usage problem. Errors
are one line on stderr, never a traceback; database URLs are shown with the
password masked.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg

from mdgate._config import Settings, load_settings, mask_url
from mdgate._errors import ConfigError, InstrumentError, MdgateError
from mdgate._model import parse_instrument
from mdgate._routing.table import InstrumentMapping, RouteTable
from mdgate.plugins.pg_routes._connect import connect
from mdgate.plugins.pg_routes._output import err, out, table
from mdgate.plugins.pg_routes.errors import SchemaError
from mdgate.plugins.pg_routes.instruments import (
    list_instrument_mappings,
    read_csv_mappings,
    store_instrument_mappings,
)
from mdgate.plugins.pg_routes.migrations import MIGRATIONS, SCHEMA_VERSION, applied_migrations, upgrade
from mdgate.plugins.pg_routes.providers import add_provider, list_providers, set_provider
from mdgate.plugins.pg_routes.routes import list_exchange_routes, load_route_table, set_exchange_route
from mdgate.plugins.pg_routes.seed import seed, seed_plan

if TYPE_CHECKING:
    from mdgate._providers.registry import Registry

__all__ = [
    "add_commands",
    "cmd_db_seed",
    "cmd_db_status",
    "cmd_db_upgrade",
    "cmd_instruments_add",
    "cmd_instruments_import",
    "cmd_instruments_list",
    "cmd_providers",
    "cmd_providers_add",
    "cmd_providers_set",
    "cmd_route",
    "cmd_routes",
    "cmd_routes_set",
]

Command = Callable[[argparse.Namespace], int]

_NO_DATABASE = (
    "no database configured: pass --database-url, set MDGATE_DATABASE_URL "
    "or [database] url in the config file"
)


class _Usage(MdgateError):
    """A usage problem (exit code 2)."""


def _command(fn: Command) -> Command:
    """Turn mdgate and database errors into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ConfigError, _Usage) as exc:
            err(str(exc))
            return 2
        except MdgateError as exc:
            err(str(exc))
            return 1
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines()
            err(f"database error: {lines[0] if lines else type(exc).__name__}")
            return 1

    return wrapper


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _dsn(args: argparse.Namespace, settings: Settings) -> str | None:
    url: str | None = getattr(args, "database_url", None)
    if url:
        return url
    return settings.database.url.reveal() if settings.database.url else None


@contextmanager
def _database(
    args: argparse.Namespace, *, check_schema: bool = True
) -> Iterator[tuple[psycopg.Connection, str, Settings]]:
    settings = _settings(args)
    dsn = _dsn(args, settings)
    if dsn is None:
        raise _Usage(_NO_DATABASE)
    with connect(dsn, settings.database.connect_timeout, autocommit=True) as conn:
        if check_schema:
            applied = applied_migrations(conn)
            version = applied[-1].version if applied else 0
            if version < SCHEMA_VERSION:
                raise SchemaError(version, SCHEMA_VERSION)
        yield conn, dsn, settings


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --------------------------------------------------------------------- db


@_command
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """``mdgate db upgrade``: apply pending migrations."""
    with _database(args, check_schema=False) as (conn, dsn, _):
        applied = upgrade(conn)
        for mig in applied:
            out(f"applied {mig.version:04d} {mig.name}")
        if applied:
            out(f"schema of {mask_url(dsn)} is now at version {SCHEMA_VERSION}")
        else:
            out(f"schema of {mask_url(dsn)} is up to date (version {SCHEMA_VERSION})")
    return 0


@_command
def cmd_db_seed(args: argparse.Namespace) -> int:
    """``mdgate db seed``: insert the loaded providers and their exchange mappings."""
    with _database(args) as (conn, dsn, settings):
        plan = seed_plan([hooks.spec for hooks in _registry(settings).providers.values()], settings)
        result = seed(conn, plan, reset=bool(getattr(args, "reset", False)))
    verb = "inserted or reset" if getattr(args, "reset", False) else "inserted"
    out(
        f"seeded {mask_url(dsn)}: {verb} {result.providers} provider(s), "
        f"{result.exchanges} exchange(s), {result.mappings} exchange mapping(s)"
    )
    return 0


@_command
def cmd_db_status(args: argparse.Namespace) -> int:
    """``mdgate db status``: applied and pending migrations."""
    with _database(args, check_schema=False) as (conn, dsn, _):
        applied = {a.version: a for a in applied_migrations(conn)}
    current = max(applied, default=0)
    pending = [m for m in MIGRATIONS if m.version not in applied]
    state = "up to date" if not pending else f"{len(pending)} pending: run `mdgate db upgrade`"
    out(f"database: {mask_url(dsn)}")
    out(f"schema version: {current} (this mdgate needs {SCHEMA_VERSION}; {state})")
    rows: list[list[object]] = []
    for mig in MIGRATIONS:
        a = applied.get(mig.version)
        if a is None:
            rows.append([f"{mig.version:04d}", mig.name, "pending"])
        else:
            note = "" if a.checksum == mig.checksum else " (file changed since)"
            rows.append(
                [
                    f"{mig.version:04d}",
                    mig.name,
                    f"applied {a.applied_at:%Y-%m-%d %H:%M:%S%z}{note}",
                ]
            )
    for version in sorted(set(applied) - {m.version for m in MIGRATIONS}):
        rows.append(
            [
                f"{version:04d}",
                applied[version].name,
                "applied (unknown to this mdgate)",
            ]
        )
    for line in table(["VERSION", "NAME", "STATE"], rows, "  "):
        out(line)
    return 0


# ----------------------------------------------------------------- routes


def _registry(settings: Settings) -> Registry:
    from mdgate._providers.registry import load_registry

    return load_registry(settings.environ)


@_command
def cmd_routes(args: argparse.Namespace) -> int:
    """``mdgate routes``: exchange → providers, by priority."""
    settings = _settings(args)
    if _dsn(args, settings) is None:
        from mdgate._routing.router import config_table

        registry = _registry(settings)
        out(
            "No database configured: these are the built-in defaults (the routes the installed "
            "providers declare) with the config file's [exchanges] on top (set --database-url, "
            "MDGATE_DATABASE_URL or [database] url to use PostgreSQL)."
        )
        rows = [
            [
                r.exchange,
                r.priority,
                r.provider,
                registry.providers[r.provider].spec.code if r.provider in registry.providers else "?",
                _yes(r.primary),
                _yes(r.active),
            ]
            for ex, routes in sorted(config_table(registry, settings).exchanges.items())
            for r in routes
        ]
    else:
        with _database(args) as (conn, dsn, _):
            found = list_exchange_routes(conn)
        out(f"Routes in {mask_url(dsn)}:")
        rows = [
            [
                r.exchange,
                r.priority,
                r.provider,
                r.provider_code,
                _yes(r.primary),
                _yes(r.active) if r.provider_active else "no (provider inactive)",
            ]
            for r in found
        ]
        if not rows:
            out("  (none: run `mdgate db seed` or `mdgate routes set`)")
            return 0
    for line in table(["EXCHANGE", "PRIORITY", "PROVIDER", "CODE", "PRIMARY", "ACTIVE"], rows, "  "):
        out(line)
    return 0


@_command
def cmd_routes_set(args: argparse.Namespace) -> int:
    """``mdgate routes set EXCHANGE PROVIDER``: create or replace one mapping."""
    with _database(args) as (conn, _, _s):
        result = set_exchange_route(
            conn,
            args.exchange,
            args.provider,
            priority=args.priority,
            primary=args.primary,
            active=not args.inactive,
            create_exchange=args.create_exchange,
        )
        rows = [r for r in list_exchange_routes(conn) if r.exchange == args.exchange.upper()]
    if result.exchange_created:
        out(f"added exchange {args.exchange.upper()}")
    for name in result.demoted:
        out(f"{name} is no longer primary for {args.exchange.upper()}")
    out(f"{'added' if result.created else 'updated'} {args.exchange.upper()} -> {args.provider}")
    for line in table(
        ["EXCHANGE", "PRIORITY", "PROVIDER", "CODE", "PRIMARY", "ACTIVE"],
        [
            [
                r.exchange,
                r.priority,
                r.provider,
                r.provider_code,
                _yes(r.primary),
                _yes(r.active and r.provider_active),
            ]
            for r in rows
        ],
        "  ",
    ):
        out(line)
    return 0


@_command
def cmd_route(args: argparse.Namespace) -> int:
    """``mdgate route INSTRUMENT``: how an instrument resolves, and why."""
    from mdgate._routing.router import Router, config_table, parse_provider_configs

    try:
        name, exchange, _ = parse_instrument(args.instrument)
    except InstrumentError as exc:
        raise _Usage(str(exc)) from None
    settings = _settings(args)
    registry = _registry(settings)
    configs = parse_provider_configs(registry, settings)
    dsn = _dsn(args, settings)
    codes_by_provider: dict[str, str] = {}
    if dsn is None:
        route_table: RouteTable = config_table(registry, settings)
        where = "built-in defaults and the config file (no database configured)"
    else:
        with _database(args) as (conn, _, _s):
            route_table = load_route_table(conn)
            codes_by_provider = dict(conn.execute("SELECT name, code FROM providers").fetchall())
        where = mask_url(dsn)
    router = Router(registry, configs, route_table)
    routes = router.resolve(name)  # NoRouteError names the exchange

    def code_of(provider: str) -> str:
        hooks = registry.providers.get(provider)
        return hooks.spec.code if hooks is not None else codes_by_provider.get(provider, "?")

    out(f"{name} (routes from {where})")
    rows: list[list[object]] = []
    for i, r in enumerate(routes, 1):
        state = f"disabled: {configs.disabled[r.provider]}" if r.provider in configs.disabled else "ok"
        rows.append([i, r.provider, code_of(r.provider), r.code, r.reason, state])
    for line in table(["#", "PROVIDER", "PCODE", "CODE", "WHY", "STATE"], rows, "  "):
        out(line)
    used = {r.provider for r in routes}
    for row in route_table.exchanges.get(exchange, ()):
        if row.provider in used:
            continue
        if not row.active:
            why = "inactive"
        elif row.provider not in registry.providers:
            why = "not installed"
        else:
            why = f"no explicit mapping and its rule derives no code for {name}"
        out(f"  not a candidate: {row.provider} ({why})")
    live = [r for r in routes if r.provider not in configs.disabled]
    if live:
        out(
            f"served by {live[0].provider} as {live[0].code}"
            + (f"; failover to {', '.join(r.provider for r in live[1:])}" if live[1:] else "")
        )
    else:
        out(f"no enabled provider for {name}: every candidate is disabled")
        return 1
    return 0


# -------------------------------------------------------------- providers


@_command
def cmd_providers(args: argparse.Namespace) -> int:
    """``mdgate providers``: the providers table, and whether each is installed."""
    with _database(args) as (conn, dsn, settings):
        rows = list_providers(conn)
    installed = set(_registry(settings).providers)
    out(f"Providers in {mask_url(dsn)}:")
    for line in table(
        ["NAME", "CODE", "DISPLAY NAME", "RATE LIMIT", "ACTIVE", "INSTALLED"],
        [
            [
                p.name,
                p.code,
                p.display_name or "-",
                p.rate_limit or "-",
                _yes(p.active),
                _yes(p.name in installed),
            ]
            for p in rows
        ],
        "  ",
    ):
        out(line)
    return 0


@_command
def cmd_providers_add(args: argparse.Namespace) -> int:
    """``mdgate providers add NAME CODE``: a provider of a third-party plugin."""
    with _database(args) as (conn, _, _s):
        try:
            add_provider(
                conn, args.name, args.code, display_name=args.display_name or "", rate_limit=args.rate_limit
            )
        except ValueError as exc:
            raise _Usage(str(exc)) from None
    out(
        f"added provider {args.name} (code {args.code}); route exchanges to it with "
        f"`mdgate routes set EXCHANGE {args.name} --priority N`"
    )
    return 0


@_command
def cmd_providers_set(args: argparse.Namespace) -> int:
    """``mdgate providers set NAME``: switch a provider on or off, change its limit."""
    if args.rate_limit is not None and args.rate_limit <= 0:
        raise _Usage("--rate-limit must be positive")
    with _database(args) as (conn, _, _s):
        row = set_provider(
            conn, args.name, active=args.active, rate_limit=args.rate_limit, display_name=args.display_name
        )
    out(f"{row.name} (code {row.code}): active {_yes(row.active)}, rate limit {row.rate_limit or '-'}")
    return 0


# ------------------------------------------------------------ instruments


def _extra_pairs(items: list[str] | None) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Usage(f"--extra expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()
    return extra


@_command
def cmd_instruments_add(args: argparse.Namespace) -> int:
    """``mdgate instruments add INSTRUMENT PROVIDER CODE``: one explicit mapping."""
    try:
        name, exchange, _ = parse_instrument(args.instrument)
    except InstrumentError as exc:
        raise _Usage(str(exc)) from None
    mapping = InstrumentMapping(name, args.provider, args.code.strip(), _extra_pairs(args.extra))
    if not mapping.code:
        raise _Usage("CODE must not be empty")
    with _database(args) as (conn, _, _s):
        store_instrument_mappings(conn, [mapping])
        serves = conn.execute(
            """SELECT 1 FROM exchange_provider_mappings m
                 JOIN providers p ON p.id = m.provider_id
                 JOIN exchanges e ON e.id = m.exchange_id
                WHERE p.name = %s AND e.code = %s""",
            (args.provider, exchange),
        ).fetchone()
    out(f"{name} -> {args.provider} {mapping.code}")
    if serves is None:
        out(
            f"note: {args.provider} has no route for {exchange}, "
            "so this code is unused until "
            f"`mdgate routes set {exchange} {args.provider} --priority N`"
        )
    return 0


@_command
def cmd_instruments_list(args: argparse.Namespace) -> int:
    """``mdgate instruments list``: explicit mappings."""
    with _database(args) as (conn, _, _s):
        rows = list_instrument_mappings(
            conn, provider=args.provider, exchange=args.exchange, limit=args.limit
        )
    if not rows:
        out("no instrument mappings" + (" match" if args.provider or args.exchange else ""))
        return 0
    for line in table(
        ["INSTRUMENT", "PROVIDER", "CODE", "EXTRA"],
        [
            [
                r.instrument,
                r.provider,
                r.code,
                json.dumps(dict(r.extra), separators=(",", ":")) if r.extra else "",
            ]
            for r in rows
        ],
    ):
        out(line)
    return 0


@_command
def cmd_instruments_import(args: argparse.Namespace) -> int:
    """``mdgate instruments import --csv PATH --provider P``: bulk mappings from CSV."""
    mappings = read_csv_mappings(args.csv, args.provider)
    with _database(args) as (conn, _, _s):
        stored = store_instrument_mappings(conn, mappings)
    out(f"imported {stored} mapping(s) for {args.provider} from {args.csv}")
    return 0


# ---------------------------------------------------------------- parsers


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="PostgreSQL URL (default: [database] url or MDGATE_DATABASE_URL)",
    )
    return p


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``db``, ``routes``, ``route``, ``providers`` and ``instruments`` to the parser."""
    common = _common()
    add: Any = subparsers.add_parser

    db = add(
        "db",
        help="create, migrate and seed the routing database",
        description="Manage the PostgreSQL routing schema.",
    )
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    p = db_sub.add_parser("upgrade", parents=[common], help="apply pending migrations")
    p.set_defaults(func=cmd_db_upgrade)
    p = db_sub.add_parser(
        "seed",
        parents=[common],
        help="insert the default providers and exchange mappings",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="also put existing default rows back to their defaults",
    )
    p.set_defaults(func=cmd_db_seed)
    p = db_sub.add_parser("status", parents=[common], help="show applied and pending migrations")
    p.set_defaults(func=cmd_db_status)

    routes = add(
        "routes",
        parents=[common],
        help="show (or set) exchange -> provider routes",
        description="Without a sub-command: list exchange -> providers by priority.",
    )
    routes.set_defaults(func=cmd_routes)
    routes_sub = routes.add_subparsers(dest="routes_command", metavar="COMMAND")
    p = routes_sub.add_parser(
        "set",
        parents=[common],
        help="create or replace an exchange -> provider mapping",
    )
    p.add_argument("exchange", metavar="EXCHANGE")
    p.add_argument("provider", metavar="PROVIDER")
    p.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="lower is tried first (default: keep, or 0 for a new mapping)",
    )
    p.add_argument(
        "--primary",
        action="store_true",
        help="make it the exchange's primary (demotes the previous one)",
    )
    p.add_argument("--inactive", action="store_true", help="keep the row but do not use it")
    p.add_argument(
        "--create-exchange",
        action="store_true",
        help="add EXCHANGE if the database does not know it yet",
    )
    p.set_defaults(func=cmd_routes_set)

    p = add("route", parents=[common], help="explain how an instrument is routed")
    p.add_argument("instrument", metavar="INSTRUMENT", help="EXCHANGE:SYMBOL, e.g. NSE:RELIANCE")
    p.set_defaults(func=cmd_route)

    prov = add(
        "providers",
        parents=[common],
        help="show (add, change) providers in the database",
        description="Without a sub-command: list the providers table.",
    )
    prov.set_defaults(func=cmd_providers)
    prov_sub = prov.add_subparsers(dest="providers_command", metavar="COMMAND")
    p = prov_sub.add_parser(
        "add", parents=[common], help="add a provider (e.g. one a third-party plugin ships)"
    )
    p.add_argument("name", metavar="NAME", help="provider name as the plugin declares it")
    p.add_argument("code", metavar="CODE", help="provider code stored with its ticks")
    p.add_argument("--display-name", metavar="TEXT")
    p.add_argument("--rate-limit", type=int, metavar="N", help="requests per second (informational)")
    p.set_defaults(func=cmd_providers_add)
    p = prov_sub.add_parser("set", parents=[common], help="switch a provider on or off")
    p.add_argument("name", metavar="NAME")
    onoff = p.add_mutually_exclusive_group()
    onoff.add_argument("--active", dest="active", action="store_const", const=True, default=None)
    onoff.add_argument("--inactive", dest="active", action="store_const", const=False)
    p.add_argument("--rate-limit", type=int, metavar="N")
    p.add_argument("--display-name", metavar="TEXT")
    p.set_defaults(func=cmd_providers_set)

    inst = add("instruments", help="explicit instrument -> provider code mappings")
    inst_sub = inst.add_subparsers(dest="instruments_command", metavar="COMMAND", required=True)
    p = inst_sub.add_parser("add", parents=[common], help="add or replace one mapping")
    p.add_argument("instrument", metavar="INSTRUMENT")
    p.add_argument("provider", metavar="PROVIDER")
    p.add_argument("code", metavar="CODE")
    p.add_argument(
        "--extra",
        action="append",
        metavar="KEY=VALUE",
        help="provider-specific field (repeatable), e.g. segment=NSE_EQ",
    )
    p.set_defaults(func=cmd_instruments_add)
    p = inst_sub.add_parser("list", parents=[common], help="list mappings")
    p.add_argument("--provider", metavar="P")
    p.add_argument("--exchange", metavar="E")
    p.add_argument("--limit", type=int, metavar="N")
    p.set_defaults(func=cmd_instruments_list)
    p = inst_sub.add_parser(
        "import",
        parents=[common],
        help="import mappings from a CSV file (instrument,code[,extra...])",
    )
    p.add_argument("--csv", required=True, metavar="PATH")
    p.add_argument("--provider", required=True, metavar="P")
    p.set_defaults(func=cmd_instruments_import)
