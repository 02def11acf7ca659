"""``mdgate run``: the gateway, until SIGINT/SIGTERM; SIGHUP reloads the configuration."""

from __future__ import annotations

import dataclasses
import gc
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.frontdoor import check_listen, run_serving

if TYPE_CHECKING:
    from mdgate._config import Settings
    from mdgate._providers.registry import Registry

__all__ = ["run"]


@click.command(
    "run",
    short_help="run the gateway",
    help="Run the gateway until SIGINT/SIGTERM. SIGHUP reloads the configuration without dropping clients.",
)
@click.option("--host", help="listen address (overrides [server] host)")
@click.option("--port", type=int, help="listen port (overrides [server] port)")
@click.option("--role", type=click.Choice(["all", "ingest", "fanout"]), default="all", show_default=True,
              help="all: one gateway; ingest: hold provider slots, store; fanout: serve clients from Redis "
                   "(see docs/scaling.md)")
@pass_context
@click.pass_context
def run(ctx: click.Context, obj: CommandContext, host: str | None, port: int | None, role: str) -> None:
    """Run the gateway until SIGINT/SIGTERM; SIGHUP reloads the configuration."""
    # Start-up builds long-lived objects only (settings, routes, one entry per instrument): the
    # cyclic collector's passes over them are a third of the start with 25,000 instruments. It is
    # off until the gateway serves, which then freezes what start-up built (no collection first).
    collecting = gc.isenabled()
    gc.disable()
    try:
        _start(ctx, obj, host, port, role, collecting)
    finally:
        if collecting:
            gc.enable()


def _start(
    ctx: click.Context, obj: CommandContext, host: str | None, port: int | None, role: str, collecting: bool,
) -> None:
    settings = obj.settings
    if host or port is not None:
        server = dataclasses.replace(
            settings.server,
            host=host or settings.server.host,
            port=settings.server.port if port is None else port,
        )
        settings = dataclasses.replace(settings, server=server)
    host, port = settings.server.host, settings.server.port
    if role != "all":  # a role missing Redis or PostgreSQL is one line naming the key
        from mdgate._fleet.roles import check_role

        check_role(role, settings)
    # before any log line or provider connection: a bad or busy address is one line, not a start
    check_listen(host, port)
    obj._configure_logging(settings.logging)  # the one configuration of this process's logging
    from mdgate._cli.common import registry

    def started() -> None:
        if collecting:
            gc.enable()
        # ask the plugins for their commands too: one whose mdgate_add_commands fails is logged at
        # start (once serving: their modules are not needed to serve)
        root = ctx.find_root()
        if isinstance(root.command, click.Group):
            root.command.list_commands(root)

    _serve(settings, host, port, role, registry(obj), started)  # the plugins loaded once, not twice


def _serve(
    settings: Settings, host: str, port: int, role: str = "all", plugins: Registry | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Run ``settings``' gateway until a signal stops it; ``started`` is called once it serves."""
    import anyio
    import anyio.abc
    import structlog

    from mdgate._app import Gateway

    log = structlog.get_logger("mdgate")
    gateway = Gateway(settings, plugins, config_path=settings.source, role=role)

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

            async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
                await gateway.run(task_status=task_status)
                tg.cancel_scope.cancel()

            tg.start_soon(signals)
            await tg.start(serve)
            if started is not None:
                started()

    # a ConfigError raised inside the task tree (e.g. the database schema is behind), or the
    # listen socket taken in the meantime, is still one line, not a traceback
    run_serving(main, host, port, settings.runtime.event_loop)
