"""
Possible holes in an instrument's stream: one owner for the ``gap`` and ``provider`` frames.

A gap is announced to the instrument's clients (``{"type": "gap", ...}``),
counted by reason (``/status`` ``routing.gaps``), kept by a store that keeps
gaps (Redis: ``mdgate:{I}:gaps``) and handed to every listener in
:attr:`GapDesk.listeners` (the backfiller). Reasons: ``reconnect`` and
``stall`` (a provider connection that delivers again), ``failover`` (the
serving provider changed), ``store`` (the store's own, kept by the store) and
``conflated`` (one slow client's, sent by the server). What backfill made
of a gap is announced by :meth:`GapDesk.filled` (``gap_filled``). See
docs/client-protocol.md#provider-switches-and-gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mdgate._latest import LatestTicks
from mdgate._model import encode
from mdgate._providers.faults import PluginFaults
from mdgate._serve.fanout import Fanout

__all__ = ["Gap", "GapDesk"]

#: A gap as passed to listeners: ``instrument``, ``from_ts``, ``to_ts``, ``reason`` and
#: extras (``from_provider`` on a failover).
Gap = dict[str, Any]


class GapDesk:
    """
    Announces, counts and keeps the gaps of the gateway's instruments.

    Args:
        fanout: where the frames go (to the instrument's clients only).
        latest: the latest tick per instrument (a gap starts at it).
        store: the store; kept gaps go to its ``record_gap`` when it has one.
        faults: where a store plugin's fault in ``record_gap`` is recorded.
        store_plugin: the store plugin's name (for that record).
    """

    def __init__(self, fanout: Fanout, latest: LatestTicks, store: object, faults: PluginFaults,
                 store_plugin: str) -> None:
        self.fanout = fanout
        self.latest = latest
        self.store = store
        self.faults = faults
        self.store_plugin = store_plugin
        #: Gap events sent to clients since start, by reason.
        self.counts: dict[str, int] = {}
        #: Called with every gap after it was announced (never raises into the desk).
        self.listeners: list[Callable[[Gap], None]] = []

    def gap(self, instrument: str, from_ms: int, to_ms: int, reason: str, **extra: object) -> None:
        """Tell the clients of ``instrument`` that ticks up to ``to_ms`` may be missing (a ``gap`` frame)."""
        last = self.latest.get(instrument)
        from_ts = min(last.ts, from_ms) if last is not None else from_ms
        gap: Gap = {"from_ts": from_ts, "to_ts": to_ms, "reason": reason, **extra}
        self.fanout.announce(instrument, encode({"type": "gap", "instrument": instrument, **gap}))
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self._keep(instrument, gap)
        for listener in self.listeners:
            listener({"instrument": instrument, **gap})

    def filled(self, instrument: str, from_ms: int, to_ms: int, filled: bool, **extra: object) -> None:
        """
        Tell the clients of ``instrument`` what backfill made of the gap ``[from_ms, to_ms]``
        (``{"type": "gap_filled", ...}``), and keep the outcome in the store (an entry with
        ``status`` ``filled`` or ``unfilled`` in ``mdgate:{I}:gaps``).
        """
        outcome: Gap = {"from_ts": from_ms, "to_ts": to_ms, "filled": filled, **extra}
        self.fanout.announce(instrument, encode({"type": "gap_filled", "instrument": instrument, **outcome}))
        self._keep(instrument, {"status": "filled" if filled else "unfilled", "from_ts": from_ms,
                                "to_ts": to_ms, **{k: v for k, v in extra.items() if v is not None}})

    def _keep(self, instrument: str, fields: Gap) -> None:
        """Hand ``fields`` to a store that keeps gaps (Redis: ``mdgate:{I}:gaps``)."""
        record = getattr(self.store, "record_gap", None)
        if callable(record):
            try:
                record(instrument, fields)
            except Exception as exc:  # a store plugin's bug must not stop the announcement
                self.faults.record(self.store_plugin, "store.record_gap", exc)

    def on_resume(self, codes: dict[str, str], dropped_ms: int, why: str, live_ms: int) -> None:
        """A connection delivers again after a drop (``reconnect``) or a stall: a gap for each instrument."""
        for instrument in codes.values():
            self.gap(instrument, dropped_ms, live_ms, why)

    def on_switch(self, instrument: str, old: str, new: str, at_ms: int) -> None:
        """
        Tell the instrument's clients whose data they see from now on
        (``provider``), and that the switch may have left a hole since its
        latest tick (``gap``, reason ``failover``; fail-back too).
        """
        self.fanout.announce(instrument, encode({"type": "provider", "instrument": instrument,
                                                 "provider": new}))
        self.gap(instrument, at_ms, at_ms, "failover", from_provider=old)
