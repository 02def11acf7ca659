"""
Limits of the client server: what one client, one address and all clients
together may cost, and what a refused client is told.

* :class:`ConnectionLimits` counts TCP connections and admitted WebSocket
  clients (in all and per remote address). Over ``max_clients`` or
  ``max_clients_per_address`` the handshake is answered HTTP 503. Below the
  file-descriptor limit it keeps a hard cap on open sockets: past it the
  oldest connection that has not sent its HTTP request yet is dropped (a
  connection that never speaks cannot hold a slot that ``/healthz`` needs).
* :func:`fd_plan` derives those caps from ``RLIMIT_NOFILE`` (raising the
  soft limit up to the hard one when ``max_clients`` needs it).
* :class:`OriginPolicy`: which browser ``Origin`` values may open ``/ws``.
* :func:`error_frame` / :func:`refusal_frame`: error frames whose size does
  not depend on the request's (at most :data:`MAX_NAMED` items named, names
  and messages truncated, a count of the rest).
* :class:`RateLimitedLog`: one line per event kind per interval, with the
  number of lines it held back.
* :func:`release_last_frame`: a client's last received frame is not kept
  until its next one.
"""

from __future__ import annotations

import ipaddress
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from websockets.protocol import Protocol as WsProtocol, State
from websockets.streams import StreamReader

from mdgate._errors import InstrumentError
from mdgate._model import encode, parse_instrument
from mdgate._ratelog import EveryLog

__all__ = [
    "MAX_LABEL",
    "MAX_NAMED",
    "RELEASE_AFTER",
    "ConnectionLimits",
    "FdPlan",
    "OriginPolicy",
    "RateLimitedLog",
    "error_frame",
    "fd_plan",
    "instrument_names",
    "label",
    "raise_nofile",
    "refusal_frame",
    "release_last_frame",
]

#: Refused items named in one error frame; the rest are counted (``more``).
MAX_NAMED: Final = 10
#: Characters of a refused item shown in an error frame.
MAX_LABEL: Final = 64
#: Characters of one message in an error frame.
MAX_MESSAGE: Final = 200
#: File descriptors kept free for the daemon itself (providers, store, logs): at least this...
FD_RESERVE_MIN: Final = 64
#: ...or this fraction of the limit, whichever is larger...
FD_RESERVE_FRACTION: Final = 8
#: ...plus the sockets asyncio accepts in one go (its listen backlog) before any is looked at.
ACCEPT_BURST: Final = 100
#: Sockets allowed beyond ``max_clients`` for handshakes in progress and HTTP requests.
EXTRA_SOCKETS_MAX: Final = 64


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def label(item: object) -> str:
    """A short, printable name for one item of a request (never its whole ``repr``)."""
    if isinstance(item, str):
        return _cut(item, MAX_LABEL)
    if isinstance(item, int) and item.bit_length() > 200:
        return "<int>"
    if item is None or isinstance(item, bool | int | float):
        return _cut(str(item), MAX_LABEL)
    return f"<{type(item).__name__}>"


def error_frame(code: str, message: str, errors: list[dict[str, str]] | None = None, more: int = 0) -> bytes:
    """An ``error`` frame; ``errors`` beyond :data:`MAX_NAMED` are only counted."""
    body: dict[str, Any] = {"type": "error", "code": code, "message": _cut(message, 4 * MAX_MESSAGE)}
    if errors:
        more += max(0, len(errors) - MAX_NAMED)
        body["errors"] = [
            {"instrument": _cut(e["instrument"], MAX_LABEL), "code": e["code"],
             "message": _cut(e["message"], MAX_MESSAGE)}
            for e in errors[:MAX_NAMED]
        ]
    if more:
        body["more"] = more
    return encode(body)


def refusal_frame(errors: list[dict[str, str]]) -> bytes:
    """
    One error frame for every problem of a request; its code is the first one's.

    Its size is bounded whatever the request: at most :data:`MAX_NAMED`
    items are named (in the message and in ``errors``), ``more`` counts the rest.
    """
    first = errors[0]
    if len(errors) == 1:
        message = first["message"]
    else:
        named = ", ".join(_cut(e["instrument"], MAX_LABEL) for e in errors[:MAX_NAMED])
        rest = len(errors) - MAX_NAMED
        message = f"{len(errors)} instruments refused or unavailable: {named}" + (
            f" and {rest} more" if rest > 0 else "")
    return error_frame(first["code"], message, errors)


class _Logger(Protocol):
    def warning(self, event: str, **kw: Any) -> Any: ...


