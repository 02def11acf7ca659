"""
The provider contract: what a plugin hands the core.

A provider plugin declares a :class:`ProviderSpec` (name, code, exchanges,
limits, settings) and implements the hooks in :mod:`mdgate.hookspecs`. The
core's connection runtime does all I/O; the plugin supplies

* an :class:`Endpoint` per connection (URL, headers, handshake frames), or a
  :class:`Connector` for a transport of its own;
* subscribe / unsubscribe / heartbeat frames (pure encoders);
* a :class:`Decoder` per connection: a stateful, pure object turning provider
  frames into :class:`mdgate.Tick` lists.

Everything here is plain data or a ``typing.Protocol``; nothing imports I/O
libraries, so plugin ``protocol.py`` modules stay sans-I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mdgate._redact import MASK, mask_url

if TYPE_CHECKING:
    from mdgate._model import Bar, Tick

__all__ = [
    "Backfill",
    "Connector",
    "Decoder",
    "Endpoint",
    "Frame",
    "ProviderSpec",
    "Transport",
    "default_parse_config",
]

#: A WebSocket message: ``str`` for text frames, ``bytes`` for binary frames.
Frame = str | bytes

#: What ``mdgate_backfill`` returns: an awaitable list of one-minute bars.
Backfill = Awaitable[list["Bar"]]


def default_parse_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Accept any table unchanged (for providers with no settings of their own)."""
    return dict(table)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """
    Declares one provider a plugin ships.

    Attributes:
        name: provider id, as in ``[providers.<name>]`` and routing tables
            (``yahoo``, ``dhan``).
        code: provider code stored with every tick (``YF``, ``DHAN``).
        exchanges: every exchange the provider can serve (``NASDAQ``,
            ``NSE``...). By default it serves each one as a primary provider.
        backup_for: those of ``exchanges`` on which it should serve only as
            a backup (Yahoo on ``NSE``/``BSE``): in the built-in routes it
            ranks after every provider that declares the exchange as primary.
            Must be a subset of ``exchanges``. With neither ``[exchanges]``
            in the config file nor a database, these two fields are the
            routing table (see :func:`mdgate._routing.table.spec_routes`).
        display_name: a human name (``Yahoo Finance``), stored by
            ``mdgate db seed``; empty means ``name``.
        settings: the keys of ``[providers.<name>]`` it reads, each with a
            one-line description (shown by ``mdgate plugins``). ``url`` is
            always accepted.
        secrets: environment variables it reads for credentials (names only).
        max_per_message: instruments per subscribe/unsubscribe message.
        max_per_connection: instruments per connection; more instruments
            open further connections.
        max_connections: connections per provider; past
            ``max_per_connection * max_connections`` subscriptions fail with a
            clear error naming the limit.
        heartbeat_interval: seconds between ``mdgate_heartbeat`` calls on a
            connection with subscriptions (``None``: no heartbeat).
        stall_timeout: seconds without any frame, while subscribed, after
            which a connection counts as stalled and is reconnected.
        parse_config: validates the provider's config table (and the
            environment, for secrets) into the object every hook receives as
            ``config``. Raises :class:`mdgate.ConfigError` naming the
            key for a bad table, :class:`mdgate.ProviderDisabled` when
            the provider cannot run (missing credentials).
        instrument_table: the provider knows its instruments from an explicit
            table only (its own built-in list, ``[instruments]`` codes,
            ``provider_instrument_mappings``), never derives codes by a rule.
            On an exchange where such a provider is primary, a symbol none of
            those tables know is refused with ``no_route``, even when a
            backup's derivation rule would produce a code for it (so a typo
            is an error, not a silent wait).
    """

    name: str
    code: str
    exchanges: tuple[str, ...]
    settings: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    max_per_message: int = 100
    max_per_connection: int = 1000
    max_connections: int = 1
    heartbeat_interval: float | None = None
    stall_timeout: float = 30.0
    parse_config: Callable[[Mapping[str, Any], Mapping[str, str]], object] = default_parse_config
    instrument_table: bool = False
    backup_for: tuple[str, ...] = ()
    display_name: str = ""

    def role(self, exchange: str) -> str | None:
        """``"primary"``, ``"backup"`` or ``None`` (it does not serve ``exchange``)."""
        if exchange not in self.exchanges:
            return None
        return "backup" if exchange in self.backup_for else "primary"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """
    Where and how the core's WebSocket loop connects, returned by
    ``mdgate_connect`` once per connection attempt. Its ``repr`` masks the
    URL's credentials, header values and handshake frames.

    Attributes:
        url: the full URL, secrets included (never logged).
        display_url: the URL as logs and ``/status`` show it, secrets masked.
        headers: extra HTTP headers for the handshake.
        handshake: frames sent right after connecting, before subscribing.
        open_timeout: seconds allowed for the TCP+TLS+HTTP handshake.
        ping_interval: seconds of silence from the provider after which we send a
            WebSocket ping, and wait as long for its pong before dropping the
            connection (``None``: off).
        max_size: largest frame accepted from the provider, in bytes.
    """

    url: str
    display_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    handshake: Sequence[Frame] = ()
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    max_size: int = 4 * 1024 * 1024

    def __repr__(self) -> str:
        # Plugin tracing and tracebacks show this repr: the URL may carry a token, headers
        # an Authorization value, handshake frames a login. None of them is shown.
        return (
            f"Endpoint(url={mask_url(self.url)!r}, display_url={mask_url(self.display_url)!r}, "
            f"headers={dict.fromkeys(self.headers, MASK)!r}, handshake=<{len(self.handshake)} frame(s)>, "
            f"open_timeout={self.open_timeout!r}, ping_interval={self.ping_interval!r}, "
            f"max_size={self.max_size!r})"
        )


