"""
A provider the test scripts completely, for ProviderSession tests against a
ManualClock: no sockets, every connection attempt and every frame decided by
the test.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from mdgate._clock import ManualClock
from mdgate._config import RuntimeSettings
from mdgate._errors import ProviderConnectionError
from mdgate._model import Tick
from mdgate._provider import Frame, ProviderSpec
from mdgate._providers.faults import PluginFaults
from mdgate._providers.session import ProviderSession
from mdgate._queue import TickQueue

_CLOSED = object()


class ScriptedTransport:
    """One open connection: the test pushes frames or closes it."""

    def __init__(self) -> None:
        self._frames: deque[Any] = deque()
        self._arrived = anyio.Event()
        self.sent: list[Frame] = []
        self.closed = False

    def push(self, frame: Any) -> None:
        """Deliver one frame to the session."""
        self._frames.append(frame)
        self._arrived.set()

    def drop(self) -> None:
        """The provider goes away: the session's next recv raises."""
        self.push(_CLOSED)

    async def recv(self) -> Frame:
        while not self._frames:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        item = self._frames.popleft()
        if item is _CLOSED:
            raise ProviderConnectionError("fake", "connection dropped (no close frame)")
        result: Frame = item
        return result

    async def send(self, frame: Frame) -> None:
        self.sent.append(frame)

    async def aclose(self) -> None:
        self.closed = True


class ScriptedDecoder:
    """Decodes JSON ``[{"s", "p", "t"}]`` frames, or does what ``script.decode`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.codes: dict[str, str] = {}

    def track(self, code: str, instrument: str) -> None:
        self.codes[code] = instrument

    def untrack(self, code: str) -> None:
        self.codes.pop(code, None)

    def feed(self, frame: Frame, recv_ts: int) -> Any:
        if self.script.decode is not None:
            return self.script.decode(frame, recv_ts)
        return [Tick(self.codes[m["s"]], m["p"], m.get("t", recv_ts), recv_ts, "FK")
                for m in json.loads(frame)]


class Script:
    """Hooks of provider ``fake`` (plugin ``scripted``); each attribute is a knob for the test."""

    def __init__(self, **spec: Any) -> None:
        self.spec = ProviderSpec("fake", "FK", ("FAKE",), **{
            "max_per_message": 10, "max_per_connection": 10, "max_connections": 1,
            "stall_timeout": 4.0, **spec})
        self.plugin = "scripted"
        #: Exception raised by the next ``open()`` (None: the connection opens).
        self.refuse: BaseException | None = ProviderConnectionError("fake", "cannot connect: refused")
        self.opens = 0
        self.transports: list[ScriptedTransport] = []
        self.decode: Callable[[Frame, int], Any] | None = None
        #: hook name -> exception it raises (or a value it returns instead of the normal one)
        self.raises: dict[str, BaseException] = {}
        self.returns: dict[str, Any] = {}
        self.calls: list[str] = []

    @property
    def display_url(self) -> str:
        return "scripted://fake"

    @property
    def transport(self) -> ScriptedTransport:
        return self.transports[-1]

    async def open(self) -> ScriptedTransport:  # the Connector
        self.opens += 1
        if self.refuse is not None:
            raise self.refuse
        t = ScriptedTransport()
        self.transports.append(t)
        return t

    def _hook(self, name: str, normal: Callable[[], Any]) -> Any:
        self.calls.append(name)
        if name in self.raises:
            raise self.raises[name]
        if name in self.returns:
            return self.returns[name]
        return normal()

    def connect(self, *, provider: str, config: Any, connection: int) -> Any:
        return self._hook("mdgate_connect", lambda: self)

    def normalize(self, *, provider: str, config: Any) -> Any:
        return self._hook("mdgate_normalize", lambda: ScriptedDecoder(self))

    def subscribe(self, *, provider: str, config: Any, codes: list[str]) -> Any:
        return self._hook("mdgate_subscribe", lambda: [json.dumps({"sub": codes})])

    def unsubscribe(self, *, provider: str, config: Any, codes: list[str], remaining: list[str]) -> Any:
        return self._hook("mdgate_unsubscribe", lambda: [json.dumps({"unsub": codes})])

    def heartbeat(self, *, provider: str, config: Any, codes: list[str]) -> Any:
        return self._hook("mdgate_heartbeat", lambda: ['{"ping": 1}'])


def make_session(
    script: Script, clock: ManualClock, *, config: Any = None, random: Callable[[], float] = lambda: 1.0,
    faults: PluginFaults | None = None, **runtime: Any,
) -> ProviderSession:
    """A session of the scripted provider on ``clock``; jitter draws the top of the range by default."""
    rt = RuntimeSettings(**{"backoff_initial": 1.0, "backoff_max": 8.0, "auth_retry": 60.0, **runtime})
    return ProviderSession(script, config, None, TickQueue(10_000), rt,  # type: ignore[arg-type]
                           faults=faults or PluginFaults(clock=clock.now), clock=clock, random=random)


@asynccontextmanager
async def running(session: ProviderSession, clock: ManualClock) -> AsyncIterator[ProviderSession]:
    """Run ``session`` until the block ends; the first connection attempt has been made on entry."""
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        await clock.advance(0)
        try:
            yield session
        finally:
            tg.cancel_scope.cancel()


def queued(session: ProviderSession) -> list[Tick]:
    """Ticks the session handed to the pipeline so far (taken out of the queue)."""
    return session.queue.drain()
