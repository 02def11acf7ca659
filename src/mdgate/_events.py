"""
The events of :mod:`mdgate.client` and the frame decoding behind them (pure: no I/O).

:class:`_State` is what the client knows across connections: the instruments
it wants, the last ``seq`` seen of each, and how the gateway answered a
resume; it turns each frame into typed events and never yields a tick twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import msgspec

__all__ = [
    "ClientError", "ConnectError", "ErrorEvent", "Event", "GapEvent", "GapFilledEvent",
    "HandshakeRefused", "ProtocolError", "ProviderEvent", "Reconnected", "Subscribed", "TickEvent",
    "Unsubscribed",
]


class ClientError(Exception):
    """Base of the client's errors."""


class ConnectError(ClientError):
    """The first connection could not be opened (the gateway is not reachable at that URL)."""


class HandshakeRefused(ClientError):
    """
    The gateway refused the handshake with an HTTP 4xx that retrying cannot fix (401: no
    valid token; 403: origin not allowed); never retried. ``status`` is the HTTP status.
    """

    def __init__(self, url: str, status: int) -> None:
        hint = {401: " (no valid token: pass token=...)", 403: " (origin not allowed)"}.get(status, "")
        super().__init__(f"{url} refused the connection: HTTP {status}{hint}")
        self.status = status


class ProtocolError(ClientError):
    """The gateway sent a frame this client cannot read."""


# -- events ------------------------------------------------------------------------


class TickEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """
    One tick (fields as in the protocol's tick table; absent ones are ``None``).

    ``seq`` is the gateway's per-instrument sequence number (``None`` from a gateway
    that does not number ticks); ``snapshot`` is true for the ticks of a ``snapshot`` frame.
    """

    instrument: str
    price: float
    ts: int
    recv_ts: int
    provider: str
    size: int | None = None
    volume: int | None = None
    bid: float | None = None
    ask: float | None = None
    bid_size: int | None = None
    ask_size: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    prev_close: float | None = None
    oi: int | None = None
    seq: int | None = None
    snapshot: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The tick as the gateway sent it: present fields only, without ``snapshot``."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out.pop("snapshot", None)
        return out


#: Why a gap may exist: ``reconnect``, ``stall``, ``failover``, ``store``, ``conflated`` (others may come).
GapReason: TypeAlias = str


class GapEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Ticks of ``instrument`` between ``from_ts`` and ``to_ts`` (epoch ms) may be missing."""

    instrument: str
    from_ts: int
    to_ts: int
    reason: GapReason
    from_provider: str | None = None


class GapFilledEvent(msgspec.Struct, frozen=True, kw_only=True):
    """
    The gateway's backfill of a gap ended: ``filled`` says whether the bars now cover it;
    ``provider`` was asked, ``bars`` minutes were added; when not filled, ``reason``
    (``rate_limited``, ``no_backfill``, ...) and ``error`` say why.
    """

    instrument: str
    from_ts: int
    to_ts: int
    filled: bool
    provider: str | None = None
    bars: int | None = None
    reason: str | None = None
    error: str | None = None


class ProviderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """From now on ``instrument``'s data comes from ``provider``."""

    instrument: str
    provider: str


class ErrorEvent(msgspec.Struct, frozen=True, kw_only=True):
    """
    A request was (partly) refused: one event per refused instrument, or one with
    ``instrument=None`` for an error about the whole request.
    """

    code: str
    message: str
    instrument: str | None = None


class Subscribed(msgspec.Struct, frozen=True, kw_only=True):
    """
    The gateway subscribed these instruments. ``recovered`` (instruments resumed with
    ``since``) says per instrument whether the missed ticks could be replayed; where
    not, ``from_seq`` is the number of the first tick that follows (the client's
    new starting point: ticks from it on are yielded even if numbered lower than
    the last one seen, e.g. after a gateway restart with the memory store).
    """

    instruments: tuple[str, ...]
    recovered: Mapping[str, bool] = msgspec.field(default_factory=dict)
    from_seq: Mapping[str, int] = msgspec.field(default_factory=dict)


class Unsubscribed(msgspec.Struct, frozen=True, kw_only=True):
    """The gateway unsubscribed these instruments."""

    instruments: tuple[str, ...]


class Reconnected(msgspec.Struct, frozen=True, kw_only=True):
    """
    The connection was lost and opened again; every instrument was subscribed again.

    Attributes:
        down_for: seconds from the loss to the new connection.
        attempts: connection attempts it took.
        error: why the connection was lost.
        recovered: per resumed instrument, whether the gateway replayed what was missed
            (empty when nothing was resumed or the gateway does not say).
    """

    down_for: float
    attempts: int
    error: str
    recovered: Mapping[str, bool] = msgspec.field(default_factory=dict)


Event: TypeAlias = (
    TickEvent | GapEvent | GapFilledEvent | ProviderEvent | ErrorEvent | Subscribed | Unsubscribed
    | Reconnected
)


# -- frames --------------------------------------------------------------------------


class _Ticks(msgspec.Struct, tag_field="type", tag="ticks"):
    ticks: list[TickEvent]


class _Snapshot(msgspec.Struct, tag_field="type", tag="snapshot"):
    ticks: list[TickEvent]


class _Gap(GapEvent, tag_field="type", tag="gap", frozen=True, kw_only=True):
    pass


class _GapFilled(GapFilledEvent, tag_field="type", tag="gap_filled", frozen=True, kw_only=True):
    pass


class _Provider(ProviderEvent, tag_field="type", tag="provider", frozen=True, kw_only=True):
    pass


