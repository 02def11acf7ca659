"""
The fan-out role (``mdgate run --role fanout``): serve clients from what the ingest tier stored.

A fan-out instance opens no provider connection. It

* follows the shared feed in Redis (``mdgate:feed``; on a Redis Cluster every
  ``mdgate:feed:{N}`` partition) with blocking consumer reads, a batch per read, and
  publishes each instrument's ticks once, in ``seq`` order (a tick whose ``seq`` is not
  above the last one published is a duplicate and is dropped);
* announces the gaps the ingest tier put in the feed (a takeover after an ingest instance
  died, a provider reconnect) to the instrument's clients as ``gap`` frames;
* answers snapshots from ``mdgate:{I}:last`` and resumes (``since``) from the instrument
  streams, like a single gateway;
* publishes its clients' demand to the registry (:class:`~mdgate._fleet.demand.DemandPublisher`),
  which the ingest tier follows.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from mdgate._latest import LatestTicks
from mdgate._model import Tick, encode
from mdgate._serve.fanout import Fanout

__all__ = ["FeedFollower"]

log = structlog.get_logger(__name__)

#: The fields of a feed gap entry forwarded to clients.
_GAP_FIELDS = ("from_ts", "to_ts", "reason")


class _Events(Protocol):
    ticks: list[Tick]
    gaps: list[dict[str, Any]]


class FeedFollower:
    """
    Publishes the feed's ticks and gaps to this instance's clients.

    Args:
        store: the Redis store (its ``follow_feed_events``).
        latest: this instance's latest-tick table (snapshots merge it).
        fanout: where the ticks and gap frames go.
    """

    def __init__(self, store: Any, latest: LatestTicks, fanout: Fanout) -> None:
        self.store = store
        self.latest = latest
        self.fanout = fanout
        #: instrument -> the last ``seq`` published (resumes replay up to it from the store).
        self.last: dict[str, int] = {}
        #: Ticks published, feed duplicates dropped, gap entries announced.
        self.ticks = self.duplicates = self.gaps = 0
        #: Reads, and ticks taken from instrument streams to fill holes in the feed.
        self.reads = self.filled = 0

    def last_seq(self, instrument: str) -> int | None:
        """The last ``seq`` published for ``instrument`` (None: none since start)."""
        return self.last.get(instrument)

    def take(self, events: _Events) -> None:
        """Publish one read's ticks (in ``seq`` order per instrument, each once) and gaps."""
        self.reads += 1
        last = self.last
        fresh: list[Tick] = []
        for t in events.ticks:
            seq = t.seq
            if seq is not None:
                prev = last.get(t.instrument)
                if prev is not None and seq <= prev:
                    self.duplicates += 1
                    continue
                last[t.instrument] = seq
            fresh.append(t)
        if fresh:
            self.latest.advance(fresh)
            self.fanout.publish(fresh)
            self.ticks += len(fresh)
        for gap in events.gaps:
            instrument = str(gap.get("instrument", ""))
            frame = {"type": "gap", "instrument": instrument,
                     **{k: gap[k] for k in _GAP_FIELDS if k in gap}}
            self.fanout.announce(instrument, encode(frame))
            self.gaps += 1

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the feed from now on until cancelled (the store reconnects by itself)."""
        task_status.started()
        async for events in self.store.follow_feed_events():
            try:
                await self.fill(events)
                self.take(events)
            except Exception as exc:  # a bad entry must not stop the feed
                log.error("fanout_feed_failed", error=repr(exc)[:200])

    async def fill(self, events: _Events) -> None:
        """
        Put back, before the read's ticks, any tick the feed skipped: an instrument whose
        ``seq`` jumps was stored without reaching the feed (its writer died between the two
        writes on a Redis Cluster); its stream has the missing ones.
        """
        last = dict(self.last)
        holes: dict[int, tuple[str, int, int]] = {}  # position of the tick after a hole -> the hole
        for pos, t in enumerate(events.ticks):
            prev, seq = last.get(t.instrument), t.seq
            if seq is None or prev is None or seq <= prev:
                continue
            if seq > prev + 1:
                holes[pos] = (t.instrument, prev, seq - 1)
            last[t.instrument] = seq
        if not holes:
            return
        out: list[Tick] = []
        for pos, t in enumerate(events.ticks):
            hole = holes.get(pos)
            if hole is not None:
                instrument, after, upto = hole
                try:
                    found, _complete = await self.store.ticks_after(instrument, after, upto, upto - after)
                except Exception as exc:  # Redis away: the clients see the hole in seq
                    log.warning("fanout_fill_failed", instrument=instrument, error=repr(exc)[:200])
                    found = []
                out += found
                self.filled += len(found)
            out.append(t)
        events.ticks[:] = out

    def status(self) -> dict[str, int]:
        """Counters for ``/status`` ``fleet``."""
        return {"ticks": self.ticks, "duplicates": self.duplicates, "gaps": self.gaps,
                "filled": self.filled, "instruments": len(self.last), "reads": self.reads}