class RateLimitedLog:
    """
    At most one warning per event kind per ``interval`` seconds
    (:class:`~mdgate._ratelog.EveryLog` keyed by the event name).

    The line that goes out after a quiet spell carries ``suppressed``: how
    many lines of that kind were held back since the previous one.
    """

    def __init__(self, logger: _Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self._every = EveryLog(interval, clock=clock)

    def warning(self, event: str, **kw: Any) -> bool:
        """Log ``event`` unless one went out less than ``interval`` ago; return whether it did."""
        def emit(suppressed: int) -> None:
            self.logger.warning(event, **kw, **({"suppressed": suppressed} if suppressed else {}))

        return self._every(event, emit)


# -- file descriptors ------------------------------------------------------------


@dataclass(frozen=True)
class FdPlan:
    """How many clients and sockets fit under the open-files limit."""

    #: The soft ``RLIMIT_NOFILE`` in force.
    nofile: int
    #: WebSocket clients admitted at most (``max_clients``, lowered when the limit is too low).
    clients: int
    #: Client sockets open at most (clients, handshakes and HTTP requests).
    sockets: int


def fd_plan(max_clients: int, nofile: int) -> FdPlan:
    """Caps for ``max_clients`` under a soft open-files limit of ``nofile``."""
    reserve = max(FD_RESERVE_MIN, nofile // FD_RESERVE_FRACTION) + ACCEPT_BURST
    room = max(8, nofile - reserve)
    extra = max(4, min(EXTRA_SOCKETS_MAX, room // 4))
    clients = max(1, min(max_clients, room - extra))
    return FdPlan(nofile, clients, clients + extra)


def _needed_nofile(max_clients: int) -> int:
    want = max_clients + EXTRA_SOCKETS_MAX + ACCEPT_BURST
    return max(want + FD_RESERVE_MIN, want * FD_RESERVE_FRACTION // (FD_RESERVE_FRACTION - 1) + 1)


def raise_nofile(max_clients: int) -> tuple[int, int]:
    """
    Raise the soft open-files limit (up to the hard one) so that
    ``max_clients`` fits; return ``(before, after)``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _needed_nofile(max_clients)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft, soft
    target = want if hard == resource.RLIM_INFINITY else min(hard, want)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


# -- connections -------------------------------------------------------------------


class _Conn(Protocol):
    def abort(self) -> None: ...


class ConnectionLimits:
    """
    Counts client sockets and admitted WebSocket clients; decides who gets in.

    Connections are any hashable object with ``abort()`` (the server passes
    its ``ServerConnection`` wrappers).
    """

    def __init__(self, max_clients: int, max_per_address: int, max_sockets: int) -> None:
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.max_sockets = max(max_sockets, max_clients)
        #: Sockets open now (including ones being dropped).
        self.sockets = 0
        #: Admitted WebSocket clients now.
        self.clients = 0
        self._pending: dict[Any, None] = {}
        self._doomed: set[Any] = set()
        self._admitted: dict[Any, str] = {}
        self._by_address: dict[str, int] = {}
        #: Refusals since start, by reason.
        self.refused: dict[str, int] = {"max_clients": 0, "max_clients_per_address": 0, "origin": 0,
                                        "sockets": 0}

    def opened(self, conn: Any) -> Any | None:
        """
        A socket was accepted. Returns the connection to drop to stay under the
        socket cap (the oldest that has not sent its request; ``conn`` itself
        when every other one has), or None.
        """
        self.sockets += 1
        self._pending[conn] = None
        if self.sockets - len(self._doomed) <= self.max_sockets:
            return None
        victim = next(iter(self._pending))
        self._pending.pop(victim)
        self._doomed.add(victim)
        self.refused["sockets"] += 1
        return victim

    def requested(self, conn: Any) -> None:
        """``conn`` sent its HTTP request: it is no longer a candidate for dropping."""
        self._pending.pop(conn, None)

    def admit(self, conn: Any, address: str) -> str | None:
        """Admit ``conn`` as a WebSocket client from ``address``; return the refusal reason, if any."""
        if self.clients >= self.max_clients:
            reason = "max_clients"
        elif self._by_address.get(address, 0) >= self.max_per_address:
            reason = "max_clients_per_address"
        else:
            self.clients += 1
            self._by_address[address] = self._by_address.get(address, 0) + 1
            self._admitted[conn] = address
            return None
        self.refused[reason] += 1
        return reason

    def closed(self, conn: Any) -> None:
        """The socket of ``conn`` is closed: release whatever it held."""
        self.sockets -= 1
        self._pending.pop(conn, None)
        self._doomed.discard(conn)
        address = self._admitted.pop(conn, None)
        if address is not None:
            self.clients -= 1
            left = self._by_address[address] - 1
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]

    def addresses(self) -> int:
        """Distinct remote addresses with admitted clients."""
        return len(self._by_address)


# -- browsers ------------------------------------------------------------------------

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_parts(origin: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an ``Origin`` value, lower case, default port filled in."""
    try:
        parts = urlsplit(origin.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS.get(scheme)


def _origin_key(origin: str) -> str | None:
    parts = _origin_parts(origin)
    return None if parts is None else "{}://{}:{}".format(*parts)


def _host_port(value: str, default_port: int | None) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit("//" + value.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port or default_port


class OriginPolicy:
    """
    Which browser pages may open ``/ws`` (``[server] allowed_origins``).

    * no ``Origin`` header (not a browser): allowed;
    * ``"*"`` in the list: any origin;
    * an origin in the list (``scheme://host[:port]``; default ports implied);
    * listening on a loopback address: pages served from a loopback host
      (``localhost``, ``127.x.x.x``, ``[::1]``, any port);
    * listening elsewhere: pages whose host and port are those the client
      connected to (the ``Host`` header): the same site, e.g. behind a reverse proxy.

    A loopback gateway never takes a non-loopback origin as "same host":
    that is what a DNS-rebinding page would present.
    """

    def __init__(self, allowed: Iterable[str], listen_host: str) -> None:
        allowed = tuple(allowed)
        self.any = "*" in allowed
        self.allowed = frozenset(k for k in (_origin_key(a) if a != "null" else "null" for a in allowed) if k)
        self.loopback = _is_loopback(listen_host) if listen_host not in ("", "0.0.0.0", "::") else False

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with these ``Origin`` and ``Host`` headers may proceed."""
        if origin is None or self.any:
            return True
        if origin.strip() == "null":
            return "null" in self.allowed
        parts = _origin_parts(origin)
        if parts is None:
            return False
        scheme, o_host, o_port = parts
        if "{}://{}:{}".format(*parts) in self.allowed:
            return True
        if self.loopback:
            return _is_loopback(o_host)
        if host is None:
            return False
        default = 443 if scheme in ("https", "wss") else 80
        return _host_port(host, default) == (o_host, o_port)


#: Longest instrument text quoted back in an error (longer ones are described by length).
_MAX_RAW_NAME: Final = 256


def instrument_names(raw: list[Any], errors: list[dict[str, str]]) -> list[str]:
    """Valid instrument names of a request, upper-cased and de-duplicated, in order."""
    names: dict[str, None] = {}
    for item in raw:
        if not isinstance(item, str):
            errors.append({"instrument": label(item), "code": "bad_instrument",
                           "message": f"bad instrument {label(item)}: instrument must be a string"})
            continue
        if len(item) > _MAX_RAW_NAME:
            errors.append({"instrument": label(item), "code": "bad_instrument",
                           "message": f"bad instrument ({len(item)} characters): "
                                      "expected EXCHANGE:SYMBOL, e.g. NSE:RELIANCE"})
            continue
        try:
            name, _, _ = parse_instrument(item)
        except InstrumentError as exc:
            errors.append({"instrument": item, "code": "bad_instrument", "message": str(exc)})
            continue
        names[name] = None
    return list(names)


#: Bytes of one read from a client after which its last frame is released (smaller frames cost
#: less than the check).
RELEASE_AFTER: Final = 4096
_AT_EOF: Final = StreamReader.at_eof.__code__


def release_last_frame(protocol: WsProtocol) -> bool:
    """
    Let go of the last frame a client sent, once it is handled.

    websockets' frame parser keeps the last frame it parsed (a local of its generator) until the
    next one arrives: a client that subscribed with one 16 KB request and then only reads holds
    16 KB for as long as it stays. Between two frames the parser holds nothing else (a
    fragmented message's progress lives on the protocol), so when it waits for the first byte
    of the next frame it is replaced by a fresh one. Anywhere else (inside a frame, during the
    handshake or the closing) it is left alone. Returns whether it was replaced.
    """
    if protocol.state is not State.OPEN:
        return False
    inner: Any = protocol.parser
    while (outer := getattr(inner, "gi_yieldfrom", None)) is not None:
        inner = outer
    if getattr(inner, "gi_code", None) is not _AT_EOF or protocol.reader.buffer:
        return False
    protocol.parser = protocol.parse()
    next(protocol.parser)
    return True
