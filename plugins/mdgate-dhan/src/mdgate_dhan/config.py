"""
``[providers.dhan]``: validated into a frozen :class:`DhanConfig`.

Credentials come from the table (``client_id``, ``access_token``) or from the
environment (``DHAN_CLIENT_ID``, ``DHAN_ACCESS_TOKEN``); the environment wins.
The access token can also come from a file (``access_token_file``, or the
``DHAN_ACCESS_TOKEN_FILE`` variable naming one; the variable wins), which
``SIGHUP`` re-reads: that is how a token is rotated without a restart. A token
file, wherever it is configured, wins over a token given as a value, since a
value in the process environment cannot change while the process runs.

Both credentials are held in :class:`mdgate.Secret` so that neither
shows in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from mdgate import ConfigError, ProviderDisabled, Secret
from mdgate_dhan.protocol import MODE_CODES, NAME

__all__ = [
    "DEFAULT_REST_URL",
    "DEFAULT_URL",
    "MAX_TOKEN_FILE_BYTES",
    "MODES",
    "SETTINGS",
    "DhanConfig",
    "parse_config",
]

DEFAULT_URL: Final = "wss://api-feed.dhan.co"
DEFAULT_REST_URL: Final = "https://api.dhan.co/v2"
#: IST is UTC+05:30; Dhan's feed LTT is IST wall-clock time encoded as epoch seconds
#: (docs/protocols/dhan.md#last-trade-time).
IST_OFFSET_SECONDS: Final = 19_800
#: Feed modes and their subscribe request codes (unsubscribe = code + 1).
MODES: Final[Mapping[str, int]] = MODE_CODES
ENV_CLIENT_ID: Final = "DHAN_CLIENT_ID"
ENV_ACCESS_TOKEN: Final = "DHAN_ACCESS_TOKEN"
ENV_ACCESS_TOKEN_FILE: Final = "DHAN_ACCESS_TOKEN_FILE"
#: Largest access token file read (a Dhan token is a JWT of about 1 KB).
MAX_TOKEN_FILE_BYTES: Final = 64 * 1024

#: The keys of ``[providers.dhan]``, with a one-line description each.
SETTINGS: Final[Mapping[str, str]] = {
    "url": f"feed base URL (default {DEFAULT_URL}); the plugin adds "
    "version=2, token, clientId and authType=2",
    "client_id": f"Dhan client id ({ENV_CLIENT_ID} wins when set)",
    "access_token": f"Dhan access token, a JWT ({ENV_ACCESS_TOKEN} wins when set)",
    "access_token_file": f"file holding the access token, re-read on SIGHUP ({ENV_ACCESS_TOKEN_FILE} "
    f"wins when set; a token file wins over access_token and {ENV_ACCESS_TOKEN})",
    "mode": "ticker | quote | full (default quote)",
    "ltt_offset_seconds": "seconds subtracted from the feed's LTT to get UTC "
    "(default 19800 = IST; 0 disables the correction)",
    "rest_url": f"REST base URL for backfill and snapshots (default {DEFAULT_REST_URL})",
    "stall_timeout": "seconds without a frame before a reconnect (default: the spec's 30)",
    "heartbeat_interval": "seconds between heartbeats (default: none, Dhan pings us)",
}


@dataclass(frozen=True, slots=True)
class DhanConfig:
    """
    The Dhan provider's configuration, as every hook receives it.

    Attributes:
        client_id: Dhan client id (secret: masked in repr and logs).
        access_token: the access token JWT (secret).
        access_token_file: the file the token was read from (``None``: the
            token was given as a value); a reload re-reads it.
        url: feed base URL without the query string.
        mode: ``ticker``, ``quote`` or ``full``.
        ltt_offset_seconds: subtracted from the feed's last-trade time (LTT)
            to obtain true UTC; 19800 by default, 0 to disable.
        rest_url: REST base URL (``/charts/intraday``, ``/marketfeed/ltp``).
        stall_timeout: overrides the spec's stall timeout when not ``None``.
        heartbeat_interval: overrides the spec's heartbeat interval when not ``None``.
    """

    client_id: Secret
    access_token: Secret
    url: str = DEFAULT_URL
    mode: str = "quote"
    ltt_offset_seconds: int = IST_OFFSET_SECONDS
    rest_url: str = DEFAULT_REST_URL
    stall_timeout: float | None = None
    heartbeat_interval: float | None = None
    access_token_file: str | None = None

    @property
    def request_code(self) -> int:
        """The subscribe request code of the configured mode (15, 17 or 21)."""
        return MODES[self.mode]


def _key(name: str) -> str:
    return f"providers.{NAME}.{name}"


def _url(name: str, value: Any, schemes: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(_key(name), "expected a non-empty URL string")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ConfigError(_key(name), "not a valid URL") from None
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(_key(name), f"expected a {' or '.join(schemes)} URL")
    if parts.query:
        raise ConfigError(_key(name), "give the base URL without a query string")
    return value


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(_key(name), f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _secret(name: str, table: Mapping[str, Any], environ: Mapping[str, str], env: str) -> Secret | None:
    value: Any = table.get(name)
    if value is not None and not isinstance(value, str):
        # Never echo the value: it may be a mistyped secret.
        raise ConfigError(_key(name), "expected a string")
    value = (environ.get(env) or "").strip() or (value or "").strip()
    return Secret(value) if value else None


def _read_token_file(key: str, path: str) -> Secret:
    """Read one token from ``path`` (bounded; never echoes the content)."""
    try:
        fd = os.open(os.path.expanduser(path), os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(key, f"token file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(key, f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read the token file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(key, f"{path} is larger than {MAX_TOKEN_FILE_BYTES} bytes (expected one token)")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(key, f"the token file {path} is empty")
    if any(c.isspace() for c in text):
        raise ConfigError(key, f"{path} holds more than one word (expected one token)")
    return Secret(text)


def _access_token(table: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[Secret | None, str | None]:
    """Return (token, the file it came from) by the documented precedence."""
    if "access_token" in table and "access_token_file" in table:
        raise ConfigError(_key("access_token_file"), "set access_token or access_token_file, not both")
    env_file = (environ.get(ENV_ACCESS_TOKEN_FILE) or "").strip()
    if env_file:
        return _read_token_file(ENV_ACCESS_TOKEN_FILE, env_file), env_file
    table_file = table.get("access_token_file")
    if table_file is not None:
        if not isinstance(table_file, str) or not table_file.strip():
            raise ConfigError(_key("access_token_file"), "expected a non-empty path")
        return _read_token_file(_key("access_token_file"), table_file.strip()), table_file.strip()
    return _secret("access_token", table, environ, ENV_ACCESS_TOKEN), None


def parse_config(table: Mapping[str, Any], environ: Mapping[str, str]) -> DhanConfig:
    """
    Validate ``[providers.dhan]`` (and the environment) into a :class:`DhanConfig`.

    Args:
        table: the raw ``[providers.dhan]`` table.
        environ: the process environment (``DHAN_CLIENT_ID``, ``DHAN_ACCESS_TOKEN``,
            ``DHAN_ACCESS_TOKEN_FILE``).

    Raises:
        ConfigError: an unknown key or a bad value, naming ``providers.dhan.<key>``;
            a token file that cannot be read, is empty or holds more than a token.
        ProviderDisabled: the client id or the access token is missing; the
            rest of the daemon keeps running without Dhan.
    """
    for key in table:
        if key not in SETTINGS:
            raise ConfigError(_key(str(key)), f"unknown key (known: {', '.join(sorted(SETTINGS))})")
    url = _url("url", table.get("url", DEFAULT_URL), ("ws", "wss"))
    rest_url = _url("rest_url", table.get("rest_url", DEFAULT_REST_URL), ("http", "https"))
    mode = table.get("mode", "quote")
    if mode not in MODES:
        raise ConfigError(_key("mode"), f"expected one of {', '.join(MODES)}, got {mode!r}")
    offset = table.get("ltt_offset_seconds", IST_OFFSET_SECONDS)
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 86_400:
        raise ConfigError(
            _key("ltt_offset_seconds"),
            f"expected an integer in -86400..86400, got {offset!r}",
        )
    stall = _positive("stall_timeout", table.get("stall_timeout"))
    heartbeat = _positive("heartbeat_interval", table.get("heartbeat_interval"))
    client_id = _secret("client_id", table, environ, ENV_CLIENT_ID)
    token, token_file = _access_token(table, environ)
    missing = [
        name for name, value in ((ENV_CLIENT_ID, client_id), (ENV_ACCESS_TOKEN, token)) if value is None
    ]
    if client_id is None or token is None:
        raise ProviderDisabled(
            NAME,
            f"missing credentials ({', '.join(missing)}): set {ENV_CLIENT_ID} and "
            f"{ENV_ACCESS_TOKEN} (or {ENV_ACCESS_TOKEN_FILE}) in the environment, or client_id "
            "and access_token (or access_token_file) in [providers.dhan]",
        )
    return DhanConfig(
        client_id=client_id,
        access_token=token,
        url=url,
        mode=mode,
        ltt_offset_seconds=offset,
        rest_url=rest_url.rstrip("/"),
        stall_timeout=stall,
        heartbeat_interval=heartbeat,
        access_token_file=token_file,
    )
