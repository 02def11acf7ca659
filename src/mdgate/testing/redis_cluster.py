"""
A throw-away Redis Cluster on loopback for tests and benchmarks.

:class:`RedisClusterNodes` starts ``primaries * (1 + replicas)`` ``redis-server``
processes with ``--cluster-enabled yes`` (each a :class:`~mdgate.testing.redis.RedisServer`
with its own directory and ``nodes.conf``), joins them with ``redis-cli --cluster
create``, and waits until every node says ``cluster_state:ok``. A test can then
kill a primary (``SIGKILL``) and wait for its replica to take over
(:meth:`RedisClusterNodes.wait_failover`). Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from mdgate.testing.redis import RedisServer, free_port

__all__ = ["REDIS_CLI", "RedisClusterNodes"]

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    """Run one ``redis-cli`` command against 127.0.0.1:``port``; return its output."""
    done = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


class RedisClusterNodes:
    """
    A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each.

    Args:
        directory: where each node keeps its files (one subdirectory per node).
        primaries: primaries (at least 3, as Redis requires).
        replicas: replicas per primary.
        node_timeout_ms: ``cluster-node-timeout``: how long a silent primary
            is waited for before its replica is promoted.
    """

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.replicas = replicas
        self.nodes = [
            RedisServer(directory / f"node{i}", port=_cluster_port(), extra=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
            ])
            for i in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The URL of one node (``redis://127.0.0.1:PORT``): a cluster client finds the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def running(self) -> list[RedisServer]:
        """The nodes whose process runs."""
        return [n for n in self.nodes if n.proc is not None]

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, create the cluster, wait until it is ``ok`` everywhere."""
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            why = f"{done.stdout[-500:]} {done.stderr[-500:]}"
            raise RuntimeError(f"redis-cli --cluster create failed: {why}")
        self.wait_ok(timeout)

    def state(self, node: RedisServer) -> dict[str, str]:
        """``CLUSTER INFO`` of ``node`` as a dict (empty when it does not answer)."""
        out: dict[str, str] = {}
        for line in _cli(node.port, "cluster", "info").splitlines():
            key, sep, value = line.strip().partition(":")
            if sep:
                out[key] = value
        return out

    def wait_ok(self, timeout: float = 30.0) -> None:
        """
        Wait until every running node says ``cluster_state:ok`` and knows all
        slots, and every running replica is in sync with its primary (a replica
        that never synced cannot take over).
        """
        deadline = time.monotonic() + timeout
        while True:
            infos = [self.state(n) for n in self.running()]
            if infos and all(i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                             for i in infos) and all(self._synced(n) for n in self.running()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok after {timeout:g} s: {infos}")
            time.sleep(0.1)

    @staticmethod
    def _synced(node: RedisServer) -> bool:
        info = _cli(node.port, "info", "replication")
        return "role:master" in info or "master_link_status:up" in info

    def primary_for(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot now (as the first running node sees it)."""
        ask = self.running()[0].port
        slot = int(_cli(ask, "cluster", "keyslot", key).strip())
        for line in _cli(ask, "cluster", "nodes").splitlines():
            parts = line.split()
            if len(parts) < 9 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            for span in parts[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no primary serves the slot of {key!r}")

    def wait_failover(self, key: str, dead: RedisServer, timeout: float = 30.0) -> RedisServer:
        """
        After ``dead`` (the primary of ``key``) was killed: wait until a replica
        serves ``key``'s slot and the cluster is ``ok`` again; return that node.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.wait_ok(timeout=0.5)
                node = self.primary_for(key)
                if node is not dead and node.proc is not None:
                    return node
            except (RuntimeError, ValueError, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover of 127.0.0.1:{dead.port} within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
