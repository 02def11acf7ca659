"""
The commands that look at mdgate: ``plugins`` (what is installed),
``status`` and ``tail`` (a running gateway), ``history`` (stored ticks and bars).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from mdgate._cli.common import (
    auth_headers,
    base_url,
    client_options,
    fmt_tick,
    json_option,
    parse_time,
    registry,
    token as find_token,
)
from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.errors import CommandFailed

__all__ = ["history", "plugins", "status", "tail"]


# -- plugins -------------------------------------------------------------------


def _plugin_rows(obj: CommandContext) -> list[dict[str, Any]]:
    reg = registry(obj)  # contains every plugin fault: always prints the table
    faults = reg.faults.status()
    rows: list[dict[str, Any]] = []
    for info in reg.plugins:
        providers = []
        for name in info.providers:
            spec = reg.providers[name].spec
            providers.append({
                "name": spec.name, "code": spec.code, "exchanges": list(spec.exchanges),
                "primary": [e for e in spec.exchanges if spec.role(e) == "primary"],
                "backup": [e for e in spec.exchanges if spec.role(e) == "backup"],
                "max_per_message": spec.max_per_message, "max_per_connection": spec.max_per_connection,
                "max_connections": spec.max_connections, "settings": dict(spec.settings),
                "secrets": list(spec.secrets),
            })
        rows.append({
            "name": info.name, "module": info.module, "distribution": info.distribution,
            "version": info.version, "builtin": info.builtin, "status": info.status, "error": info.error,
            "failed_in": sorted(faults.get(info.name, {}).get("failed", {})), "hooks": info.hooks,
            "providers": providers, "api": info.api, "warnings": list(info.warnings),
        })
    return rows


@click.command("plugins", short_help="list installed plugins and providers")
@json_option
@pass_context
def plugins(obj: CommandContext, as_json: bool) -> None:
    """
    List plugins: name, load status, distribution and version, the plugin API
    it declares, providers (with their primary and backup exchanges), hooks;
    a failed one with why, and warnings (e.g. no declared plugin API).
    """
    rows = _plugin_rows(obj)
    if as_json:
        obj.print_json(rows)
        return
    click.echo(f"{'PLUGIN':<14} {'STATUS':<11} {'DISTRIBUTION':<22} {'API':<5} {'PROVIDERS':<22} HOOKS")
    for r in rows:
        dist = f"{r['distribution'] or '-'} {r['version'] or ''}".strip()
        provs = ", ".join(_provider_text(p) for p in r["providers"]) or "-"
        api, hooks = r["api"] or "-", ", ".join(r["hooks"])
        click.echo(f"{r['name']:<14} {r['status']:<11} {dist:<22} {api:<5} {provs:<22} {hooks}")
        if r["error"]:
            click.echo(f"{'':<14} error: {r['error']}")
        for warning in r["warnings"]:
            click.echo(f"{'':<14} warning: {warning}")


def _provider_text(p: dict[str, Any]) -> str:
    """``yahoo (YF: NASDAQ/NYSE; backup: NSE/BSE)``: a provider with its primary and backup exchanges."""
    backup = f"; backup: {'/'.join(p['backup'])}" if p["backup"] else ""
    return f"{p['name']} ({p['code']}: {'/'.join(p['primary']) or '-'}{backup})"


# -- status ----------------------------------------------------------------------


def _ago(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms < 120_000 else f"{ms / 60000:.0f}m"


def _get(url: str, headers: dict[str, str], timeout: float, params: dict[str, Any] | None = None,
         hint: str = "") -> Any:
    import httpx

    try:
        resp = httpx.get(url, params=params, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CommandFailed(f"cannot reach {url}: {exc}{hint}") from None
    if resp.status_code != 200:
        raise CommandFailed(f"{url} answered HTTP {resp.status_code}: {resp.text.strip()}")
    return resp.json()


@click.command("status", short_help="show a running gateway's status")
@client_options
@pass_context
def status(obj: CommandContext, url: str | None, token: str | None, as_json: bool) -> None:
    """Show a running gateway's /status."""
    doc = _get(base_url(obj, url) + "/status", auth_headers(obj, token), 5.0)
    if as_json:
        obj.print_json(doc)
        return
    for line in _status_lines(doc):
        click.echo(line)


