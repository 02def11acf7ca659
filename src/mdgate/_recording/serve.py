"""
A recording served as provider endpoints: ``mdgate replay PATH --serve``.

One WebSocket server on the loopback interface; the path ``/<provider>``
(``/yahoo``, ``/dhan``...; a query string is ignored) serves that provider's
recorded frames to every client that connects, from the start: every
``frame`` record of the provider, of all its recorded connections, in
recorded order, a text frame as text and a binary one as binary, paced by the
recorded receive times (divided by ``speed``; ``None``: as fast as the client
takes them). What the client sends (handshake, subscribe, heartbeats) is read
and ignored, except that the first frame waits until the client has sent as
many messages as the recorded connection had sent before it (its subscribe:
the client then knows its codes), at most :data:`SEND_WAIT` seconds. At the
end the connection is closed with 1000, or the recording starts again
(``loop``). A path naming no provider of the recording is answered HTTP 404.

A second gateway is pointed at it with, e.g.::

    [providers.yahoo]
    url = "ws://127.0.0.1:PORT/yahoo"
"""

from __future__ import annotations

import functools
import http
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import structlog
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdgate._recording.format import read_records

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

__all__ = ["SEND_WAIT", "recorded_providers", "run_serve", "serve_lines", "serve_recording"]

log = structlog.get_logger("mdgate.recording")

#: Seconds the first frame waits for the client's subscribe (see the module docstring).
SEND_WAIT: Final = 2.0
#: As fast as possible: hand the loop back after this many frames.
_YIELD_EVERY: Final = 64
#: The pacing clock and sleep (a test replaces them with a clock it controls).
_clock: Callable[[], float] = anyio.current_time
_sleep: Callable[[float], Awaitable[None]] = anyio.sleep


def recorded_providers(directory: str | Path) -> dict[str, int]:
    """
    The providers with frames in the recording, in order of their first frame, each with
    the number of frames its connection had sent before that first frame.

    Raises:
        RecordingError: the recording cannot be read.
    """
    sent: dict[tuple[str, int], int] = {}
    out: dict[str, int] = {}
    for rec in read_records(directory):
        if rec.kind == "open":
            sent[(rec.provider, rec.conn)] = 0
        elif rec.kind == "send":
            key = (rec.provider, rec.conn)
            sent[key] = sent.get(key, 0) + 1
        elif rec.kind == "frame" and rec.provider not in out:
            out[rec.provider] = sent.get((rec.provider, rec.conn), 0)
    return out


async def _drain(ws: ServerConnection, wanted: int, enough: anyio.Event, done: anyio.CancelScope) -> None:
    """
    Read (and ignore) what the client sends; set ``enough`` once it has sent ``wanted`` messages;
    cancel ``done`` (the playing) when the connection closes.
    """
    seen = 0
    if seen >= wanted:
        enough.set()
    try:
        async for _ in ws:
            seen += 1
            if seen >= wanted:
                enough.set()
    except ConnectionClosed:
        pass
    done.cancel()


async def _play(ws: ServerConnection, directory: Path, provider: str, speed: float | None) -> int:
    """Send the provider's frames once, paced; return how many were sent."""
    start = _clock()
    t0: int | None = None
    sent = 0
    for rec in read_records(directory):
        if rec.kind != "frame" or rec.provider != provider:
            continue
        if t0 is None:
            t0 = rec.t
        if speed is not None:
            delay = start + (rec.t - t0) / 1000 / speed - _clock()
            if delay > 0:
                await _sleep(delay)
        elif sent % _YIELD_EVERY == 0:  # the first of each pass too: a short recording looped
            await anyio.lowlevel.checkpoint()
        await ws.send(rec.data)
        sent += 1
    return sent


async def serve_recording(
    directory: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | None = 1.0,
    loop: bool = False,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """
    Serve the recording's frames, provider by path, until cancelled (see the module docstring).

    Args:
        directory: the recording.
        host: the address to listen on (loopback).
        port: the port; 0 picks a free one.
        speed: 1 = as recorded, N = N times faster, None = as fast as possible.
        loop: at the end, start again instead of closing the connection.
        task_status: started with the port listened on.

    Raises:
        RecordingError: the recording cannot be read.
        ValueError: ``speed`` is not positive.
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    path = Path(directory)
    providers = recorded_providers(path)

    def provider_of(request_path: str) -> str:
        return urlsplit(request_path).path.strip("/")

    def process_request(_ws: ServerConnection, request: Request) -> Response | None:
        name = provider_of(request.path)
        if name in providers:
            return None
        body = f"no frames of provider {name!r} in this recording (paths: {_paths(providers)})\n"
        return _ws.respond(http.HTTPStatus.NOT_FOUND, body)

    async def handler(ws: ServerConnection) -> None:
        name = provider_of(ws.request.path if ws.request else "")
        enough = anyio.Event()
        log.info("replay_serve_client", provider=name)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, ws, providers[name], enough, tg.cancel_scope)
            try:
                with anyio.move_on_after(SEND_WAIT):
                    await enough.wait()
                sent = await _play(ws, path, name, speed)
                while loop:
                    sent += await _play(ws, path, name, speed)
                log.info("replay_serve_done", provider=name, frames=sent)
                await ws.close(1000, "end of recording")
            except ConnectionClosed:
                log.info("replay_serve_client_gone", provider=name)
            tg.cancel_scope.cancel()

    async with serve(handler, host, port, process_request=process_request, compression=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        log.info("replay_serve_started", host=host, port=bound, providers=list(providers))
        task_status.started(bound)
        await anyio.sleep_forever()


def _paths(providers: dict[str, int]) -> str:
    return ", ".join(f"/{p}" for p in providers) or "none"


def serve_lines(host: str, port: int, providers: dict[str, int]) -> list[str]:
    """What ``mdgate replay --serve`` prints: the configuration pointing a gateway at each provider."""
    lines = [f"serving {len(providers)} provider(s) of the recording on ws://{host}:{port}/<provider>;"
             " point a gateway at them with:"]
    for name in providers:
        lines += [f"  [providers.{name}]", f'  url = "ws://{host}:{port}/{name}"']
    return lines


async def run_serve(
    directory: str | Path,
    *,
    port: int = 0,
    speed: float | None = 1.0,
    loop: bool = False,
    echo: Callable[[str], None] = print,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """
    ``mdgate replay PATH --serve``: serve the recording on 127.0.0.1 and print how to use it, until cancelled.

    Args:
        directory: the recording.
        port: the port (0: a free one).
        speed: 1 = as recorded, N = N times faster, None = as fast as possible.
        loop: start again at the end instead of closing.
        echo: prints one line (``click.echo``).
        task_status: started with the port listened on.

    Raises:
        RecordingError: the recording cannot be read.
    """
    host = "127.0.0.1"
    providers = recorded_providers(directory)
    async with anyio.create_task_group() as tg:
        bound: int = await tg.start(
            functools.partial(serve_recording, directory, host=host, port=port, speed=speed, loop=loop))
        for line in serve_lines(host, bound, providers):
            echo(line)
        task_status.started(bound)
