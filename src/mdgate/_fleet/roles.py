"""
Builds a role's parts for the gateway (``mdgate run --role ingest|fanout|all``).

``all`` (the default) is one gateway doing everything, as always: no part is built here.
``ingest`` and ``fanout`` need Redis (the tiers meet there) and PostgreSQL (leases and the
demand registry); a missing one is a configuration error naming the key.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from mdgate._config import Settings
from mdgate._errors import ConfigError
from mdgate._fleet.fanout import FeedFollower
from mdgate._fleet.ingest import IngestShards, credential_of, run_ingest
from mdgate._fleet.slots import SlotGate
from mdgate._latest import LatestTicks
from mdgate._providers.session import ProviderSession
from mdgate._queue import TickQueue
from mdgate._seq import SeqBook
from mdgate._serve.fanout import Fanout

__all__ = ["ROLES", "FleetRole", "check_role", "fanout_role", "ingest_role", "instance_name"]

#: The roles ``mdgate run --role`` accepts.
ROLES = ("all", "ingest", "fanout")


@dataclass
class FleetRole:
    """What a role adds to the gateway."""

    role: str
    instance: str
    #: Runs the role's background work until cancelled (``task_status.started()`` once running).
    run: Callable[..., Any]
    #: The ``/status`` ``fleet`` section.
    status: Callable[[], dict[str, Any]]
    #: Fan-out: the clients' interest goes to the demand registry.
    interest: Any = None
    #: Fan-out: the last seq published per instrument (resumes read up to it).
    last_seq: Callable[[str], int | None] | None = None
    #: Ingest: release the leases (at shutdown, once the store is flushed).
    close: Callable[[], Awaitable[None]] | None = None
    #: Applies reloaded settings (SIGHUP): ingest follows a new ``[subscriptions] always``.
    apply: Callable[[Settings], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def instance_name(settings: Settings) -> str:
    """``[fleet] instance``, else host name and process id."""
    return settings.fleet.instance or f"{socket.gethostname()}:{os.getpid()}"


def check_role(role: str, settings: Settings) -> None:
    """Raise :class:`ConfigError` when ``role`` cannot run with ``settings``."""
    if role not in ROLES:
        raise ConfigError("--role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    if role == "all":
        return
    if settings.redis.url is None:
        raise ConfigError("redis.url", f"--role {role} needs Redis: the tiers meet in its streams")
    if settings.database.url is None:
        raise ConfigError("database.url", f"--role {role} needs PostgreSQL (leases, demand registry)")
    if role == "fanout" and settings.redis.feed_maxlen < 1:
        raise ConfigError("redis.feed_maxlen", "--role fanout follows the shared feed: it must be at least 1")


def _dsn(settings: Settings) -> str:
    assert settings.database.url is not None
    return settings.database.url.reveal()


class RoutedDemand:
    """
    A fan-out instance's client interest: an instrument with no route is refused (``no_route``,
    as on a single gateway); any other goes to the demand registry.
    """

    def __init__(self, resolve: Callable[[str], object], demand: Any) -> None:
        self._resolve, self.demand = resolve, demand

    def acquire(self, instrument: str) -> bool:
        """Check the route (raises NoRouteError), then add one client's interest."""
        self._resolve(instrument)
        return bool(self.demand.acquire(instrument))

    def release(self, instrument: str) -> None:
        """Drop one client's interest (the registry lingers it)."""
        self.demand.release(instrument)


def fanout_role(settings: Settings, store: Any, latest: LatestTicks, fanout: Fanout,
                resolve: Callable[[str], object]) -> FleetRole:
    """The fan-out role: follow the feed, publish demand (of routed instruments)."""
    from mdgate._fleet.demand import DemandPublisher

    name = instance_name(settings)
    follower = FeedFollower(store, latest, fanout)
    demand = DemandPublisher(_dsn(settings), name, settings.subscriptions.linger)

    async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(demand.run)
            await tg.start(follower.run)
            task_status.started()

    def status() -> dict[str, Any]:
        return {"role": "fanout", "instance": name, "feed": follower.status(), "demand": demand.status()}

    return FleetRole("fanout", name, run, status, interest=RoutedDemand(resolve, demand),
                     last_seq=follower.last_seq,
                     extra={"follower": follower, "demand": demand})


#: Seconds a slot hand-over waits for its ticks to be stored before the lease goes anyway.
FLUSH_TIMEOUT = 5.0


def _forget(seqs: SeqBook, store_forget: Callable[[Iterable[str]], None] | None,
            names: Iterable[str]) -> None:
    """Forget instruments' numbers and stream IDs: taken up again from the store (a slot moved)."""
    names = list(names)
    seqs.forget(names)
    if callable(store_forget):
        store_forget(names)


def ingest_role(
    settings: Settings, sessions: Mapping[str, ProviderSession], subs: Any, store: Any,
    gap: Callable[[str, int, int, str], None], queue: TickQueue, seqs: SeqBook,
) -> FleetRole:
    """The ingest role: lease slots, follow demand, gate the provider connections."""
    from mdgate._fleet.demand import DemandFollower
    from mdgate._fleet.leases import LeaseKeeper

    name = instance_name(settings)
    fleet = settings.fleet
    gate = SlotGate(fleet.slots)
    for session in sessions.values():
        session.gate = gate
    fence, raise_fence = getattr(store, "fence", None), getattr(store, "raise_fence", None)
    settled = getattr(store, "settled", None)

    async def flush() -> None:
        """Wait (bounded) until the pipeline took every queued tick and the store acknowledged them."""
        with anyio.move_on_after(FLUSH_TIMEOUT):
            while len(queue):  # once taken, a batch reaches the store before the pipeline awaits again
                await anyio.sleep(0.005)
            if callable(settled):
                await settled(FLUSH_TIMEOUT)

    shards = IngestShards(gate, subs.acquire, subs.release, fence if callable(fence) else None,
                          store.latest, gap, frozenset(settings.subscriptions.always),
                          raise_fence=raise_fence if callable(raise_fence) else None,
                          forget=functools.partial(_forget, seqs, getattr(store, "forget", None)),
                          flush=flush)
    units = sorted({(n, credential_of(s)) for n, s in sessions.items() if s.disabled_reason is None})
    keeper = LeaseKeeper(_dsn(settings), name, units, fleet.slots, fleet.lease_ttl,
                         on_gain=shards.gain, on_lose=shards.lose)
    follower = DemandFollower(_dsn(settings), shards.on_demand)

    async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await run_ingest(shards, keeper, follower, task_status=task_status)

    def status() -> dict[str, Any]:
        return {"role": "ingest", "instance": name, **shards.status(), "leases": keeper.status()}

    def apply(new: Settings) -> None:
        shards.always = frozenset(new.subscriptions.always)
        shards.sync()

    return FleetRole("ingest", name, run, status, close=keeper.aclose, apply=apply,
                     extra={"keeper": keeper, "shards": shards})
