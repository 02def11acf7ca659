"""Options and helpers the built-in commands share: ``--json``, the client options, times."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mdgate._cli.context import CommandContext
from mdgate._errors import ConfigError

if TYPE_CHECKING:
    from mdgate._providers.registry import Registry

__all__ = [
    "auth_headers",
    "base_url",
    "client_options",
    "fmt_tick",
    "json_option",
    "parse_time",
    "registry",
    "token",
]

F = TypeVar("F", bound=Callable[..., Any])


#: The plugin registry of each invocation, loaded once (kept here, not on the context, so that
#: ``mdgate._cli.context``, which ``import mdgate`` imports, depends on no module importing mdgate).
_REGISTRIES: weakref.WeakKeyDictionary[CommandContext, Registry] = weakref.WeakKeyDictionary()


def registry(obj: CommandContext) -> Registry:
    """The plugin registry of this invocation, loaded once (after logging is set up: faults are logged)."""
    from mdgate._lazylog import before_first_log
    from mdgate._providers.registry import load_registry

    reg = _REGISTRIES.get(obj)
    if reg is None:
        before_first_log(obj.ensure_logging)  # set up before a fault is logged, not before loading
        reg = _REGISTRIES[obj] = load_registry(obj.environ)
    return reg


def json_option(fn: F) -> F:
    """``--json``: print one JSON document instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(fn)


def client_options(fn: F) -> F:
    """``--url``, ``--token`` and ``--json`` of the commands that talk to a running gateway."""
    fn = json_option(fn)
    fn = click.option("--token", help="access token (default: $MDGATE_TOKEN, else the config's first)")(fn)
    return click.option("--url", help="gateway base URL (default: from [server] in the config)")(fn)


def base_url(obj: CommandContext, url: str | None) -> str:
    """The gateway's base URL: ``url``, else ``[server]`` of the settings."""
    if url:
        return url.rstrip("/")
    s = obj.settings.server
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    return f"http://{host}:{s.port}"


def token(obj: CommandContext, given: str | None) -> str | None:
    """The access token: ``given``, else ``$MDGATE_TOKEN``, else the config's first token."""
    if given:
        return given
    env = obj.environ.get("MDGATE_TOKEN")
    if env:
        return env
    try:
        tokens = obj.settings.server.tokens
    except ConfigError:
        return None
    return tokens[0].reveal() if tokens else None


def auth_headers(obj: CommandContext, given: str | None) -> dict[str, str]:
    """``Authorization: Bearer ...`` when a token is known."""
    found = token(obj, given)
    return {"Authorization": f"Bearer {found}"} if found else {}


def parse_time(text: str | None) -> int | None:
    """
    ``--since``/``--until``: epoch ms, an age (``15m``, ``2h``, ``1d``) or an ISO time (UTC if naive).

    Raises:
        ConfigError: none of these (exit code 2).
    """
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            "--since/--until", f"expected epoch ms, 15m/2h/1d, or ISO time, got {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def fmt_tick(t: dict[str, Any]) -> str:
    """One tick as a text line."""
    ts = datetime.fromtimestamp(t["ts"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    extra = " ".join(f"{k}={t[k]}" for k in ("size", "volume", "bid", "ask", "prev_close") if k in t)
    return f"{ts} {t['instrument']:<18} {t['price']:>12} {t['provider']:<5} {extra}"
