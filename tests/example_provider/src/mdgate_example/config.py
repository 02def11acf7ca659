"""
``[providers.example]``: the example provider's settings.

Every key is optional::

    [providers.example]
    url = "ws://127.0.0.1:9999"
    token = "..."                # bearer token sent in the handshake
    stall_timeout = 30           # seconds of silence before reconnecting
    heartbeat_interval = 5       # seconds between pings (default: none)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mdgate import ConfigError, Secret, mask_url
from mdgate_example.protocol import NAME

__all__ = ["DEFAULT_URL", "SETTINGS", "ExampleConfig", "parse_config"]

DEFAULT_URL: Final = "ws://127.0.0.1:9999"

#: Keys of ``[providers.example]`` with a one-line description each.
SETTINGS: Final[dict[str, str]] = {
    "url": f"feed URL (default {DEFAULT_URL})",
    "token": "bearer token sent in the handshake",
    "stall_timeout": "seconds of silence before reconnecting",
    "heartbeat_interval": "seconds between pings",
}


@dataclass(frozen=True, slots=True)
class ExampleConfig:
    """
    Validated ``[providers.example]`` settings: the object every hook receives as ``config``.

    Attributes:
        url: the feed URL (``ws://`` or ``wss://``).
        token: the bearer token, if any (never shown: :class:`mdgate.Secret`).
        stall_timeout: seconds of silence before a reconnect; ``None`` keeps the spec's.
        heartbeat_interval: seconds between pings; ``None`` keeps the spec's.
    """

    url: str = DEFAULT_URL
    token: Secret | None = None
    stall_timeout: float | None = None
    heartbeat_interval: float | None = None

    def __repr__(self) -> str:
        # hooks receive this object and plugin tracing logs it: never show a credential
        return (
            f"ExampleConfig(url={mask_url(self.url)!r}, token={self.token!r}, "
            f"stall_timeout={self.stall_timeout!r}, heartbeat_interval={self.heartbeat_interval!r})"
        )


def parse_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> ExampleConfig:
    """
    Validate ``[providers.example]`` (``ProviderSpec.parse_config``).

    Args:
        table: the raw TOML table.
        environ: the environment (unused: the token comes from the table).

    Raises:
        ConfigError: naming the key (``providers.example.<key>``) of an
            unknown key or a bad value.
    """
    for key in table:
        if key not in SETTINGS:
            raise ConfigError(f"providers.{NAME}.{key}", "unknown key")
    url = table.get("url", DEFAULT_URL)
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"providers.{NAME}.url", "expected a ws:// or wss:// URL")
    token = table.get("token")
    return ExampleConfig(
        url=url,
        token=Secret(str(token)) if token else None,
        stall_timeout=table.get("stall_timeout"),
        heartbeat_interval=table.get("heartbeat_interval"),
    )
