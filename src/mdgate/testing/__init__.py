"""
Public test helpers for mdgate and provider plugins.

* :func:`running_gateway`: the whole daemon in-process on a free port.
* :class:`FakeProviderServer`: the base of every provider's fake server (a
  real WebSocket server on 127.0.0.1 that records what clients send and lets
  a test send frames, drop, close, go silent, drop after N frames, freeze,
  flood, refuse connections for a while or expire credentials), and
  :class:`FakeFeedServer`, a protocol-less one answering through callbacks
  (:mod:`mdgate.testing.fake_server`).
* :class:`GatewayClient`: a small WebSocket client speaking the client protocol.
* :mod:`mdgate.testing.conformance`: the provider conformance suite
  (``ProviderHarness``, ``ProviderConformance``; docs/conformance.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from websockets.asyncio.client import ClientConnection, connect

from mdgate._config import Settings, load_settings
from mdgate.testing.fake_server import FakeConnection, FakeFeedServer, FakeProviderServer

__all__ = [
    "FakeConnection",
    "FakeFeedServer",
    "FakeProviderServer",
    "GatewayClient",
    "GatewayHandle",
    "running_gateway",
    "settings_from_toml",
]


def settings_from_toml(text: str, environ: Mapping[str, str] | None = None, tmp_path: Any = None) -> Settings:
    """Build :class:`Settings` from TOML text (written to a temp file)."""
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".toml", dir=str(tmp_path) if tmp_path else None)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    try:
        return load_settings(path, dict(environ or {}))
    finally:
        if tmp_path is None:
            os.unlink(path)


@dataclasses.dataclass
class GatewayHandle:
    """A running in-process gateway."""

    gateway: Any
    port: int

    @property
    def ws_url(self) -> str:
        """The client WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """The HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        """The gateway's ``/status`` document (in-process, no HTTP)."""
        result: dict[str, Any] = self.gateway.status()
        return result

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll ``status()`` until ``predicate`` holds; return that status."""
        with anyio.fail_after(timeout):
            while True:
                st = self.status()
                if predicate(st):
                    return st
                await anyio.sleep(0.02)


@asynccontextmanager
async def running_gateway(
    settings: Settings | None = None,
    *,
    extra_plugins: Sequence[tuple[str, object]] = (),
    entry_points: bool = True,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[GatewayHandle]:
    """
    Run a whole gateway in-process on a free port of 127.0.0.1.

    Args:
        settings: the configuration (its ``[server] port`` is replaced by a free one).
        extra_plugins: ``(name, plugin)`` pairs registered besides the installed ones.
        entry_points: load installed entry-point plugins.
        environ: environment for the plugin switches (default: the settings').
    """
    from mdgate._app import Gateway
    from mdgate._providers.registry import load_registry

    settings = settings or Settings()
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, host="127.0.0.1", port=0)
    )
    registry = load_registry(
        environ if environ is not None else settings.environ, extra=extra_plugins, entry_points=entry_points
    )
    gw = Gateway(settings, registry)
    async with anyio.create_task_group() as tg:
        port: int = await tg.start(gw.run)
        try:
            yield GatewayHandle(gw, port)
        finally:
            gw.stop()
            with anyio.CancelScope(shield=True):
                await gw.wait_stopped()


class GatewayClient:
    """A test client speaking mdgate's client protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, **kwargs: Any) -> AsyncIterator[GatewayClient]:
        """Open a client connection to ``url`` (``ws://.../ws``)."""
        async with connect(url, open_timeout=5, **kwargs) as ws:
            yield cls(ws)

    async def send(self, message: Any) -> None:
        """Send a JSON message (or a raw ``str``/``bytes``)."""
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """Receive one JSON message."""
        with anyio.fail_after(timeout):
            data = await self.ws.recv()
        result: dict[str, Any] = json.loads(data)
        return result

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """Receive messages until one of type ``kind``."""
        with anyio.fail_after(timeout):
            while True:
                msg = await self.recv(timeout)
                if msg.get("type") == kind:
                    return msg

    async def subscribe(self, *instruments: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Subscribe; return the ``subscribed`` and ``snapshot`` messages."""
        await self.send({"op": "subscribe", "instruments": list(instruments)})
        subscribed = await self.recv_type("subscribed")
        snapshot = await self.recv_type("snapshot")
        return subscribed, snapshot

    async def ticks(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Collect at least ``n`` ticks from ``ticks`` frames."""
        out: list[dict[str, Any]] = []
        with anyio.fail_after(timeout):
            while len(out) < n:
                msg = await self.recv(timeout)
                if msg.get("type") == "ticks":
                    out.extend(msg["ticks"])
        return out
