"""
The batch writer's Redis Cluster path (:class:`ClusterIO`), used once the server said ``cluster_enabled:1``.

Per batch (see docs/scaling.md):

1. the ticks and bars are split by hash slot (an instrument's keys share one slot,
   ``mdgate:{I}:...``), one ``WRITE_BATCH`` (feed off; the fenced variant when an
   instrument of the slot is fenced) per slot;
2. the calls are grouped by the node serving their slot; each node gets its calls and
   then ``WAIT 1 1000`` in one pipeline on one connection (redis-py's ``ClusterPipeline``
   sends a node's commands in order on one connection), the nodes concurrently;
3. then the feed: per partition ``mdgate:feed:{N}`` one ``FEED_ADD`` with the partition's
   ticks (not those of refused, fenced instruments), again followed by ``WAIT`` per node.

A slot call or partition counts as done only once its node's ``WAIT`` says a replica has it
(or the slot map shows the node has no replica); what is not done is re-sent on the next
attempt, after a topology refresh. The scripts skip what is already stored (explicit stream
IDs; the feed by each instrument's last appended ID), so a re-sent call stores nothing twice.
The client never retries or follows a redirection by itself: a command must run on the
connection its ``WAIT`` runs on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import msgspec
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from mdgate.plugins.stores.redis_store._codec import (
    SlotCall,
    feed_key,
    feed_seqs_key,
    gaps_key,
    shard_of,
    ticks_key,
)
from mdgate.plugins.stores.redis_store._lua import (
    FEED_ADD,
    FEED_ADD_SHA,
    LAST_IDS,
    WRITE_BATCH,
    WRITE_BATCH_FENCED,
)
from mdgate.plugins.stores.redis_store._url import RedisUrl

if TYPE_CHECKING:
    from mdgate._config import RedisSettings
    from mdgate._model import Bar, Tick
    from mdgate.plugins.stores.redis_store._codec import BatchPacker


class BatchWriter(Protocol):
    """What the cluster path uses of its :class:`~mdgate.plugins.stores.redis_store._writer.BatchWriter`."""

    buf: deque[Tick]
    bars: deque[Bar]
    gaps: deque[tuple[str, tuple[str, ...]]]
    settings: RedisSettings
    packer: BatchPacker
    gap_stage: int
    gaps_maxlen: int

    def gap_written(self) -> None: ...
    def count_reply(self, reply: Any) -> None: ...
    def acknowledged_cluster(self, batch: ClusterBatch) -> None: ...

__all__ = ["WAIT_MS", "ClusterBatch", "ClusterIO", "NotReplicated"]

log = structlog.get_logger("mdgate.plugins.stores.redis_store")

#: Milliseconds a node's ``WAIT`` gives a replica to acknowledge the node's writes.
WAIT_MS: Final = 1000
#: Seconds between two ``redis_write_unreplicated`` log lines.
UNREPLICATED_LOG_INTERVAL: Final = 10.0

_encode: Final = msgspec.json.Encoder().encode


class NotReplicated(RedisError):
    """A node's ``WAIT`` saw no replica acknowledge its writes in time (the calls are re-sent)."""


@dataclass(slots=True)
class ClusterBatch:
    """A batch split by slot and feed partition; re-sent (what is not done yet) until done."""

    calls: list[SlotCall]
    #: partition -> ``(instrument, record)`` of each tick for ``FEED_ADD``.
    feed: dict[int, list[tuple[str, tuple[object, ...]]]]
    ticks: int
    bars: int
    sent_at: float
    feed_done: set[int] = field(default_factory=set)


