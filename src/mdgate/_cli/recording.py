"""``mdgate record`` (the gateway, recording every raw provider frame) and ``mdgate replay PATH``."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import click

from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.frontdoor import check_listen, run_serving

__all__ = ["record", "replay"]


@click.command(
    "record",
    short_help="run the gateway, recording every provider frame",
    help=(
        "Run the gateway (as `mdgate run`) and record every raw provider frame with its receive time, "
        "every subscription, reconnect and disconnect, into DIRECTORY (zstandard-compressed segments "
        "and an index.json; see docs/recording.md). Same as `[record] dir` in the config file. "
        "`mdgate replay DIRECTORY` plays it back."
    ),
)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="where to record (default: [record] dir, else recordings/YYYYMMDD-HHMMSS)")
@click.option("--host", help="listen address (overrides [server] host)")
@click.option("--port", type=int, help="listen port (overrides [server] port)")
@pass_context
@click.pass_context
def record(ctx: click.Context, obj: CommandContext, directory: Path | None, host: str | None,
           port: int | None) -> None:
    """Run the gateway with recording on."""
    from mdgate._cli.run import run

    settings = obj.settings
    where = directory or Path(settings.record.dir or time.strftime("recordings/%Y%m%d-%H%M%S"))
    if where.exists() and any(where.glob("*.mdrec")):
        raise click.UsageError(f"{where} already holds a recording: choose another --dir")
    recording = dataclasses.replace(settings.record, dir=str(where))
    obj.use_settings(dataclasses.replace(settings, record=recording))
    click.echo(f"mdgate record: recording into {where}", err=True)
    ctx.invoke(run, host=host, port=port)


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise click.BadParameter("expected a number (1: as recorded, 10: ten times faster) or max") from None
    if speed <= 0:
        raise click.BadParameter("must be above 0")
    return speed


@click.command(
    "replay",
    short_help="play a recording through the gateway",
    help=(
        "Play the recording in PATH through the real plugin decoders and the whole gateway (store, "
        "clients, status) at --speed 1 (as recorded), N (N times faster) or max, optionally on --loop. "
        "Receive times are the recorded ones (two replays give the same ticks), or now with --now. "
        "Prints what was replayed when the recording ends. With --serve, instead, serve the recorded "
        "frames in each provider's own wire format at ws://HOST:PORT/PROVIDER, for another gateway "
        "to connect to."
    ),
)
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--speed", default="1", show_default=True, help="1 = as recorded, N = N times faster, max")
@click.option("--loop", is_flag=True, help="start again at the end, until stopped")
@click.option("--now", is_flag=True, help="shift receive times so that the first frame is now")
@click.option("--serve", is_flag=True, help="serve the recording as provider endpoints instead")
@click.option("--host", help="listen address (overrides [server] host)")
@click.option("--port", type=int, help="listen port (overrides [server] port; with --serve default 0: free)")
@pass_context
def replay(obj: CommandContext, path: Path, speed: str, loop: bool, now: bool, serve: bool,
           host: str | None, port: int | None) -> None:
    """Play a recording through the gateway (or serve it as provider endpoints)."""
    from mdgate._recording.format import RecordingError, read_index

    pace = _speed(speed)
    try:
        read_index(path)
    except RecordingError as exc:
        raise click.UsageError(str(exc)) from None
    settings = obj.settings
    host = host or settings.server.host
    if serve:
        _serve_recording(path, host, port or 0, pace, loop)
        return
    port = settings.server.port if port is None else port
    server = dataclasses.replace(settings.server, host=host, port=port)
    settings = dataclasses.replace(settings, server=server)
    check_listen(host, port)
    obj._configure_logging(settings.logging)
    _replay(settings, path, pace, loop, now)


def _replay(settings: object, path: Path, speed: float | None, loop: bool, now: bool) -> None:
    import anyio

    from mdgate._config import Settings
    from mdgate._recording.run import run_replay

    assert isinstance(settings, Settings)
    host = settings.server.host

    def ready(port: int) -> None:
        click.echo(f"mdgate replay: {path} on {host}:{port} (speed {'max' if speed is None else f'{speed:g}'}"
                   f"{', loop' if loop else ''})", err=True)

    async def main() -> dict[str, object]:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                    async for _ in sigs:
                        stop.set()
                        return

            tg.start_soon(signals)
            summary = await run_replay(settings, path, speed=speed, loop=loop, now=now, ready=ready,
                                       stop=stop)
            tg.cancel_scope.cancel()
        return summary

    summary = run_serving(main, host, settings.server.port, settings.runtime.event_loop)
    click.echo(json.dumps(summary, sort_keys=True))


def _serve_recording(path: Path, host: str, port: int, speed: float | None, loop: bool) -> None:
    import anyio

    from mdgate._recording.serve import serve_recording

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            bound = await tg.start(lambda task_status: serve_recording(
                path, host=host, port=port, speed=speed, loop=loop, task_status=task_status))
            click.echo(f"mdgate replay: serving {path} at ws://{host}:{bound}/PROVIDER", err=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                async for _ in sigs:
                    break
            tg.cancel_scope.cancel()

    anyio.run(main)
