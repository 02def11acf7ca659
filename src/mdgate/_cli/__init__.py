"""
The ``mdgate`` command line (no logic of its own: it calls the modules).

    mdgate run                      run the gateway
    mdgate plugins                  installed plugins and their providers
    mdgate status                   a running gateway's /status as a table
    mdgate tail INSTRUMENT...       print ticks as they arrive
    mdgate history INSTRUMENT       stored ticks or bars

Plugins add more (``mdgate db``, ``mdgate routes``, ``mdgate dhan``...)
through the ``mdgate_add_commands`` hook.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from mdgate import __version__
from mdgate._cli.frontdoor import (
    CONFIG_HELP,
    EXIT_CONFIG,
    EXIT_RUNTIME,
    add_config_option,
    check_listen,
    one_error,
)
from mdgate._errors import ConfigError, MdgateError

__all__ = ["build_parser", "main"]


def _err(message: str) -> None:
    print(f"mdgate: {message}", file=sys.stderr)


def _settings(args: argparse.Namespace) -> Any:
    from mdgate._config import load_settings

    return load_settings(args.config, os.environ)


def _base_url(args: argparse.Namespace) -> str:
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    s = _settings(args).server
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    return f"http://{host}:{s.port}"


def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token", None):
        return str(args.token)
    env = os.environ.get("MDGATE_TOKEN")
    if env:
        return env
    try:
        tokens = _settings(args).server.tokens
    except ConfigError:
        return None
    return tokens[0].reveal() if tokens else None


# -- run -----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT/SIGTERM; SIGHUP reloads the configuration."""
    import dataclasses

    import structlog

    from mdgate._app import Gateway
    from mdgate._logging import configure_logging

    settings = _settings(args)
    if args.host or args.port is not None:
        server = dataclasses.replace(
            settings.server,
            host=args.host or settings.server.host,
            port=settings.server.port if args.port is None else args.port,
        )
        settings = dataclasses.replace(settings, server=server)
    host, port = settings.server.host, settings.server.port
    # before any log line or provider connection: a bad or busy address is one line, not a start
    check_listen(host, port)
    configure_logging(settings.logging)
    log = structlog.get_logger("mdgate")
    gateway = Gateway(settings, config_path=settings.source)

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
                    async for signum in sigs:
                        if signum == signal.SIGHUP:
                            gateway.reload()
                        else:
                            log.info("signal_received", signal=signal.Signals(signum).name)
                            gateway.stop()

            tg.start_soon(signals)
            await gateway.run()
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except (BaseExceptionGroup, OSError) as exc:
        # a ConfigError raised inside the task tree (e.g. the database schema is behind), or the
        # listen socket taken in the meantime, is still one line, not a traceback
        error = one_error(exc, host, port)
        if error is None:
            raise
        raise error from None
    return 0