class _Item(msgspec.Struct):
    instrument: str
    code: str
    message: str


class _Error(msgspec.Struct, tag_field="type", tag="error"):
    code: str
    message: str
    errors: list[_Item] = []
    more: int = 0


class _Subscribed(msgspec.Struct, tag_field="type", tag="subscribed"):
    instruments: list[str]
    recovered: bool | dict[str, Any] | None = None
    from_seq: dict[str, int] | None = None


class _Unsubscribed(msgspec.Struct, tag_field="type", tag="unsubscribed"):
    instruments: list[str]


class _Type(msgspec.Struct):
    type: str = ""


_Frame: TypeAlias = (
    _Ticks | _Snapshot | _Gap | _GapFilled | _Provider | _Error | _Subscribed | _Unsubscribed
)
_KNOWN: Final = frozenset({"ticks", "snapshot", "gap", "gap_filled", "provider", "error", "subscribed",
                           "unsubscribed"})
_frames: Final = msgspec.json.Decoder(_Frame)
_type_only: Final = msgspec.json.Decoder(_Type)


def _recovered(value: bool | dict[str, Any] | None, resumed: Iterable[str]) -> dict[str, bool]:
    """``recovered`` as sent (one flag, or per instrument a flag or an object) as a dict of flags."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return dict.fromkeys(resumed, value)
    out: dict[str, bool] = {}
    for name, item in value.items():
        flag = item.get("recovered") if isinstance(item, dict) else item
        out[name] = bool(flag)
    return out


class _State:
    """
    What the client knows across connections: the subscribed instruments and the
    last ``seq`` seen of each; turns frames into events, dropping repeated ticks.
    """

    def __init__(self) -> None:
        self.wanted: dict[str, None] = {}
        self.last_seq: dict[str, int] = {}
        self.recovered: dict[str, bool] = {}
        #: (down_for, attempts, error, resumed instruments) of a reconnect not reported yet.
        self.reconnect: tuple[float, int, str, tuple[str, ...]] | None = None

    def since(self) -> dict[str, int]:
        """``since`` of a resubscription: the last seq seen of each wanted instrument that has one."""
        return {name: self.last_seq[name] for name in self.wanted if name in self.last_seq}

    def feed(self, raw: str | bytes) -> list[Event]:
        """
        The events of one frame, in order (repeated ticks dropped; unknown frame types ignored).

        Raises:
            ProtocolError: a frame of a known type that does not have its documented shape.
        """
        try:
            frame = _frames.decode(raw)
        except msgspec.DecodeError as exc:
            try:
                kind = _type_only.decode(raw).type
            except msgspec.DecodeError:
                raise ProtocolError(f"unreadable frame: {exc}") from None
            if kind in _KNOWN:
                raise ProtocolError(f"bad {kind!r} frame: {exc}") from None
            return []  # a frame type newer than this client
        events: list[Event] = []
        if self.reconnect is not None:
            events.append(self._reconnected(frame))
        events.extend(self._events(frame))
        return events

    def _reconnected(self, frame: _Frame) -> Reconnected:
        down_for, attempts, error, resumed = self.reconnect or (0.0, 0, "", ())
        self.reconnect = None
        recovered = _recovered(frame.recovered, resumed) if isinstance(frame, _Subscribed) else {}
        self.recovered.update(recovered)
        return Reconnected(down_for=down_for, attempts=attempts, error=error, recovered=recovered)

    def _events(self, frame: _Frame) -> list[Event]:
        if isinstance(frame, _Ticks | _Snapshot):
            return self._ticks(frame.ticks, isinstance(frame, _Snapshot))
        if isinstance(frame, _Gap):
            return [GapEvent(instrument=frame.instrument, from_ts=frame.from_ts, to_ts=frame.to_ts,
                             reason=frame.reason, from_provider=frame.from_provider)]
        if isinstance(frame, _GapFilled):
            return [GapFilledEvent(instrument=frame.instrument, from_ts=frame.from_ts, to_ts=frame.to_ts,
                                   filled=frame.filled, provider=frame.provider, bars=frame.bars,
                                   reason=frame.reason, error=frame.error)]
        if isinstance(frame, _Provider):
            return [ProviderEvent(instrument=frame.instrument, provider=frame.provider)]
        if isinstance(frame, _Error):
            items = [ErrorEvent(code=i.code, message=i.message, instrument=i.instrument)
                     for i in frame.errors]
            if not items or frame.more:
                items.append(ErrorEvent(code=frame.code, message=frame.message))
            return list(items)
        if isinstance(frame, _Subscribed):
            recovered = _recovered(frame.recovered, frame.instruments)
            self.recovered.update(recovered)
            restart = frame.from_seq or {}
            for name, first in restart.items():  # the numbering that follows starts here
                self.last_seq[name] = first - 1
            return [Subscribed(instruments=tuple(frame.instruments), recovered=recovered, from_seq=restart)]
        return [Unsubscribed(instruments=tuple(frame.instruments))]

    def _ticks(self, ticks: list[TickEvent], snapshot: bool) -> list[Event]:
        out: list[Event] = []
        last = self.last_seq
        for tick in ticks:
            seq = tick.seq
            if seq is not None:
                seen = last.get(tick.instrument)
                if seen is not None and seq <= seen:
                    continue  # already yielded (replayed after a resume, or a snapshot of it)
                if not snapshot:  # a snapshot is the newest by time: live ticks numbered below it may follow
                    last[tick.instrument] = seq
            out.append(msgspec.structs.replace(tick, snapshot=True) if snapshot else tick)
        return out
