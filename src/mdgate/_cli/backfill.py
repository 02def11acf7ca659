"""``mdgate backfill``: one-minute bars from a provider's REST API (``mdgate_backfill``)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from mdgate._cli.common import json_option, parse_time, registry as load_registry
from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.errors import CommandFailed

__all__ = ["backfill"]


@click.command("backfill", short_help="fetch one-minute bars from a provider's REST API")
@click.argument("instrument", metavar="INSTRUMENT")
@click.option("--since", help="epoch ms, ISO time, or an age such as 2h (default 1h)")
@click.option("--until", help="epoch ms, ISO time, or an age (default now)")
@click.option("--provider", help="ask this provider (default: the best route that can)")
@click.option("--store", "merge", is_flag=True,
              help="also merge the bars into the store's one-minute bars (Redis; live bars win)")
@json_option
@pass_context
def backfill(obj: CommandContext, instrument: str, since: str | None, until: str | None,
             provider: str | None, merge: bool, as_json: bool) -> None:
    """
    Fetch one-minute bars from a provider's REST backfill and print them as one
    JSON document (the output is JSON with or without --json). With --store,
    the bars are merged into the store where a minute has no bar yet, and the
    document says how many were added (``added``).
    """
    import anyio
    import msgspec

    from mdgate._providers.calls import backfill as call_backfill
    from mdgate._routing.router import Router

    settings = obj.settings
    registry = load_registry(obj)
    router = Router.from_settings(registry, settings)
    routes = router.resolve(instrument)
    if provider:
        routes = [r for r in routes if r.provider == provider]
        if not routes:
            raise CommandFailed(f"{provider!r} does not serve {instrument}")
    start = parse_time(since) or int((time.time() - 3600) * 1000)
    end = parse_time(until) or int(time.time() * 1000)
    for route in routes:
        config = router.configs.configs.get(route.provider)
        if config is None:
            continue
        pending = call_backfill(registry, route.provider, config=config, instrument=route.instrument,
                                code=route.code, start_ms=start, end_ms=end)  # plugin faults contained
        if pending is None:
            continue

        async def wait(p: Any = pending) -> Any:
            return await p

        bars = anyio.run(wait)
        doc = {"instrument": route.instrument, "provider": route.provider, "bars": msgspec.to_builtins(bars)}
        if merge:
            doc["added"] = _merge(obj, registry, route.instrument, bars)
        click.echo(json.dumps(doc))
        return
    raise CommandFailed(f"no provider of {instrument} can backfill (candidates: "
                        f"{', '.join(r.provider for r in routes) or 'none'})")


def _merge(obj: CommandContext, registry: Any, instrument: str, bars: list[Any]) -> int:
    """Merge ``bars`` into the configured store (``merge_bars``); return how many were added."""
    import anyio

    from mdgate._errors import ConfigError
    from mdgate._providers.calls import select_store

    store = select_store(registry, obj.settings)
    merge = getattr(store, "merge_bars", None)
    if store.kind == "memory" or not callable(merge):
        raise ConfigError("--store", f"the {store.kind} store cannot keep backfilled bars: set [redis] url "
                                     "(or MDGATE_REDIS_URL)")

    async def run() -> int:
        try:
            added: int = await merge(instrument, bars)
            return added
        finally:
            await store.aclose()

    return anyio.run(run)
