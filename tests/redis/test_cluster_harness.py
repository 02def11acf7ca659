"""
The Redis Cluster harness (mdgate.testing.redis_cluster): three primaries and three
replicas from redis-server binaries on loopback, the store's key layout in it, and a
primary's failover. What the cluster-mode store and the chaos test build on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster

from mdgate.plugins.stores.redis_store._codec import bars_key, gaps_key, last_key, ticks_key
from mdgate.testing.redis_cluster import RedisClusterNodes, _cli

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path / "cluster")
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def test_an_instruments_keys_share_one_slot_and_instruments_spread_over_the_primaries(
    cluster: RedisClusterNodes,
) -> None:
    port = cluster.nodes[0].port
    for inst in ("NSE:RELIANCE", "NASDAQ:AAPL", "NSE:M&M"):
        slots = {_cli(port, "cluster", "keyslot", k).strip()
                 for k in (ticks_key(inst), last_key(inst), bars_key(inst), gaps_key(inst))}
        assert len(slots) == 1, (inst, slots)
    owners = {cluster.primary_for(ticks_key(f"NSE:S{i}")).port for i in range(50)}
    assert len(owners) == 3  # every primary serves some instruments


def test_a_killed_primary_is_replaced_by_its_replica_and_acknowledged_writes_stay(
    cluster: RedisClusterNodes,
) -> None:
    key = ticks_key("NSE:RELIANCE")

    async def write_and_read(n: int) -> list[str]:
        r = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            for i in range(n):
                await r.xadd(key, {"seq": str(i + 1)})
            acked = await r.execute_command("WAIT", 1, 5000, target_nodes=r.get_node_from_key(key))
            assert acked == 1  # the replica has them
            return [f["seq"] for _, f in await r.xrange(key)]
        finally:
            await r.aclose()

    assert anyio.run(write_and_read, 5) == ["1", "2", "3", "4", "5"]
    primary = cluster.primary_for(key)
    primary.kill()
    t0 = time.monotonic()
    promoted = cluster.wait_failover(key, primary)
    assert promoted is not primary and time.monotonic() - t0 < 20

    async def read() -> list[str]:
        r = RedisCluster.from_url(f"redis://127.0.0.1:{promoted.port}", decode_responses=True)
        try:
            return [f["seq"] for _, f in await r.xrange(key)]
        finally:
            await r.aclose()

    assert anyio.run(read) == ["1", "2", "3", "4", "5"]  # replicated before the kill (WAIT)
