"""
The WebSocket transport used by the connection runtime, with every
websockets / OS error translated into mdgate's typed provider errors at the
boundary (httpx ``map_httpcore_exceptions`` style).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from mdgate._errors import AuthenticationError, ProviderConnectionError, ProviderError, RateLimitedError
from mdgate._provider import Connector, Decoder, Endpoint, Frame, Transport
from mdgate._providers.checks import PluginFault, call_hook

__all__ = ["Tap", "WebSocketTransport", "open_upstream", "open_websocket"]


class Tap(Protocol):
    """
    Stands between a provider session and its upstream: the recorder (which
    opens the real connection and keeps a copy of everything) and the
    replayer (which opens none and plays a recording back).
    """

    async def open(
        self, provider: str, connect: Callable[..., object], config: object, index: int,
    ) -> tuple[Transport, object, str]:
        """Open connection ``index`` (as :func:`open_upstream` does): (transport, endpoint, URL)."""
        ...

    def wrap(self, provider: str, index: int, transport: Transport, decoder: Decoder,
             fault: Callable[[], BaseException | None]) -> tuple[Transport, Decoder]:
        """
        The transport and decoder the session uses for this connection;
        ``fault()`` tells, once it ends, what ended it (None: the gateway closed it).
        """
        ...


async def open_upstream(
    provider: str, connect: Callable[..., object], config: object, index: int,
) -> tuple[Transport, object, str]:
    """Ask the plugin where to connect (``mdgate_connect``) and open it: (transport, endpoint, URL)."""
    ep = call_hook("mdgate_connect", connect, provider=provider, config=config, connection=index)
    if isinstance(ep, Endpoint):
        return await open_websocket(provider, ep), ep, ep.display_url
    if isinstance(ep, Connector):
        try:
            return await ep.open(), ep, str(ep.display_url)
        except ProviderError:
            raise
        except Exception as exc:
            raise PluginFault("connector", exc) from exc
    raise PluginFault("mdgate_connect", f"returned {type(ep).__name__}, not an Endpoint or a Connector")


class WebSocketTransport:
    """A connected provider WebSocket implementing :class:`mdgate._provider.Transport`."""

    __slots__ = ("_ws", "provider")

    def __init__(self, provider: str, ws: ClientConnection) -> None:
        self.provider = provider
        self._ws = ws

    async def send(self, frame: Frame) -> None:
        """Send one frame (text for ``str``, binary for ``bytes``)."""
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise _closed(self.provider, exc) from exc

    async def recv(self) -> Frame:
        """Return the next frame."""
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(self.provider, exc) from exc

    async def aclose(self) -> None:
        """Close with 1000, giving up (abort) after one second."""
        with anyio.move_on_after(1.0, shield=True):
            await self._ws.close()
        self._ws.transport.abort()


def _closed(provider: str, exc: ConnectionClosed) -> ProviderConnectionError:
    rcvd = exc.rcvd
    if isinstance(exc, ConnectionClosedOK):
        code = rcvd.code if rcvd is not None else 1000
        return ProviderConnectionError(provider, f"server closed the connection (code {code})")
    if rcvd is not None:
        return ProviderConnectionError(
            provider, f"connection closed (code {rcvd.code}{', ' + rcvd.reason if rcvd.reason else ''})"
        )
    return ProviderConnectionError(provider, "connection dropped (no close frame)")


async def open_websocket(provider: str, ep: Endpoint) -> WebSocketTransport:
    """Connect to ``ep``; raise a typed :class:`~mdgate._errors.ProviderError` on failure."""
    where = ep.display_url or "endpoint"
    try:
        ws = await connect(
            ep.url,
            additional_headers=dict(ep.headers) or None,
            open_timeout=ep.open_timeout,
            ping_interval=ep.ping_interval,
            ping_timeout=ep.ping_interval,
            max_size=ep.max_size,
            compression=None,
            close_timeout=1.0,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthenticationError(provider, f"handshake refused with HTTP {status} by {where}") from None
        if status == 429:
            raise RateLimitedError(provider, f"handshake refused with HTTP 429 by {where}") from None
        raise ProviderConnectionError(provider, f"handshake refused with HTTP {status} by {where}") from None
    except InvalidURI:
        raise ProviderConnectionError(provider, f"invalid URL {where}") from None
    except InvalidHandshake as exc:
        raise ProviderConnectionError(
            provider, f"handshake with {where} failed: {type(exc).__name__}"
        ) from None
    except TimeoutError:
        raise ProviderConnectionError(provider, f"timed out connecting to {where}") from None
    except OSError as exc:
        raise ProviderConnectionError(
            provider, f"cannot connect to {where}: {exc.strerror or type(exc).__name__}"
        ) from None
    return WebSocketTransport(provider, ws)
