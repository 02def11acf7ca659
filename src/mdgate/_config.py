"""
Configuration: ``load_settings(path, environ) -> Settings``.

Precedence, lowest first: built-in defaults, the TOML file
(``--config PATH``, else ``./mdgate.toml`` when present), then environment
variables: ``MDGATE_DATABASE_URL``, ``MDGATE_REDIS_URL``, and
``MDGATE_<SECTION>__<KEY>`` for any scalar key (``MDGATE_SERVER__PORT=9000``).
Provider tables (``[providers.<name>]``) are passed untouched to the
provider's own ``parse_config``, with the environment, which validates them
(Dhan reads ``DHAN_CLIENT_ID`` / ``DHAN_ACCESS_TOKEN`` there).

Every problem raises :class:`~mdgate._errors.ConfigError` naming the key path.
Secrets (tokens, passwords in URLs) are held in :class:`Secret`, whose
``str`` and ``repr`` are masked; call :meth:`Secret.reveal` where the value is
really needed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mdgate._calendar import CalendarOverride, parse_calendars
from mdgate._errors import ConfigError, InstrumentError
from mdgate._model import parse_instrument
from mdgate._redact import Secret, mask_url

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "BackfillSettings",
    "DatabaseSettings",
    "FleetSettings",
    "LoggingSettings",
    "RecordSettings",
    "RedisSettings",
    "RuntimeSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "SubscriptionSettings",
    "load_settings",
    "mask_url",
]

DEFAULT_CONFIG_FILE: Final = "mdgate.toml"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: the client WebSocket + HTTP endpoint."""

    host: str = "127.0.0.1"
    port: int = 8765
    #: Access tokens; empty = no authentication.
    tokens: tuple[Secret, ...] = ()
    #: Largest client message accepted; larger closes with 1009.
    max_message_size: int = 64 * 1024
    #: Negotiate permessage-deflate (off: it defeats encode-once).
    compression: bool = False
    #: Ticks queued per client before conflation to the latest per instrument.
    client_queue: int = 10_000
    #: Seconds a client socket may stay undrained before it is closed (1008).
    drain_timeout: float = 60.0
    #: Largest number of ticks per frame sent to a client.
    max_ticks_per_frame: int = 1000
    #: Browser ``Origin`` values accepted on ``/ws`` besides same-host ones; ``"*"`` = any.
    #: A client that sends no ``Origin`` (not a browser) is always accepted.
    allowed_origins: tuple[str, ...] = ()
    #: Client connections in all; over it the handshake is answered HTTP 503.
    max_clients: int = 10_000
    #: Client connections per remote address; over it the handshake is answered HTTP 503.
    max_clients_per_address: int = 1000
    #: Instruments one client may be subscribed to at once.
    max_instruments_per_client: int = 5000
    #: Instruments one subscribe/unsubscribe request may name.
    max_instruments_per_request: int = 1000
    #: Bytes queued in user space for one client (control frames included); past it the
    #: client's ticks are conflated, and if control frames alone exceed it, it is closed (1008).
    client_buffer_bytes: int = 8 * 1024 * 1024
    #: Serve ``/metrics`` without a token even when tokens are configured.
    metrics_public: bool = False
    #: Stored ticks one ``subscribe`` with ``since`` may replay (the newest of each instrument kept).
    replay_max: int = 100_000


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """``[redis]``: the Redis tick store (absent url = in-memory store)."""

    url: Secret | None = None
    #: Entries kept per instrument tick stream (``XADD MAXLEN ~``).
    stream_maxlen: int = 100_000
    #: Entries kept in the shared ``mdgate:feed`` stream other services follow.
    feed_maxlen: int = 100_000
    #: Write a batch when it holds this many ticks...
    batch_max: int = 500
    #: ...or when its oldest tick is this many seconds old.
    batch_interval: float = 0.005
    #: Ticks held in order while Redis is unreachable; past this, oldest drop (counted).
    buffer_max: int = 2_000_000
    #: Build one-minute bars in ``mdgate:{INSTR}:bars:1m``.
    bars: bool = True
    #: Entries kept per instrument bar stream.
    bars_maxlen: int = 100_000
    #: On a Redis Cluster: the shared feed is split into ``mdgate:feed:{0}`` .. ``{N-1}`` (by instrument).
    feed_partitions: int = 16


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: PostgreSQL routing tables (absent url = built-in routes)."""

    url: Secret | None = None
    #: Run pending migrations at start instead of refusing to start.
    auto_upgrade: bool = False
    #: Where the last good routing table is cached for starts without the database.
    cache_path: str = ""
    #: Seconds allowed per connection attempt.
    connect_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    """``[subscriptions]``: which instruments are wanted."""

    #: Instruments subscribed always, whether or not a client wants them.
    always: tuple[str, ...] = ()
    #: Seconds an instrument stays subscribed after its last client left.
    linger: float = 30.0


#: The values of ``[runtime] event_loop``.
EVENT_LOOPS: Final = ("auto", "asyncio", "uvloop")


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """``[runtime]``: connection runtime timings (seconds)."""

    #: First reconnect delay (full jitter: uniform in [0, this]).
    backoff_initial: float = 1.0
    #: Cap of the exponential backoff.
    backoff_max: float = 30.0
    #: After an authentication failure, at most one attempt per this many seconds.
    auth_retry: float = 60.0
    #: Default stall timeout (a provider's spec may set its own).
    stall_timeout: float = 30.0
    #: A primary provider is down after this long disconnected or stalled.
    failover_after: float = 10.0
    #: A recovered primary gets its instruments back after this long healthy.
    failback_after: float = 30.0
    #: Ticks buffered between provider connections and the pipeline.
    queue_size: int = 100_000
    #: Seconds between ``session_stats`` log lines.
    stats_interval: float = 60.0
    #: Seconds allowed for graceful shutdown.
    shutdown_timeout: float = 5.0
    #: Seconds a tick's ``ts`` may lead its ``recv_ts``; a tick further ahead is dropped
    #: (counted as decode error kind ``bad_ts``).
    max_clock_skew: float = 300.0
    #: Seconds without a tick, its market open, after which an instrument is ``stale``
    #: (0: its provider's stall_timeout, else ``stall_timeout`` above).
    stale_after: float = 0.0
    #: The event loop: ``asyncio`` (the default: uvloop measured no gain end to end here and
    #: 2.5 MiB more), ``auto`` (uvloop when it is installed) or ``uvloop`` (an error when it is
    #: not installed). Read at start, not on reload.
    event_loop: str = "asyncio"


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """``[record]``: keep every raw provider frame (``mdgate record``); off while ``dir`` is empty."""

    #: The recording's directory (must not hold a recording yet).
    dir: str = ""
    #: A new segment file past this many compressed bytes...
    max_bytes: int = 64 * 1024 * 1024
    #: ... or past this many seconds.
    max_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    """``[backfill]``: after a gap, ask a provider's REST API for the missing one-minute bars."""

    enabled: bool = True
    #: Requests per second to one provider (token bucket)...
    rate: float = 1.0
    #: ...with this many requests allowed back to back.
    burst: int = 5
    #: Seconds after the end of the minute holding the gap's end before the provider is asked.
    delay: float = 5.0
    #: Gaps waiting to be backfilled; past it the oldest is dropped (counted, announced unfilled).
    max_pending: int = 1000
    #: Seconds of a gap backfilled at most (its most recent part); a longer gap is ``filled: false``.
    max_window: float = 86_400.0
    #: Seconds one provider request may take.
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """``[fleet]``: several instances on one universe (``mdgate run --role ingest|fanout``)."""

    #: This instance's name in the leases and the demand registry (default: host name and process id).
    instance: str = ""
    #: Connection slots per provider credential, shared by the ingest instances (one lease each).
    slots: int = 1
    #: Seconds a lease lives without renewal: after its holder dies, another instance takes it over.
    lease_ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """``[logging]``."""

    level: str = "info"
    #: ``auto`` (console on a terminal, JSON otherwise), ``console`` or ``json``.
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration of one daemon."""

    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    subscriptions: SubscriptionSettings = field(default_factory=SubscriptionSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    record: RecordSettings = field(default_factory=RecordSettings)
    backfill: BackfillSettings = field(default_factory=BackfillSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    #: Raw ``[providers.<name>]`` tables; each provider validates its own.
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: ``[instruments."EXCH:SYM"]``: provider name -> provider code.
    instruments: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: ``[exchanges]``: exchange -> its providers, primary first (replaces the specs' defaults).
    exchanges: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``[calendars.<EXCHANGE>]``: trading-calendar overrides (see ``mdgate._calendar``).
    calendars: Mapping[str, CalendarOverride] = field(default_factory=dict)
    #: The environment the settings were read with (providers read secrets here).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: The file the settings came from, if any.
    source: str | None = None

    def __repr__(self) -> str:
        # Provider tables are raw TOML (they may hold tokens): only their keys are shown.
        # Every other section holds its secrets in Secret, whose repr is masked.
        parts = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "providers":
                keys = {name: sorted(map(str, table)) for name, table in value.items()}
                parts.append(f"providers=<keys {keys!r}>")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"


_SECTIONS: Final[dict[str, type]] = {
    "server": ServerSettings,
    "redis": RedisSettings,
    "database": DatabaseSettings,
    "subscriptions": SubscriptionSettings,
    "runtime": RuntimeSettings,
    "logging": LoggingSettings,
    "record": RecordSettings,
    "backfill": BackfillSettings,
    "fleet": FleetSettings,
}
_LEVELS: Final = ("debug", "info", "warning", "error")
#: ``[exchanges]`` bounds: exchanges named, providers per exchange.
MAX_EXCHANGES: Final = 1000
MAX_EXCHANGE_PROVIDERS: Final = 16
_EXCHANGE_RE: Final = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")
_PROVIDER_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_FORMATS: Final = ("auto", "console", "json")


def _coerce(key: str, value: Any, hint: Any, from_env: bool) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner, from_env)
    if hint is Secret:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "expected a non-empty string")
        return Secret(value)
    if origin is tuple:
        (inner,) = [a for a in args if a is not Ellipsis]
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(f"{key}[{i}]", v, inner, from_env) for i, v in enumerate(value))
    if hint is bool:
        if from_env and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if from_env and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if value < 0:
            raise ConfigError(key, "must not be negative")
        return value
    if hint is float:
        if from_env and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if value < 0:
            raise ConfigError(key, "must not be negative")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover


def _build_section(name: str, cls: type, table: Mapping[str, Any], env: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{name}.{key}", f"unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key], from_env=False)
    for key, value in env.items():
        if key not in names:
            raise ConfigError(f"{name}.{key}", "unknown key (from the environment)")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key], from_env=True)
    return cls(**kwargs)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for var, value in environ.items():
        if not var.startswith("MDGATE_") or "__" not in var:
            continue
        section, _, key = var[len("MDGATE_"):].partition("__")
        section, key = section.lower(), key.lower()
        if section in _SECTIONS:
            out.setdefault(section, {})[key] = value
    if environ.get("MDGATE_DATABASE_URL"):
        out.setdefault("database", {})["url"] = environ["MDGATE_DATABASE_URL"]
    if environ.get("MDGATE_REDIS_URL"):
        out.setdefault("redis", {})["url"] = environ["MDGATE_REDIS_URL"]
    return out


class OneCode(Mapping[str, str]):
    """
    One instrument's ``[instruments]`` entry when it names one provider, the
    usual case: a read-only ``{provider: code}`` in two slots (a dict costs
    about 150 bytes more, 4 MB over 25,000 instruments).
    """

    __slots__ = ("code", "provider")

    def __init__(self, provider: str, code: str) -> None:
        self.provider = provider
        self.code = code

    def __getitem__(self, provider: str) -> str:
        if provider != self.provider:
            raise KeyError(provider)
        return self.code

    def get(self, provider: str, default: Any = None) -> Any:
        """The code for ``provider``, else ``default``."""
        return self.code if provider == self.provider else default

    def __contains__(self, provider: object) -> bool:
        return provider == self.provider

    def __iter__(self) -> typing.Iterator[str]:
        yield self.provider

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return repr({self.provider: self.code})


def _instruments(table: Any) -> dict[str, Mapping[str, str]]:
    if not isinstance(table, dict):
        raise ConfigError("instruments", "expected a table of instruments")
    out: dict[str, Mapping[str, str]] = {}
    for raw, codes in table.items():
        try:
            name, _, _ = parse_instrument(raw)
        except InstrumentError as exc:
            raise ConfigError(f"instruments.{raw}", str(exc)) from None
        if name == raw:  # already normalized: the file's string, not a second copy
            name = raw
        if not isinstance(codes, dict):
            raise ConfigError(f"instruments.{raw}", "expected a table of provider = code")
        for provider, code in codes.items():
            if not isinstance(code, str) or not code:
                raise ConfigError(f"instruments.{raw}.{provider}", "expected a non-empty string")
        out[name] = OneCode(*next(iter(codes.items()))) if len(codes) == 1 else dict(codes)
    return out


def _same_strings(always: tuple[str, ...], instruments: Mapping[str, object]) -> tuple[str, ...]:
    """``always`` holding the ``[instruments]`` names' own strings where equal (one string, not two)."""
    if not always or not instruments:
        return always
    names = {name: name for name in instruments}
    return tuple(names.get(name, name) for name in always)