def _status_lines(doc: dict[str, Any]) -> list[str]:
    store = doc["store"]
    lines = [
        f"status: {doc['status']}   clients: {doc['clients']}   "
        f"store: {store.get('kind')} {store.get('state')} "
        f"(buffered {store.get('buffered', 0)}, dropped {store.get('dropped', 0)})",
        f"{'PROVIDER':<10} {'STATE':<13} {'CONN':>4} {'SUBS':>6} {'LAST MSG':>9} {'RECONN':>6} "
        f"{'FRAMES':>9} {'TICKS':>9} {'ERRORS':>6}  LAST ERROR",
    ]
    for name, p in doc["providers"].items():
        lines.append(
            f"{name:<10} {p['state']:<13} {p['connections']:>4} {p['subscriptions']:>6} "
            f"{_ago(p['last_message_age_ms']):>9} {p['reconnects']:>6} {p['frames']:>9} "
            f"{p['ticks']:>9} {p['decode_errors']:>6}  {p['last_error'] or ''}"
        )
        if p.get("hint"):
            lines.append(f"{'':<10} hint: {p['hint']}")
    routing = doc.get("routing", {})
    if routing:
        lines.append(f"routes: {routing.get('source')}; instruments: {routing.get('instruments')} "
                     f"{routing.get('by_provider')}")
        for sw in routing.get("switches", [])[-5:]:
            lines.append(
                f"  switch {sw['instrument']}: {sw['from_provider']} -> {sw['to_provider']} ({sw['reason']})"
            )
        lines.extend(f"  problem: {problem}" for problem in routing.get("problems", []))
    for name, p in doc.get("plugins", {}).items():
        if p.get("state", "ok") != "ok" or p.get("faults"):
            lines.append(f"plugin {name}: {p.get('state')}, {p.get('faults')} faults; last in "
                         f"{p.get('last_hook')}: {p.get('last_error')}")
    server = doc.get("server", {})
    refused = {k: v for k, v in (server.get("refused") or {}).items() if v}
    closed = {k: v for k, v in (server.get("closed") or {}).items() if v}
    if refused or closed:
        lines.append("clients refused: " + (", ".join(f"{k} {v}" for k, v in refused.items()) or "-")
                     + "; closed: " + (", ".join(f"{k} {v}" for k, v in closed.items()) or "-"))
    return lines


# -- tail ------------------------------------------------------------------------


@click.command("tail", short_help="print ticks of instruments as they arrive")
@click.argument("instruments", nargs=-1, required=True, metavar="INSTRUMENT...")
@click.option("--count", "-n", type=int, default=0, help="exit after N ticks")
@click.option("--seconds", type=float, default=0, help="exit after S seconds")
@client_options
@pass_context
def tail(obj: CommandContext, instruments: tuple[str, ...], count: int, seconds: float,
         url: str | None, token: str | None, as_json: bool) -> None:
    """
    Connect as a client (:mod:`mdgate.client`: it reconnects and resumes by itself) and
    print ticks as they arrive (with --json: each event as a JSON line, in the frames' shapes).
    """
    import anyio

    base = base_url(obj, url).replace("http://", "ws://").replace("https://", "wss://")
    try:
        anyio.run(_tail, base + "/ws", find_token(obj, token), list(instruments), count, seconds, as_json)
    except KeyboardInterrupt:
        return


async def _tail(url: str, token: str | None, instruments: list[str], count: int, seconds: float,
                as_json: bool) -> None:
    import anyio

    from mdgate.client import ClientError, ErrorEvent, Subscribed, TickEvent, connect

    seen = 0
    subscribed = False
    with anyio.move_on_after(seconds or None):
        try:
            async with connect(url, token=token, open_timeout=5) as client:
                async for event in client.subscribe(instruments):
                    subscribed = subscribed or isinstance(event, Subscribed)
                    if isinstance(event, ErrorEvent) and not subscribed:  # all refused: nothing will come
                        raise CommandFailed(f"the gateway refused: error {event.code}: {event.message}")
                    _print_event(event, as_json)
                    seen += isinstance(event, TickEvent)
                    if count and seen >= count:
                        return
        except ClientError as exc:
            raise CommandFailed(str(exc)) from None