# -- plugins -------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins: name, distribution, version, providers, hooks, load status (a failed one with why)."""
    from mdgate._providers.registry import load_registry

    # contains every plugin fault: always prints the table
    reg = getattr(args, "registry", None) or load_registry(os.environ)
    faults = reg.faults.status()
    rows: list[dict[str, Any]] = []
    for info in reg.plugins:
        providers = []
        for name in info.providers:
            spec = reg.providers[name].spec
            providers.append(
                {
                    "name": spec.name,
                    "code": spec.code,
                    "exchanges": list(spec.exchanges),
                    "max_per_message": spec.max_per_message,
                    "max_per_connection": spec.max_per_connection,
                    "max_connections": spec.max_connections,
                    "settings": dict(spec.settings),
                    "secrets": list(spec.secrets),
                }
            )
        rows.append(
            {
                "name": info.name,
                "module": info.module,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "status": info.status,
                "error": info.error,
                "failed_in": sorted(faults.get(info.name, {}).get("failed", {})),
                "hooks": info.hooks,
                "providers": providers,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'PLUGIN':<14} {'STATUS':<11} {'DISTRIBUTION':<22} {'PROVIDERS':<22} HOOKS")
    for r in rows:
        dist = f"{r['distribution'] or '-'} {r['version'] or ''}".strip()
        provs = (
            ", ".join(f"{p['name']} ({p['code']}: {'/'.join(p['exchanges'])})" for p in r["providers"]) or "-"
        )
        print(f"{r['name']:<14} {r['status']:<11} {dist:<22} {provs:<22} {', '.join(r['hooks'])}")
        if r["error"]:
            print(f"{'':<14} error: {r['error']}")
    return 0


# -- status ----------------------------------------------------------------------


def _ago(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms < 120_000 else f"{ms / 60000:.0f}m"


def cmd_status(args: argparse.Namespace) -> int:
    """Show a running gateway's /status."""
    import httpx

    url = _base_url(args) + "/status"
    headers = {}
    token = _token(args)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = httpx.get(url, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        _err(f"cannot reach {url}: {exc}")
        return 1
    if resp.status_code != 200:
        _err(f"{url} answered HTTP {resp.status_code}: {resp.text.strip()}")
        return 1
    doc = resp.json()
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"status: {doc['status']}   clients: {doc['clients']}   "
        f"store: {doc['store'].get('kind')} {doc['store'].get('state')} "
        f"(buffered {doc['store'].get('buffered', 0)}, dropped {doc['store'].get('dropped', 0)})"
    )
    print(
        f"{'PROVIDER':<10} {'STATE':<13} {'CONN':>4} {'SUBS':>6} {'LAST MSG':>9} {'RECONN':>6} "
        f"{'FRAMES':>9} {'TICKS':>9} {'ERRORS':>6}  LAST ERROR"
    )
    for name, p in doc["providers"].items():
        print(
            f"{name:<10} {p['state']:<13} {p['connections']:>4} {p['subscriptions']:>6} "
            f"{_ago(p['last_message_age_ms']):>9} {p['reconnects']:>6} {p['frames']:>9} "
            f"{p['ticks']:>9} {p['decode_errors']:>6}  {p['last_error'] or ''}"
        )
        if p.get("hint"):
            print(f"{'':<10} hint: {p['hint']}")
    routing = doc.get("routing", {})
    if routing:
        print(
            f"routes: {routing.get('source')}; instruments: {routing.get('instruments')} "
            f"{routing.get('by_provider')}"
        )
        for sw in routing.get("switches", [])[-5:]:
            print(
                f"  switch {sw['instrument']}: {sw['from_provider']} -> {sw['to_provider']} ({sw['reason']})"
            )
        for problem in routing.get("problems", []):
            print(f"  problem: {problem}")
    for name, p in doc.get("plugins", {}).items():
        if p.get("state", "ok") != "ok" or p.get("faults"):
            print(f"plugin {name}: {p.get('state')}, {p.get('faults')} faults; last in "
                  f"{p.get('last_hook')}: {p.get('last_error')}")
    server = doc.get("server", {})
    refused = {k: v for k, v in (server.get("refused") or {}).items() if v}
    closed = {k: v for k, v in (server.get("closed") or {}).items() if v}
    if refused or closed:
        print("clients refused: " + (", ".join(f"{k} {v}" for k, v in refused.items()) or "-")
              + "; closed: " + (", ".join(f"{k} {v}" for k, v in closed.items()) or "-"))
    return 0


# -- tail ------------------------------------------------------------------------


def _fmt_tick(t: dict[str, Any]) -> str:
    ts = datetime.fromtimestamp(t["ts"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    extra = " ".join(f"{k}={t[k]}" for k in ("size", "volume", "bid", "ask", "prev_close") if k in t)
    return f"{ts} {t['instrument']:<18} {t['price']:>12} {t['provider']:<5} {extra}"


def cmd_tail(args: argparse.Namespace) -> int:
    """Connect as a client and print ticks as they arrive."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    base = _base_url(args).replace("http://", "ws://").replace("https://", "wss://")
    headers = {}
    token = _token(args)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    count = 0

    async def main() -> int:
        nonlocal count
        try:
            async with connect(base + "/ws", additional_headers=headers, open_timeout=5) as ws:
                await ws.send(json.dumps({"op": "subscribe", "instruments": args.instruments}))
                subscribed = False
                deadline = time.monotonic() + args.seconds if args.seconds else None
                while True:
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    with anyio.move_on_after(timeout) as scope:
                        raw = await ws.recv()
                    if scope.cancelled_caught:
                        return 0
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    subscribed = subscribed or kind == "subscribed"
                    if args.json:
                        print(json.dumps(msg), flush=True)
                    elif kind in ("ticks", "snapshot"):
                        for t in msg["ticks"]:
                            print(("snap " if kind == "snapshot" else "") + _fmt_tick(t), flush=True)
                    elif kind == "error":
                        print(f"error {msg['code']}: {msg['message']}", file=sys.stderr, flush=True)
                        if not subscribed:  # every instrument was refused: nothing will come
                            return 1
                    else:
                        print(f"{kind}: {', '.join(msg.get('instruments', []))}", flush=True)
                    if kind in ("ticks", "snapshot"):
                        count += len(msg["ticks"])
                    if args.count and count >= args.count:
                        return 0
        except InvalidStatus as exc:
            _err(f"{base}/ws refused the connection: HTTP {exc.response.status_code}")
            return 1
        except (OSError, TimeoutError) as exc:
            _err(f"cannot reach {base}/ws: {exc}")
            return 1
        except ConnectionClosed as exc:
            _err(f"connection closed: {exc}")
            return 1

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        return 0


# -- history ---------------------------------------------------------------------


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            "--since/--until", f"expected epoch ms, 15m/2h/1d, or ISO time, got {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def cmd_history(args: argparse.Namespace) -> int:
    """Print stored ticks or bars of one instrument (Redis directly, else the running daemon)."""
    import httpx

    from mdgate._model import parse_instrument

    name, _, _ = parse_instrument(args.instrument)
    since, until = _parse_time(args.since), _parse_time(args.until)
    interval = args.bars or "ticks"
    settings = _settings(args)
    rows: list[dict[str, Any]]
    if settings.redis.url is not None and not args.url:
        from mdgate._providers.registry import load_registry

        store = load_registry(os.environ).pm.hook.mdgate_store(settings=settings)

        async def read() -> list[Any]:
            if interval == "ticks":
                return list(await store.history(name, since_ms=since, until_ms=until, limit=args.limit))
            return list(await store.bars(name, interval, since_ms=since, until_ms=until, limit=args.limit))

        import msgspec

        rows = msgspec.to_builtins(anyio.run(read))
    else:
        params: dict[str, Any] = {"instrument": name, "interval": interval, "limit": args.limit}
        if since is not None:
            params["since"] = since
        if until is not None:
            params["until"] = until
        headers = {}
        token = _token(args)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = _base_url(args) + "/history"
        try:
            resp = httpx.get(url, params=params, headers=headers, timeout=10.0)
        except httpx.HTTPError as exc:
            _err(f"cannot reach {url}: {exc} (configure [redis] url to read Redis directly)")
            return 1
        if resp.status_code != 200:
            _err(f"{url} answered HTTP {resp.status_code}: {resp.text.strip()}")
            return 1
        doc = resp.json()
        rows = doc["ticks" if interval == "ticks" else "bars"]
    if args.json:
        print(json.dumps(rows))
        return 0
    if interval == "ticks":
        for t in rows:
            print(_fmt_tick(t))
    else:
        head = ("START (UTC)", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "COUNT")
        print(f"{head[0]:<20} " + " ".join(f"{h:>10}" for h in head[1:]))
        for b in rows:
            start = datetime.fromtimestamp(b["start"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
            print(
                f"{start:<20} {b['open']:>10} {b['high']:>10} {b['low']:>10} {b['close']:>10} "
                f"{b['volume']:>12} {b['count']:>6}"
            )
    return 0


# -- backfill --------------------------------------------------------------------


def cmd_backfill(args: argparse.Namespace) -> int:
    """Fetch one-minute bars from a provider's REST backfill (``mdgate_backfill``)."""
    import msgspec

    from mdgate._providers.calls import backfill
    from mdgate._providers.registry import load_registry
    from mdgate._routing.router import Router

    settings = _settings(args)
    registry = load_registry(os.environ)
    router = Router.from_settings(registry, settings)
    routes = router.resolve(args.instrument)
    if args.provider:
        routes = [r for r in routes if r.provider == args.provider]
        if not routes:
            _err(f"{args.provider!r} does not serve {args.instrument}")
            return 1
    since = _parse_time(args.since) or int((time.time() - 3600) * 1000)
    until = _parse_time(args.until) or int(time.time() * 1000)
    for route in routes:
        config = router.configs.configs.get(route.provider)
        if config is None:
            continue
        pending = backfill(registry, route.provider, config=config, instrument=route.instrument,
                           code=route.code, start_ms=since, end_ms=until)  # plugin faults contained
        if pending is None:
            continue

        async def wait(p: Any = pending) -> Any:
            return await p

        bars = anyio.run(wait)
        print(json.dumps({"instrument": route.instrument, "provider": route.provider,
                          "bars": msgspec.to_builtins(bars)}))
        return 0
    _err(f"no provider of {args.instrument} can backfill (candidates: "
         f"{', '.join(r.provider for r in routes) or 'none'})")
    return 1


# -- parser ----------------------------------------------------------------------


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """Build the argument parser, with the sub-commands plugins add."""
    parser = argparse.ArgumentParser(
        prog="mdgate",
        description="mdgate: market-data gateway. Many providers in, one normalized tick stream out.",
    )
    parser.add_argument("--version", action="version", version=f"mdgate {__version__}")
    parser.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway until SIGINT/SIGTERM. "
        "SIGHUP reloads the configuration without dropping clients.",
    )
    p.add_argument("--host", help="listen address (overrides [server] host)")
    p.add_argument("--port", type=int, help="listen port (overrides [server] port)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plugins", help="list installed plugins and providers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    def client_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="gateway base URL (default: from [server] in the config)")
        p.add_argument("--token", help="access token (default: $MDGATE_TOKEN, else the config's first)")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("status", help="show a running gateway's status")
    client_opts(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tail", help="print ticks of instruments as they arrive")
    p.add_argument("instruments", nargs="+", metavar="INSTRUMENT", help="e.g. NASDAQ:AAPL NSE:RELIANCE")
    p.add_argument("--count", "-n", type=int, default=0, help="exit after N ticks")
    p.add_argument("--seconds", type=float, default=0, help="exit after S seconds")
    client_opts(p)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("history", help="print stored ticks or bars")
    p.add_argument("instrument", metavar="INSTRUMENT")
    p.add_argument("--since", help="epoch ms, ISO time, or an age such as 15m, 2h, 1d")
    p.add_argument("--until", help="epoch ms, ISO time, or an age")
    p.add_argument("--bars", choices=("1m", "5m", "15m"), help="print bars of this interval instead of ticks")
    p.add_argument("--limit", type=int, default=1000, help="most rows (default 1000)")
    client_opts(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("backfill", help="fetch one-minute bars from a provider's REST API")
    p.add_argument("instrument", metavar="INSTRUMENT")
    p.add_argument("--since", help="epoch ms, ISO time, or an age such as 2h (default 1h)")
    p.add_argument("--until", help="epoch ms, ISO time, or an age (default now)")
    p.add_argument("--provider", help="ask this provider (default: the best route that can)")
    p.set_defaults(func=cmd_backfill)

    if with_plugins:
        from mdgate._providers.calls import add_commands
        from mdgate._providers.registry import load_registry

        registry = load_registry(os.environ)
        parser.set_defaults(registry=registry)  # loaded once per command: each load failure logged once
        add_commands(registry, sub)  # a faulty plugin's commands are left out, logged
    add_config_option(parser)  # `mdgate run --config PATH` as well as `mdgate --config PATH run`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mdgate`` command."""
    from mdgate._config import LoggingSettings
    from mdgate._logging import configure_logging

    # commands other than `run` log warnings only, to stderr (never mixed with their output);
    # `run` reconfigures from [logging]
    configure_logging(LoggingSettings(level="warning", format="console"), stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        code = args.func(args)
        return int(code or 0)
    except ConfigError as exc:
        _err(f"config error: {exc}")
        return EXIT_CONFIG
    except MdgateError as exc:
        _err(str(exc))
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
