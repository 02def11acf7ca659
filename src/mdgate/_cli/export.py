"""
``mdgate export``: stored ticks or bars of instruments, or the ticks of a
recording, as CSV or Parquet (the work itself is in :mod:`mdgate._export`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from mdgate._cli.common import parse_time, registry
from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.errors import CommandFailed
from mdgate._errors import ConfigError, InstrumentError
from mdgate._model import Bar, Tick, parse_instrument

if TYPE_CHECKING:  # the writers are imported when a command runs (`mdgate --help` stays light)
    from mdgate._export import RowWriter

__all__ = ["export"]

NO_STORE = ("no tick store configured: mdgate export reads the Redis store; set [redis] url in the "
            "config or MDGATE_REDIS_URL (or export a recording with --from-recording DIR)")


@click.command("export", short_help="write stored ticks or bars as CSV or Parquet")
@click.argument("instruments", nargs=-1, required=True, metavar="INSTRUMENT...")
@click.option("--since", help="epoch ms, ISO time, or an age such as 15m, 2h, 1d")
@click.option("--until", help="epoch ms, ISO time, or an age")
@click.option("--bars", type=click.Choice(["1m", "5m", "15m"]),
              help="export bars of this interval, not ticks")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True,
              help="parquet needs the mdgate[parquet] extra")
@click.option("--output", "-o", default="-", show_default=True, metavar="PATH|-",
              help="the file to write (replaced only once complete); - = standard output")
@click.option("--from-recording", "recording", metavar="DIR", type=click.Path(path_type=Path),
              help="the ticks a recording decodes to (through the providers' decoders), not the store")
@pass_context
def export(obj: CommandContext, instruments: tuple[str, ...], since: str | None, until: str | None,
           bars: str | None, fmt: str, output: str, recording: Path | None) -> None:
    """
    Write ticks (or --bars) of INSTRUMENT... from --since to --until as CSV or Parquet.

    Reads the Redis store page by page (bounded memory); rows come instrument
    by instrument in the order given, each oldest first. The columns are the
    tick's (or bar's) fields; times are epoch milliseconds, UTC. With
    --from-recording DIR, the recording is replayed as fast as possible
    through the providers' decoders and its ticks of INSTRUMENT... with a
    tick time (ts) in range are written, in replay order.
    """
    names = _instrument_names(instruments)
    since_ms, until_ms = parse_time(since), parse_time(until)
    if recording is not None and bars is not None:
        raise click.UsageError("--bars reads the store's bars: it cannot be used with --from-recording")
    from mdgate._export import CsvRows, ParquetRows, load_pyarrow

    if fmt == "parquet":
        load_pyarrow()  # fail before reading anything
    kind: type[Tick | Bar] = Bar if bars else Tick
    store = _store(obj) if recording is None else None
    with _opened(output, binary=fmt == "parquet") as stream:
        writer: RowWriter = ParquetRows(stream, kind) if fmt == "parquet" else CsvRows(stream, kind)
        if recording is None:
            _from_store(store, names, bars, since_ms, until_ms, writer)
        else:
            _from_recording(obj, recording, names, since_ms, until_ms, writer)
        writer.close()
    what = f"{bars} bars" if bars else "ticks"
    where = "standard output" if output == "-" else output
    click.echo(f"mdgate: exported {writer.rows} {what} of {len(names)} instrument(s) to {where}", err=True)


def _instrument_names(instruments: Sequence[str]) -> list[str]:
    names: list[str] = []
    for text in instruments:
        try:
            name, _, _ = parse_instrument(text)
        except InstrumentError as exc:
            raise click.BadParameter(str(exc), param_hint="INSTRUMENT") from None
        if name not in names:
            names.append(name)
    return names


def _store(obj: CommandContext) -> Any:
    settings = obj.settings
    if settings.redis.url is None:
        raise ConfigError("redis.url", NO_STORE)
    return registry(obj).pm.hook.mdgate_store(settings=settings)


@contextmanager
def _opened(output: str, *, binary: bool) -> Iterator[IO[Any]]:
    """The output stream: standard output, or ``PATH.part`` renamed to PATH once complete."""
    if output == "-":
        stream: IO[Any] = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    path = Path(output)
    part = path.with_name(path.name + ".part")
    try:
        fh = part.open("wb") if binary else part.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise click.FileError(output, exc.strerror) from None
    try:
        with fh:
            yield fh
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _from_store(store: Any, names: list[str], interval: str | None, since: int | None, until: int | None,
                writer: RowWriter) -> None:
    import anyio

    from mdgate._export import bar_pages, tick_pages

    async def run() -> None:
        try:
            for name in names:
                if interval is None:
                    async for ticks in tick_pages(store, name, since, until):
                        writer.write(ticks)
                else:
                    async for bars in bar_pages(store, name, interval, since, until):
                        writer.write(bars)
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()

    anyio.run(run)


def _from_recording(obj: CommandContext, directory: Path, names: list[str], since: int | None,
                    until: int | None, writer: RowWriter) -> None:
    import anyio

    from mdgate._config import RecordSettings, RedisSettings
    from mdgate._recording.format import RecordingError
    from mdgate._recording.run import run_replay

    base = obj.settings
    # Its own gateway on a free loopback port that neither stores nor records what it replays.
    settings = dataclasses.replace(
        base, server=dataclasses.replace(base.server, host="127.0.0.1", port=0), redis=RedisSettings(),
        record=RecordSettings(),
    )
    reg = registry(obj)
    wanted = frozenset(names)
    lo = -(2**63) if since is None else since
    hi = 2**63 if until is None else until

    def sink(batch: list[Tick]) -> None:
        writer.write([t for t in batch if t.instrument in wanted and lo <= t.ts <= hi])

    async def run() -> None:
        await run_replay(settings, directory, speed=None, registry=reg, sink=sink)

    try:
        anyio.run(run)
    except RecordingError as exc:
        raise CommandFailed(f"--from-recording: {exc}") from None
