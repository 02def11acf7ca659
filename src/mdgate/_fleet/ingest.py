"""
The ingest role (``mdgate run --role ingest``): hold connection slots, subscribe what the fleet wants.

An ingest instance

* takes leases on upstream connection slots in PostgreSQL
  (:class:`~mdgate._fleet.leases.LeaseKeeper`): slot ``i`` is connection ``i`` of every
  provider credential it connects with, and an instrument's slot is
  :func:`~mdgate._fleet.shards.shard_of` its name;
* follows the demand registry (:class:`~mdgate._fleet.demand.DemandFollower`) and subscribes,
  of everything wanted (plus ``[subscriptions] always``), the instruments of the slots it
  holds, on the connection of their slot (:class:`~mdgate._fleet.slots.SlotGate`);
* stamps the store's writes of those instruments with the slot's fencing token, so that once
  another instance took a slot over, nothing this one still had buffered is written;
* on a takeover (the slot's previous holder died), announces a ``gap`` (reason
  ``failover``) for each instrument of the slot, from its last stored tick to now, before
  it connects.

Losing a slot (lease not renewed in time, or handed over for balance) closes its connections
first; only then may another instance take it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc
import structlog

from mdgate._fleet.shards import shard_of
from mdgate._fleet.slots import SlotGate
from mdgate._model import now_ms
from mdgate._providers.session import ProviderSession

__all__ = ["IngestShards", "credential_of"]

log = structlog.get_logger(__name__)


def credential_of(session: ProviderSession) -> str:
    """
    The credential a provider connects with, as its leases name it: the first 12 hex digits
    of the SHA-256 of its ``client_id`` (never the value itself), else ``default``.
    """
    value = getattr(session.config, "client_id", None)
    reveal = getattr(value, "reveal", None)
    text = str(reveal() if callable(reveal) else value or "")
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "default"


class IngestShards:
    """
    Which instruments this ingest instance subscribes: the wanted ones of the slots it holds.

    Args:
        gate: the slot gate its provider sessions run under.
        acquire, release: the subscription manager's interest counting.
        fence: the store's ``fence`` (instrument -> fencing token), or None.
        latest: reads the stored latest tick of instruments (the start of a takeover's gap).
        gap: announces a gap: ``(instrument, from_ms, to_ms, reason)``.
        always: instruments subscribed whether or not a client wants them.
        raise_fence: writes fencing tokens to the store at once (a slot taken: stale writers
            are refused from then on), or None.
        forget: drops instruments' numbers (the pipeline's ``SeqBook.forget``): a slot's
            instruments are numbered on from the store's last ``seq`` whenever it is taken.
        flush: waits until every tick this instance received is stored (a slot handed over).
    """

    def __init__(
        self, gate: SlotGate, acquire: Callable[[str], bool], release: Callable[[str], None],
        fence: Callable[[Mapping[str, int]], None] | None, latest: Callable[..., Any],
        gap: Callable[[str, int, int, str], None], always: frozenset[str] = frozenset(), *,
        raise_fence: Callable[[Mapping[str, int]], Awaitable[None]] | None = None,
        forget: Callable[[Iterable[str]], None] | None = None,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.gate = gate
        self._acquire, self._release, self._fence = acquire, release, fence
        self._latest, self._gap = latest, gap
        self._raise_fence, self._forget, self._flush = raise_fence, forget, flush
        self.always = always
        self.demand: frozenset[str] = frozenset()
        #: slot -> fencing token of the lease held.
        self.tokens: dict[int, int] = {}
        #: The instruments subscribed now.
        self.owned: set[str] = set()
        self.takeovers = 0

    def on_demand(self, wanted: frozenset[str]) -> None:
        """The fleet's demand changed (the registry's union over live fan-out instances)."""
        self.demand = wanted
        self.sync()

    def sync(self) -> None:
        """Subscribe the wanted instruments of held slots; release the rest."""
        held, n = self.gate.held, self.gate.slots
        want = {i for i in self.demand | self.always if shard_of(i, n) in held}
        if self._fence is not None:
            self._fence({i: self.tokens[shard_of(i, n)] for i in want if shard_of(i, n) in self.tokens})
        for inst in sorted(want - self.owned):
            self._acquire(inst)
        for inst in sorted(self.owned - want):
            self._release(inst)
        self.owned = want

    def _of(self, slot: int) -> list[str]:
        return sorted(i for i in self.demand | self.always if shard_of(i, self.gate.slots) == slot)

    async def gain(self, slot: int, token: int, taken_over: bool) -> None:
        """
        A slot's lease was taken: fence its instruments in the store, forget their numbers,
        announce a takeover's gaps, then connect and subscribe.
        """
        self.tokens[slot] = token
        names = self._of(slot)
        if self._forget is not None:
            self._forget(names)
        if self._raise_fence is not None and names:
            try:
                await self._raise_fence(dict.fromkeys(names, token))
            except Exception as exc:  # Redis down: the first write of each instrument fences it
                log.warning("fence_raise_failed", slot=slot, error=repr(exc)[:200])
        if taken_over:
            self.takeovers += 1
            try:
                last = await self._latest(names) if names else {}
            except Exception as exc:  # Redis down: the gap starts at the takeover
                log.warning("takeover_latest_failed", error=repr(exc)[:200])
                last = {}
            now = now_ms()
            for inst in names:
                tick = last.get(inst)
                self._gap(inst, tick.ts if tick is not None else now, now, "failover")
            log.info("slot_taken_over", slot=slot, token=token, instruments=len(names))
        self.gate.grant(slot)
        self.sync()

    async def lose(self, slot: int) -> None:
        """
        A slot's lease is lost or handed over: close its connections, store what they
        delivered, unsubscribe its instruments and forget their numbers (the next holder
        numbers on from the store).
        """
        await self.gate.revoke(slot)
        if self._flush is not None:
            try:
                await self._flush()
            except Exception as exc:  # the store is down: a fence refuses what comes too late
                log.warning("slot_flush_failed", slot=slot, error=repr(exc)[:200])
        names = self._of(slot)
        self.tokens.pop(slot, None)
        self.sync()
        if self._forget is not None:
            self._forget(names)
        log.info("slot_released", slot=slot)

    def status(self) -> dict[str, Any]:
        """Slots, tokens and instruments for ``/status`` ``fleet``."""
        return {**self.gate.status(), "tokens": {str(k): v for k, v in sorted(self.tokens.items())},
                "instruments": len(self.owned), "demand": len(self.demand), "takeovers": self.takeovers}


async def run_ingest(shards: IngestShards, keeper: Any, follower: Any,
                     *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the lease keeper and the demand follower until cancelled."""
    async with anyio.create_task_group() as tg:
        await tg.start(follower.run)
        await tg.start(keeper.run)
        task_status.started()