class ClusterIO:
    """
    The cluster connections of a :class:`~mdgate.plugins.stores.redis_store._writer.BatchWriter`.

    Args:
        url: the store's URL (any node of the cluster).
        partitions: feed partitions (``[redis] feed_partitions``).
        feed_maxlen: ``MAXLEN ~`` of each partition (0: no feed).
        io_timeout: seconds one round trip may take.
    """

    def __init__(self, url: RedisUrl, partitions: int, feed_maxlen: int, io_timeout: float) -> None:
        self._url = url
        self._partitions = partitions
        self._feed_maxlen = feed_maxlen
        self._io_timeout = io_timeout
        self.client = RedisCluster.from_url(
            url.url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=io_timeout,
            socket_connect_timeout=5.0,
        )
        self._slots: dict[str, int] = {}
        #: Batches taken from the buffer and not done yet (one at a time).
        self.pending: deque[ClusterBatch] = deque()
        self._loaded = False
        self._refresh = False
        self._unreplicated_logged = 0.0
        #: node name -> replicas connected at its last ``ROLE`` (sent after each node's writes).
        self._replicas: dict[str, int] = {}

    def buffered(self) -> int:
        """Ticks taken into batches and not done yet."""
        return sum(b.ticks for b in self.pending)

    # ------------------------------------------------------------------ flush

    async def flush(self, w: BatchWriter) -> None:
        """Write what ``w`` buffered, batch by batch (called under the writer's lock)."""
        await self._prepare()
        partial, full = True, w.settings.batch_max
        while self.pending or len(w.buf) >= full or (partial and (w.buf or w.bars)):
            partial = False
            if not self.pending:
                await self._seed(w)
                ticks = [w.buf.popleft() for _ in range(min(len(w.buf), full))]
                bars = list(w.bars)
                w.bars.clear()
                calls, feed = w.packer.pack_slots(ticks, bars, self._slot_map(ticks, bars), self._partitions)
                self.pending.append(ClusterBatch(calls, feed, len(ticks), len(bars), time.monotonic()))
            batch = self.pending[0]
            await self._write(w, batch)
            self.pending.popleft()
            w.acknowledged_cluster(batch)
        await self._write_gaps(w)

    async def _prepare(self) -> None:
        client = self.client
        if self._refresh:
            await client.nodes_manager.initialize()
            self._refresh = False
        else:
            await client.initialize()
        if not self._loaded:
            for script in (WRITE_BATCH, WRITE_BATCH_FENCED, FEED_ADD):
                await client.execute_command("SCRIPT", "LOAD", script, target_nodes=RedisCluster.PRIMARIES)
            self._loaded = True

    def _slot_map(self, ticks: Sequence[Any], bars: Sequence[Any]) -> dict[str, int]:
        slots = self._slots
        for x in (*ticks, *bars):
            if x.instrument not in slots:
                slots[x.instrument] = self.client.keyslot(ticks_key(x.instrument))
        return slots

    async def _seed(self, w: BatchWriter) -> None:
        """
        Seed the ID counters of the next batch's new instruments (``LAST_IDS`` per slot), until
        none is left: ticks that arrived during a round trip may bring more. The caller takes
        the batch with no await after this returns, so every instrument of it is seeded (an
        unseeded one would count from 0 and its ticks would be skipped as duplicates).
        """
        while new := w.packer.unknown(t.instrument for t in islice(w.buf, w.settings.batch_max)):
            await self._seed_some(w, new)

    async def _seed_some(self, w: BatchWriter, new: list[str]) -> None:
        by_slot: dict[int, list[str]] = {}
        slots = self._slot_map([], [])
        for inst in new:
            if inst not in slots:
                slots[inst] = self.client.keyslot(ticks_key(inst))
            by_slot.setdefault(slots[inst], []).append(inst)
        pipe = self.client.pipeline(transaction=False)
        for insts in by_slot.values():
            pipe.execute_command("EVAL", LAST_IDS, len(insts), *(ticks_key(i) for i in insts))
        with anyio.fail_after(self._io_timeout):
            replies = await pipe.execute()
        for insts, ids in zip(by_slot.values(), replies, strict=True):
            for inst, last in zip(insts, ids, strict=True):
                w.packer.seed(inst, last)

    async def _write(self, w: BatchWriter, batch: ClusterBatch) -> None:
        """Phase 1 (slot calls), then phase 2 (feed); raise the first failure (the rest stays)."""
        todo = [c for c in batch.calls if c.reply is None]
        if todo:
            results = await self._run([(c.slot, c.args) for c in todo])
            error: BaseException | None = None
            for call, res in zip(todo, results, strict=True):
                if isinstance(res, BaseException):
                    error = error or res
                    continue
                call.reply = res
                call.refused = {call.groups[int(g) - 1] for g in res[5]} if len(res) > 5 else set()
                w.count_reply(res)
            if error is not None:
                self._failed(error)
                raise error
        if self._feed_maxlen <= 0:
            return
        refused = {i for c in batch.calls for i in c.refused}
        cmds: list[tuple[int, int, tuple[object, ...]]] = []
        for p, recs in batch.feed.items():
            if p in batch.feed_done:
                continue
            keep = [r for inst, r in recs if inst not in refused]
            if not keep:
                batch.feed_done.add(p)
                continue
            key = feed_key(p)
            cmd = ("EVALSHA", FEED_ADD_SHA, 2, key, feed_seqs_key(p), self._feed_maxlen, _encode(keep))
            cmds.append((p, self.client.keyslot(key), cmd))
        if not cmds:
            return
        results = await self._run([(slot, cmd) for _, slot, cmd in cmds])
        error = None
        for (p, _, _), res in zip(cmds, results, strict=True):
            if isinstance(res, BaseException):
                error = error or res
            else:
                batch.feed_done.add(p)
        if error is not None:
            self._failed(error)
            raise error

    def _failed(self, error: BaseException) -> None:
        self._refresh = True  # the slot map may be stale: refresh it before the next attempt
        if isinstance(error, NoScriptError):
            self._loaded = False  # a promoted replica without our scripts

    async def _run(self, calls: list[tuple[int, tuple[object, ...]]]) -> list[Any]:
        """
        Run each call on the node serving its slot, then ``WAIT`` on that node's connection;
        return per call its reply, or the error that leaves it not done.
        """
        nm = self.client.nodes_manager
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for k, (slot, _) in enumerate(calls):
            node = nm.get_node_from_slot(slot)
            by_node.setdefault(node.name, (node, []))[1].append(k)
        out: list[Any] = [None] * len(calls)

        async def one(node: ClusterNode, ks: list[int]) -> None:
            # WAIT where the node had a replica connected at its last ROLE, and on a node not
            # asked yet (redis-py's slot map does not list replicas reliably: a first batch
            # must not go unreplicated because of it); a node without a replica (a promoted
            # replica whose primary is gone) is written unreplicated once its ROLE says so, logged
            replicas = self._replicas.get(node.name)
            wait = replicas is None or replicas > 0
            try:
                pipe = self.client.pipeline(transaction=False)
                for k in ks:
                    pipe.execute_command(*calls[k][1], target_nodes=node)  # type: ignore[arg-type]
                if wait:
                    pipe.execute_command("WAIT", 1, WAIT_MS, target_nodes=node)
                pipe.execute_command("ROLE", target_nodes=node)
                with anyio.fail_after(self._io_timeout + WAIT_MS / 1000):
                    res = await pipe.execute(raise_on_error=False, allow_redirections=False)
                self._note_role(node, res.pop())
                if wait:
                    acked = res.pop()
                    if isinstance(acked, BaseException):
                        raise acked
                    if int(acked) < 1:
                        raise NotReplicated(f"WAIT: no replica of {node.name} answered in {WAIT_MS} ms")
                else:
                    self._log_unreplicated(node)
                for k, r in zip(ks, res, strict=True):
                    out[k] = r
            except Exception as exc:  # this node's calls stay not done; the others go on
                for k in ks:
                    out[k] = exc

        async with anyio.create_task_group() as tg:
            for node, ks in by_node.values():
                tg.start_soon(one, node, ks)
        return out

    def _note_role(self, node: ClusterNode, role: Any) -> None:
        """Keep how many replicas ``node`` has connected (``ROLE`` of a primary lists them)."""
        if isinstance(role, list) and len(role) > 2 and role[0] in (b"master", "master"):
            self._replicas[node.name] = len(role[2])
        else:
            self._replicas.pop(node.name, None)

    def _log_unreplicated(self, node: ClusterNode) -> None:
        now = time.monotonic()
        if now - self._unreplicated_logged >= UNREPLICATED_LOG_INTERVAL:
            self._unreplicated_logged = now
            log.warning("redis_write_unreplicated", node=node.name, reason="the node has no replica")

    async def _write_gaps(self, w: BatchWriter) -> None:
        """The queued gaps: into each ``:gaps`` stream, then (feed on) the instrument's partition."""
        client = self.client
        while w.gaps:
            instrument, flat = w.gaps[0]
            if not w.gap_stage:
                await client.execute_command(
                    "XADD", gaps_key(instrument), "MAXLEN", "~", w.gaps_maxlen, "*", *flat
                )
                w.gap_stage = 1
            if self._feed_maxlen > 0:
                key = feed_key(shard_of(instrument, self._partitions))
                await client.execute_command(
                    "XADD", key, "MAXLEN", "~", self._feed_maxlen, "*",
                    "type", "gap", "instrument", instrument, *flat,
                )
            w.gap_written()

    async def ping(self) -> None:
        """Check that the cluster answers."""
        await self.client.initialize()
        with anyio.fail_after(self._io_timeout):
            await self.client.ping()

    async def aclose(self) -> None:
        """Close every node connection."""
        await self.client.aclose()
