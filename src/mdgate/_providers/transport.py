"""
Opening a provider's upstream: the plugin's ``mdgate_connect`` answer becomes
an open transport, a WebSocket (:class:`mdgate._providers.upstream.UpstreamWebSocket`,
on picows) or the plugin's own :class:`~mdgate._provider.Connector`, with every
picows / OS error translated into mdgate's typed provider errors at the
boundary (httpx ``map_httpcore_exceptions`` style).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from mdgate._errors import AuthenticationError, ProviderConnectionError, ProviderError, RateLimitedError
from mdgate._provider import Connector, Decoder, Endpoint, Transport
from mdgate._providers.checks import PluginFault, call_hook

if TYPE_CHECKING:
    from mdgate._providers.upstream import UpstreamWebSocket

__all__ = ["Tap", "open_upstream", "open_websocket"]


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


async def open_websocket(provider: str, ep: Endpoint) -> UpstreamWebSocket:
    """Connect to ``ep``; raise a typed :class:`~mdgate._errors.ProviderError` on failure."""
    # picows (and the modules it pulls in) is imported on the first connection, not at start-up
    from picows import WSHandshakeError, ws_connect

    from mdgate._providers.upstream import UpstreamWebSocket

    where = ep.display_url or "endpoint"
    try:
        with anyio.fail_after(ep.open_timeout):
            _, listener = await ws_connect(
                lambda: UpstreamWebSocket(provider, ep.max_size),
                ep.url,
                extra_headers=dict(ep.headers) or None,
                websocket_handshake_timeout=ep.open_timeout,
                enable_auto_ping=ep.ping_interval is not None,
                auto_ping_idle_timeout=ep.ping_interval or 20.0,
                auto_ping_reply_timeout=ep.ping_interval or 20.0,
                max_frame_size=ep.max_size,
                max_redirects=0,
                proxy=_proxy_for(ep.url),
                logger_name="mdgate.upstream",
            )
    except WSHandshakeError as exc:
        status = exc.response.status if exc.response is not None else None
        if status in (401, 403):
            raise AuthenticationError(provider, f"handshake refused with HTTP {status} by {where}") from None
        if status == 429:
            raise RateLimitedError(provider, f"handshake refused with HTTP 429 by {where}") from None
        if status is not None:
            raise ProviderConnectionError(
                provider, f"handshake refused with HTTP {status} by {where}") from None
        raise ProviderConnectionError(provider, f"handshake with {where} failed: {exc}") from None
    except TimeoutError:
        raise ProviderConnectionError(provider, f"timed out connecting to {where}") from None
    except ValueError:  # picows's URL parser
        raise ProviderConnectionError(provider, f"invalid URL {where}") from None
    except OSError as exc:
        raise ProviderConnectionError(
            provider, f"cannot connect to {where}: {exc.strerror or type(exc).__name__}"
        ) from None
    if not isinstance(listener, UpstreamWebSocket):  # gone before the handshake's answer
        raise ProviderConnectionError(provider, f"handshake with {where} failed: connection closed")
    return listener


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...), as websockets does."""
    from websockets.proxy import get_proxy
    from websockets.uri import parse_uri

    try:
        return get_proxy(parse_uri(url))
    except Exception:  # an URL websockets cannot parse: picows reports it
        return None