def _exchanges(table: Any) -> dict[str, tuple[str, ...]]:
    """``[exchanges]``: ``NSE = ["dhan", "yahoo"]`` (exchange names in any case, answered upper)."""
    if not isinstance(table, dict):
        raise ConfigError("exchanges", 'expected a table of EXCHANGE = ["provider", ...]')
    if len(table) > MAX_EXCHANGES:
        raise ConfigError("exchanges", f"at most {MAX_EXCHANGES} exchanges")
    out: dict[str, tuple[str, ...]] = {}
    for raw, providers in table.items():
        exchange = raw.strip().upper()
        key = f"exchanges.{raw}"
        if not _EXCHANGE_RE.match(exchange):
            raise ConfigError(key, "not an exchange name (a letter, then A-Z, 0-9, _; at most 16)")
        if exchange in out:
            raise ConfigError(key, f"{exchange} is named twice")
        if not isinstance(providers, list) or not providers:
            raise ConfigError(key, 'expected a non-empty list of provider names, primary first: ["a", "b"]')
        if len(providers) > MAX_EXCHANGE_PROVIDERS:
            raise ConfigError(key, f"at most {MAX_EXCHANGE_PROVIDERS} providers")
        for i, name in enumerate(providers):
            if not isinstance(name, str) or not _PROVIDER_RE.match(name):
                raise ConfigError(f"{key}[{i}]", f"not a provider name: {name!r:.80}")
            if name in providers[:i]:
                raise ConfigError(f"{key}[{i}]", f"{name} is listed twice")
        out[exchange] = tuple(providers)
    return out


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """
    Read and validate the configuration.

    Args:
        path: TOML file; ``None`` reads ``./mdgate.toml`` when it exists.
        environ: the environment (defaults to ``os.environ``).

    Raises:
        ConfigError: naming the key path of the first problem.
    """
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    source: str | None = None
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path}: invalid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError("--config", f"{path}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError("--config", f"{path}: {exc.strerror}") from None
    known = {*_SECTIONS, "providers", "instruments", "exchanges", "calendars"}
    for key in data:
        if key not in known:
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(known))})")
    env_over = _env_overrides(env)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(name, "expected a table")
        sections[name] = _build_section(name, cls, table, env_over.get(name, {}))
    providers = data.get("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(t, dict) for t in providers.values()):
        raise ConfigError("providers", "expected [providers.<name>] tables")
    instruments = _instruments(data.get("instruments", {}))
    subs = sections["subscriptions"]
    sections["subscriptions"] = dataclasses.replace(subs, always=_same_strings(subs.always, instruments))
    settings = Settings(
        **sections,
        providers=providers,
        instruments=instruments,
        exchanges=_exchanges(data.get("exchanges", {})),
        calendars=parse_calendars(data.get("calendars", {})),
        environ=env,
        source=source,
    )
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.logging.level.lower() not in _LEVELS:
        raise ConfigError("logging.level", f"expected one of {', '.join(_LEVELS)}")
    if s.logging.format not in _FORMATS:
        raise ConfigError("logging.format", f"expected one of {', '.join(_FORMATS)}")
    if not 0 <= s.server.port <= 65535:
        raise ConfigError("server.port", "expected 0..65535")
    for i, name in enumerate(s.subscriptions.always):
        try:
            parse_instrument(name)
        except InstrumentError as exc:
            raise ConfigError(f"subscriptions.always[{i}]", str(exc)) from None
    if s.record.max_bytes < 1024 or s.record.max_seconds <= 0:
        key = "max_bytes" if s.record.max_bytes < 1024 else "max_seconds"
        raise ConfigError(f"record.{key}", "max_bytes must be at least 1024, max_seconds above 0")
    for name, table in s.providers.items():
        if "replay" in table and not (isinstance(table["replay"], str) and table["replay"]):
            raise ConfigError(f"providers.{name}.replay", "expected the path of a recording directory")
    for key in ("batch_max", "buffer_max", "stream_maxlen", "feed_partitions"):
        if getattr(s.redis, key) < 1:
            raise ConfigError(f"redis.{key}", "must be at least 1")
    # a zero delay would turn every retry loop into a busy loop against a dead endpoint
    for key in ("backoff_initial", "backoff_max", "auth_retry"):
        if getattr(s.runtime, key) <= 0:
            raise ConfigError(f"runtime.{key}", "must be greater than 0 (seconds)")
    if s.runtime.backoff_max < s.runtime.backoff_initial:
        raise ConfigError("runtime.backoff_max", "must be at least runtime.backoff_initial")
    if s.runtime.queue_size < 1:
        raise ConfigError("runtime.queue_size", "must be at least 1")
    if s.runtime.event_loop not in EVENT_LOOPS:
        raise ConfigError("runtime.event_loop", f"must be one of {', '.join(EVENT_LOOPS)}")
    for key in ("client_queue", "max_clients", "max_clients_per_address", "max_instruments_per_client",
                "max_instruments_per_request", "replay_max"):
        if getattr(s.server, key) < 1:
            raise ConfigError(f"server.{key}", "must be at least 1")
    _check_backfill(s.backfill)
    if s.fleet.slots < 1:
        raise ConfigError("fleet.slots", "must be at least 1")
    if not s.fleet.lease_ttl >= 1:
        raise ConfigError("fleet.lease_ttl", "must be at least 1 (seconds)")
    if s.server.client_buffer_bytes < 64 * 1024:
        raise ConfigError("server.client_buffer_bytes", "must be at least 65536")


def _check_backfill(b: BackfillSettings) -> None:
    for key in ("rate", "timeout"):
        if not getattr(b, key) > 0:
            raise ConfigError(f"backfill.{key}", "must be greater than 0")
    if not b.delay >= 0:
        raise ConfigError("backfill.delay", "must be 0 or more (seconds)")
    for key in ("burst", "max_pending"):
        if getattr(b, key) < 1:
            raise ConfigError(f"backfill.{key}", "must be at least 1")
    if not b.max_window >= 60:
        raise ConfigError("backfill.max_window", "must be at least 60 (seconds)")