@runtime_checkable
class Transport(Protocol):
    """An open message transport (for providers that are not plain WebSocket)."""

    async def send(self, frame: Frame) -> None:
        """Send one frame."""

    async def recv(self) -> Frame:
        """Return the next frame; raise ``ProviderConnectionError`` when closed."""
        ...

    async def aclose(self) -> None:
        """Close the transport."""


@runtime_checkable
class Connector(Protocol):
    """Escape hatch: ``mdgate_connect`` may return this instead of an Endpoint."""

    display_url: str

    def __repr__(self) -> str:
        # inherited by connectors that subclass Connector: never more than the masked URL
        return f"<{type(self).__name__} {mask_url(getattr(self, 'display_url', ''))!r}>"

    async def open(self) -> Transport:
        """Open one connection."""
        ...


class Decoder(Protocol):
    """
    Turns one connection's frames into ticks. Built once per connection by
    ``mdgate_normalize``; pure (no I/O, no logging), so it can be tested with
    byte fixtures and fuzzed.

    The runtime calls :meth:`track` for every code the connection is
    subscribed to (also after a reconnect) and :meth:`untrack` when a code is
    released, so that the decoder can name instruments and ignore strays.
    """

    def track(self, code: str, instrument: str) -> None:
        """Map a provider code (``AAPL``, ``NSE_EQ:2885``) to its instrument."""

    def untrack(self, code: str) -> None:
        """Forget a provider code (frames for it become ``unknown_symbol``)."""

    def feed(self, frame: Frame, recv_ts: int) -> list[Tick]:
        """
        Decode one frame received at ``recv_ts`` (epoch ms, UTC).

        Returns the ticks it carries (often none: status packets only update
        state). Raises :class:`mdgate.DecodeError` for a malformed
        frame or packet, with any ticks decoded before the fault in
        ``error.ticks``; raises :class:`mdgate.AuthenticationError`,
        :class:`mdgate.RateLimitedError` or another
        :class:`mdgate.ProviderError` for a provider's disconnect
        message.
        """
        ...
