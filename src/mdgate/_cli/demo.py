"""
``mdgate demo``: the gateway fed by the bundled recording, on loop; no network, no credentials.

The gateway runs on embedded defaults (in-memory store, built-in routes;
``--config PATH`` only when given: ``./mdgate.toml`` and ``MDGATE_*`` variables
are not read, so a demo never writes into a real Redis), and its Yahoo and Dhan
connections are replayed from :data:`mdgate._demo.RECORDING` through the real
decoders and the whole pipeline (:mod:`mdgate._recording.replay`). Everything a
client sees is what ``mdgate run`` would serve: ``/ws``, ``/status``, the status page.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.frontdoor import check_listen, run_serving

if TYPE_CHECKING:
    from mdgate._config import Settings

__all__ = ["demo", "demo_settings"]

def demo_settings(obj: CommandContext, port: int) -> Settings:
    """
    The demo's settings: ``--config`` if given, else the embedded defaults;
    the recording's instrument codes and ``port``. Real Dhan credentials are
    left out (a replay connects nowhere; ``run_replay`` supplies placeholders,
    so that Dhan is not ``disabled`` and NSE does not fail over to Yahoo).
    """
    from mdgate._config import Settings
    from mdgate._demo import INSTRUMENT_CODES

    base = obj.settings if obj.config_path is not None else Settings(environ=dict(obj.environ))
    environ = {k: v for k, v in base.environ.items() if not k.startswith("DHAN_")}
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, port=port),
        instruments={**INSTRUMENT_CODES, **base.instruments},
        environ=environ,
    )


def _mdgate() -> str:
    """How to run this mdgate from the working directory (``.venv/bin/mdgate`` in a checkout)."""
    exe = Path(sys.executable).parent / "mdgate"
    try:
        return str(exe.relative_to(Path.cwd())) if exe.is_file() else "mdgate"
    except ValueError:
        return str(exe)


def _banner(host: str, port: int, speed: float) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    pace = "as recorded" if speed == 1 else f"{speed:g}x as recorded"
    url = "" if port == 8765 else f" --url http://{where}"
    return "\n".join(
        [
            f"mdgate demo: serving on {where}, replaying a bundled RECORDING on loop ({pace}):",
            "  synthetic ticks in Yahoo's and Dhan's real wire formats, not live market data.",
            "",
            f"  status page   http://{where}/",
            f"  ticks         {_mdgate()} tail NASDAQ:AAPL NSE:RELIANCE{url}",
            f"  status        curl {where}/status",
            f"  clients       ws://{where}/ws",
            "",
            "Ctrl-C stops it.",
        ]
    )


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # as every command's --config: the one given last wins
        ctx.ensure_object(CommandContext).config_path = value


@click.command(
    "demo",
    short_help="the gateway on a bundled recording (offline)",
    help=(
        "Run the gateway on embedded defaults, fed by a bundled recording of ten US (Yahoo) and ten NSE "
        "(Dhan) stocks, on loop: ticks within seconds, no network, no credentials. The recording is "
        "synthetic, not live data. SIGINT/SIGTERM stop it (exit 0)."
    ),
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="listen port")
@click.option(
    "--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
    help="replay speed: 1 = as recorded, 10 = ten times faster",
)
@click.option(
    "--config", "-c", metavar="PATH", expose_value=False, callback=_remember_config,
    help="TOML configuration file (default: none, the embedded defaults: ./mdgate.toml is not read)",
)
@pass_context
def demo(obj: CommandContext, port: int, speed: float) -> None:
    """Run the gateway fed by the bundled recording until SIGINT/SIGTERM."""
    settings = demo_settings(obj, port)
    host = settings.server.host
    check_listen(host, port)  # a busy port is one line, before anything starts
    _serve(settings, host, port, speed)


def _serve(settings: Settings, host: str, port: int, speed: float) -> None:
    import anyio

    from mdgate._demo import RECORDING
    from mdgate._recording.run import run_replay

    def ready(bound: int) -> None:
        click.echo(_banner(host, bound, speed))

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                    async for _signum in sigs:
                        tg.cancel_scope.cancel()  # stops the replay and the gateway with it
                        return

            tg.start_soon(signals)
            await run_replay(settings, RECORDING, speed=speed, loop=True, now=True, ready=ready)
            tg.cancel_scope.cancel()

    run_serving(main, host, port)
    click.echo("mdgate demo: stopped")