def _event_json(event: Any) -> dict[str, Any]:
    """An event as the frame it came in (a tick as a one-tick ``ticks`` or ``snapshot`` frame)."""
    import msgspec

    from mdgate.client import Reconnected, TickEvent

    if isinstance(event, TickEvent):
        return {"type": "snapshot" if event.snapshot else "ticks", "ticks": [event.to_dict()]}
    doc: dict[str, Any] = msgspec.to_builtins(event)
    kind = {"GapEvent": "gap", "GapFilledEvent": "gap_filled", "ProviderEvent": "provider",
            "ErrorEvent": "error", "Subscribed": "subscribed", "Unsubscribed": "unsubscribed"}
    doc = {"type": "reconnected" if isinstance(event, Reconnected) else kind[type(event).__name__], **doc}
    for key in ("recovered", "from_seq", "instrument", "from_provider"):
        if key in doc and not doc[key]:  # an empty `recovered`, an error about the whole request
            del doc[key]
    return {k: v for k, v in doc.items() if v is not None}  # absent on the wire: absent here


def _print_event(event: Any, as_json: bool) -> None:
    doc = _event_json(event)
    kind = doc["type"]
    if as_json:
        click.echo(json.dumps(doc))
    elif kind in ("ticks", "snapshot"):
        click.echo(("snap " if kind == "snapshot" else "") + fmt_tick(doc["ticks"][0]))
    elif kind == "error":
        click.echo(f"error {doc['code']}: {doc['message']}", err=True)
    elif kind == "reconnected":
        click.echo(f"reconnected after {doc['down_for']:.1f} s ({doc['attempts']} attempts): {doc['error']}",
                   err=True)
    elif kind in ("gap", "gap_filled"):
        what = f"({doc['reason']})" if kind == "gap" else ("filled" if doc["filled"] else "not filled")
        click.echo(f"{kind} {doc['instrument']}: {_hms(doc['from_ts'])} - {_hms(doc['to_ts'])} {what}")
    elif kind == "provider":
        click.echo(f"provider {doc['instrument']}: {doc['provider']}")
    else:
        click.echo(f"{kind}: {', '.join(doc.get('instruments', []))}")
    sys.stdout.flush()


def _hms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


# -- history ---------------------------------------------------------------------


@click.command("history", short_help="print stored ticks or bars")
@click.argument("instrument", metavar="INSTRUMENT")
@click.option("--since", help="epoch ms, ISO time, or an age such as 15m, 2h, 1d")
@click.option("--until", help="epoch ms, ISO time, or an age")
@click.option("--bars", type=click.Choice(["1m", "5m", "15m"]),
              help="print bars of this interval instead of ticks")
@click.option("--limit", type=int, default=1000, show_default=True, help="most rows")
@client_options
@pass_context
def history(obj: CommandContext, instrument: str, since: str | None, until: str | None, bars: str | None,
            limit: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Print stored ticks or bars of one instrument (Redis directly, else the running daemon)."""
    from mdgate._model import parse_instrument

    name, _, _ = parse_instrument(instrument)
    query = {"instrument": name, "interval": bars or "ticks", "limit": limit,
             "since": parse_time(since), "until": parse_time(until)}
    rows = _history_rows(obj, query, url, token)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if bars is None:
        for t in rows:
            click.echo(fmt_tick(t))
        return
    head = ("START (UTC)", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "COUNT")
    click.echo(f"{head[0]:<20} " + " ".join(f"{h:>10}" for h in head[1:]))
    for b in rows:
        start = datetime.fromtimestamp(b["start"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{start:<20} {b['open']:>10} {b['high']:>10} {b['low']:>10} {b['close']:>10} "
                   f"{b['volume']:>12} {b['count']:>6}")


def _history_rows(obj: CommandContext, query: dict[str, Any], url: str | None,
                  token: str | None) -> list[dict[str, Any]]:
    settings = obj.settings
    name, interval, limit = query["instrument"], query["interval"], query["limit"]
    since, until = query["since"], query["until"]
    if settings.redis.url is not None and not url:
        import anyio
        import msgspec

        store = registry(obj).pm.hook.mdgate_store(settings=settings)

        async def read() -> list[Any]:
            if interval == "ticks":
                return list(await store.history(name, since_ms=since, until_ms=until, limit=limit))
            return list(await store.bars(name, interval, since_ms=since, until_ms=until, limit=limit))

        rows: list[dict[str, Any]] = msgspec.to_builtins(anyio.run(read))
        return rows
    params = {k: v for k, v in query.items() if v is not None}
    doc = _get(base_url(obj, url) + "/history", auth_headers(obj, token), 10.0, params,
               hint=" (configure [redis] url to read Redis directly)")
    found: list[dict[str, Any]] = doc["ticks" if interval == "ticks" else "bars"]
    return found
