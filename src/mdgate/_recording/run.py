"""
A whole gateway fed by a recording: what ``mdgate replay``, ``mdgate demo``
and ``mdgate export --from-recording`` run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from mdgate._app import Gateway
from mdgate._config import Settings
from mdgate._model import Tick
from mdgate._providers.registry import Registry, load_registry
from mdgate._recording.replay import Replayer

__all__ = ["replay_settings", "run_replay"]

#: What a replayed provider's credentials are set to when absent: a replay connects nowhere.
PLACEHOLDER = "replay"


def replay_settings(settings: Settings, replayer: Replayer, registry: Registry | None = None) -> Settings:
    """
    ``settings`` with the recorded instruments subscribed (``always``, in
    recorded order, before the configured ones) and placeholder credentials
    for the replayed providers that have none (they connect nowhere).
    """
    always: dict[str, None] = {}
    for names in replayer.instruments.values():
        always.update(dict.fromkeys(names))
    always.update(dict.fromkeys(settings.subscriptions.always))
    environ = dict(settings.environ)
    if registry is not None:
        for name, hooks in registry.providers.items():
            if name in replayer.providers:
                for var in hooks.spec.secrets:
                    if not var.endswith("_FILE") and var not in environ:
                        environ[var] = PLACEHOLDER
    return dataclasses.replace(
        settings, environ=environ,
        subscriptions=dataclasses.replace(settings.subscriptions, always=tuple(always)))


async def run_replay(
    settings: Settings, directory: str | Path, *, speed: float | None = 1.0, loop: bool = False,
    now: bool = False, registry: Registry | None = None, ready: Callable[[int], None] | None = None,
    sink: Callable[[list[Tick]], None] | None = None, stop: anyio.Event | None = None,
) -> dict[str, Any]:
    """
    Run a gateway whose providers in the recording are fed from it (through
    their real decoders and the whole pipeline) until the recording ends
    (never with ``loop``); return what was replayed.

    Args:
        settings: the configuration (its ``[server]`` address is served; port 0: a free one).
        directory: the recording.
        speed: 1 = as recorded, N = N times faster, None = as fast as possible.
        loop: start again at the end, for ever.
        now: receive times shifted so that the first frame is "now" (else as recorded).
        registry: the plugins (default: discovered).
        ready: called with the port once the gateway serves.
        sink: called with every batch of ticks the pipeline hands on.
        stop: when set, the gateway shuts down gracefully (SIGTERM), as at the end.

    Returns:
        ``{"frames", "ticks", "decode_errors"}`` per provider, ``skipped`` frames, ``seconds``.
    """
    replayer = Replayer(directory, speed=speed, loop=loop, now=now)
    registry = registry or load_registry(settings.environ)
    settings = replay_settings(settings, replayer, registry)
    gw = Gateway(settings, registry, replayer=replayer)
    for name, session in gw.sessions.items():
        if name not in replayer.providers and session.disabled_reason is None:
            session.disabled_reason = "not in the recording being replayed"
    if sink is not None:
        publish = gw.pipeline.publish

        def tee(batch: list[Tick]) -> None:
            sink(batch)
            publish(batch)

        gw.pipeline.publish = tee
    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        port: int = await tg.start(gw.run)
        if ready is not None:
            ready(port)
        replayed = [gw.sessions[name] for name in replayer.providers if name in gw.sessions]
        async with anyio.create_task_group() as until:

            async def on(event: anyio.Event) -> None:
                await event.wait()
                until.cancel_scope.cancel()

            until.start_soon(on, replayer.finished)
            if stop is not None:
                until.start_soon(on, stop)
        if replayer.finished.is_set():
            # every frame handed out is decoded; wait until the pipeline has taken every tick
            while len(gw.queue) or gw.pipeline_stats.ticks < sum(s.ticks for s in replayed):
                await anyio.sleep(0.005)
        seconds = time.monotonic() - t0
        gw.stop()
        await gw.wait_stopped()
    return {
        "frames": {s.name: s.frames for s in replayed},
        "ticks": {s.name: s.ticks for s in replayed},
        "decode_errors": {s.name: dict(s.decode_errors) for s in replayed},
        "reconnects": {s.name: s.reconnects for s in replayed},
        "skipped": replayer.skipped,
        "seconds": round(seconds, 3),
    }
