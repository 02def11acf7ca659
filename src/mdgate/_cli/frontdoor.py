"""
The command line's front door: failures before and around ``mdgate run`` as
one line and an exit code, never a traceback.

* :func:`check_listen` tries the listen address before anything starts (no
  log line, no provider connection), the way the server will bind it;
* :func:`one_error` digs the error that matters out of the exception groups
  a task group raises.

A :class:`ListenError` (a port in use, no permission) is the state of the
machine (exit code 1), a :class:`~mdgate._errors.ConfigError` (a listen host
that does not resolve or is not local) what the operator wrote (exit code 2):
see :mod:`mdgate._cli.errors`, the one exit-code table.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from mdgate._errors import ConfigError, MdgateError

T = TypeVar("T")

__all__ = ["ListenError", "check_listen", "one_error"]

# name-resolution failures that say the name is wrong, not that DNS is down now
_BAD_NAME: Final = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_SERVICE", "EAI_FAMILY")
    if hasattr(socket, name)
)


_BIND_ERRNOS: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


class ListenError(MdgateError):
    """The listen address cannot be used now (a runtime problem: exit 1)."""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"


def _bind_error(host: str, port: int, exc: OSError) -> MdgateError:
    reason = (exc.strerror or str(exc)).lower()
    if isinstance(exc, socket.gaierror):
        if exc.errno in _BAD_NAME:
            return ConfigError("server.host", f"cannot resolve {host!r} ({reason})")
        return ListenError(f"cannot resolve {host!r} now ({reason})")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError("server.host", f"{host!r} is not an address of this machine ({reason})")
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"cannot listen on {_where(host, port)}: address already in use "
                           "(another process holds the port; stop it or choose another port)")
    return ListenError(f"cannot listen on {_where(host, port)}: {reason}")


def check_listen(host: str, port: int) -> None:
    """
    Bind (and release) every address ``host`` resolves to, as the server will.

    Raises:
        ConfigError: the host does not resolve, or is not an address of this machine.
        ListenError: the port is in use, or binding is not permitted.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _bind_error(host, port, exc) from None
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this machine lacks: the server skips it too
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise _bind_error(host, port, exc) from None


def one_error(exc: BaseException, host: str, port: int) -> MdgateError | None:
    """
    The error ``mdgate run`` reports in one line, found in (nested) exception
    groups: a :class:`ConfigError`, an :class:`OSError` from binding the
    listen socket, or another :class:`MdgateError`; ``None`` for anything else
    (a bug: its traceback is worth showing).
    """
    found: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            found.append(e)

    walk(exc)
    for e in found:
        if isinstance(e, ConfigError):
            return e
    for e in found:
        if isinstance(e, OSError):
            if isinstance(e, socket.gaierror) or e.errno in _BIND_ERRNOS:
                return _bind_error(host, port, e)
            return MdgateError(f"cannot start: {(e.strerror or str(e)).lower()}")
    for e in found:
        if isinstance(e, MdgateError):
            return e
    return None


def run_serving(main: Callable[[], Awaitable[T]], host: str, port: int, event_loop: str = "asyncio") -> T:
    """
    ``anyio.run(main)`` for a command that serves on ``host:port`` (``run``,
    ``demo``, ``replay``): a configuration error or a taken socket raised
    inside the task tree is one line (:func:`one_error`), not a traceback.
    ``event_loop`` is ``[runtime] event_loop``: see :func:`use_uvloop`.
    """
    import anyio

    try:
        return anyio.run(main, backend_options={"use_uvloop": use_uvloop(event_loop)})
    except (BaseExceptionGroup, OSError) as exc:
        error = one_error(exc, host, port)
        if error is None:
            raise
        raise error from None


def use_uvloop(event_loop: str) -> bool:
    """
    Whether to run on uvloop: ``auto`` when it is installed (``pip install 'mdgate[speed]'``),
    ``uvloop`` always (an error when it is missing), ``asyncio`` never. On uvloop every
    wake-up of the event loop costs less (see docs/benchmarks.md, "Floors").
    """
    if event_loop == "asyncio":
        return False
    import importlib.util

    if importlib.util.find_spec("uvloop") is not None:
        return True
    if event_loop == "uvloop":
        raise MdgateError("[runtime] event_loop is \"uvloop\" but uvloop is not installed: "
                          "pip install 'mdgate[speed]'")
    return False
