"""
Fleet chaos on loopback: two ingest and two fan-out instances on a Redis Cluster.

Starts a real Redis Cluster (three primaries, three replicas, ``redis-server
--cluster-enabled`` created with ``redis-cli --cluster create``), a throw-away
PostgreSQL (``mdgate db upgrade`` / ``db seed`` / ``instruments import`` as an operator
would), a fake Dhan feed that counts concurrent sessions per credential and streams
numbered quotes, two ``mdgate run --role ingest`` and two ``mdgate run --role fanout``
processes (the real executable), and clients on both fan-out instances that resume
with ``since`` on the other instance when theirs goes away. Then, in turn:

1. kill -9 the ingest instance holding slot 0: its connection slots must move to the
   other within the lease time (plus one poll), the fake must never see more sessions on
   the credential than there are slots, and every client must get a ``gap`` for the
   instruments of the moved slot and then ticks again;
2. kill -9 the Redis primary serving an instrument: its replica takes over and ticks flow
   again; no tick a client received (every one was acknowledged by the store before it
   reached the feed) is missing from Redis;
3. stop one fan-out instance: its clients reconnect to the other with ``since``, are
   answered ``recovered: true`` and miss nothing.

Checked at the end: per client and instrument, every seq once and none skipped; per
instrument stream in Redis, seqs strictly increasing. Prints a report; ``--json PATH``
writes it; exit status 0 when every check passed. Every process is stopped by its PID.

    python benchmarks/fleet_chaos.py                       # the longer run
    python benchmarks/fleet_chaos.py --lease-ttl 3 --phase 4 --json out.json   # CI-sized
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chaos_procs import MDGATE, GatewayProcess, gateway_env, http_get, status
from _fleet_clients import FleetClient, run_clients, stop_clients

from mdgate._fleet.shards import shard_of
from mdgate.testing.postgres import free_port, init_pristine, new_server
from mdgate.testing.redis import RedisServer
from mdgate.testing.redis_cluster import RedisClusterNodes
from mdgate_dhan.testing import FakeDhanServer

INSTRUMENTS = {f"NSE:FC{i:02d}": f"NSE_EQ:{400000 + i}" for i in range(1, 9)}
SLOTS = 2


def fleet_env(client_id: str, token: str) -> dict[str, str]:
    """The instances' environment: the Dhan credentials, the Dhan plugin only."""
    return {**gateway_env(client_id, token), "MDGATE_LOAD_PLUGINS": "dhan"}


def config(*, port: int, redis_url: str, dsn: str, dhan_url: str, token: str, instance: str,
           lease_ttl: float) -> str:
    return "\n".join([
        "[server]", 'host = "127.0.0.1"', f"port = {port}", f"tokens = [{json.dumps(token)}]", "",
        "[redis]", f'url = "{redis_url}"', "", "[database]", f'url = "{dsn}"', "",
        "[fleet]", f'instance = "{instance}"', f"slots = {SLOTS}", f"lease_ttl = {lease_ttl}", "",
        "[runtime]", "backoff_initial = 0.05", "backoff_max = 0.5", "stall_timeout = 5.0",
        "failover_after = 30.0", "shutdown_timeout = 5.0", "",
        "[subscriptions]", "linger = 2.0", "",
        "[providers.dhan]", f'url = "{dhan_url}"', "",
        "[logging]", 'level = "info"', 'format = "json"', "",
        "[backfill]", "enabled = false", "",
        "[calendars.NSE]", "always_open = true", "",
    ])


class FleetChaos:
    def __init__(self, opts: argparse.Namespace, tmp: Path) -> None:
        self.o, self.tmp = opts, tmp
        self.token = secrets.token_hex(8)
        self.dhan_secret = ("7" + str(secrets.randbelow(10**9)).zfill(9), "dhan-" + secrets.token_hex(12))
        self.procs: dict[str, GatewayProcess] = {}
        self.ports: dict[str, int] = {}
        self.report: dict[str, Any] = {"checks": {}, "timings": {}}
        self.holders: list[tuple[float, dict[str, list[int]]]] = []
        #: Quotes sent by the fake feed.
        self.sent = 0
        #: Peak sessions per credential before the pause phase (a paused process keeps its socket).
        self.peak_sessions: dict[str, int] = {}

    def check(self, name: str, ok: bool, detail: Any) -> None:
        self.report["checks"][name] = {"ok": bool(ok), "detail": detail}
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def cli(self, cfg: Path, *args: str) -> None:
        done = subprocess.run([MDGATE, "--config", str(cfg), *args], capture_output=True, text=True,
                              env=fleet_env(*self.dhan_secret), timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mdgate {' '.join(args)} failed: {done.stdout[-800:]} {done.stderr[-800:]}")

    async def run(self) -> dict[str, Any]:
        cluster: Any = (RedisClusterNodes(self.tmp / "redis") if self.o.redis == "cluster"
                        else RedisServer(self.tmp / "redis"))
        pristine = init_pristine()
        pg = new_server(pristine)
        client_id, dhan_token = self.dhan_secret
        dhan = FakeDhanServer(token=dhan_token, client_id=client_id)
        try:
            t0 = time.monotonic()
            cluster.start()
            dsn = pg.create_database()
            await dhan.start()
            self.report["timings"]["infrastructure_s"] = round(time.monotonic() - t0, 2)
            return await self._with(cluster, dsn, dhan)
        finally:
            for p in self.procs.values():
                p.stop(10)
            await dhan.stop()
            cluster.stop()
            pg.stop()
            pg.remove()
            pristine.remove()

    async def _with(self, cluster: Any, dsn: str, dhan: FakeDhanServer) -> dict[str, Any]:
        o = self.o
        for name in ("ingest-1", "ingest-2", "fanout-1", "fanout-2"):
            self.ports[name] = free_port()
            cfg = config(port=self.ports[name], redis_url=cluster.url, dsn=dsn, dhan_url=dhan.url,
                         token=self.token, instance=name, lease_ttl=o.lease_ttl)
            role = name.split("-")[0]
            self.procs[name] = GatewayProcess(cfg, self.tmp, fleet_env(*self.dhan_secret), name=name,
                                              args=("--role", role))
        first = self.procs["ingest-1"].path
        self.cli(first, "db", "upgrade")
        self.cli(first, "db", "seed")
        csv = self.tmp / "instruments.csv"
        csv.write_text("instrument,code\n" + "".join(f"{i},{c}\n" for i, c in INSTRUMENTS.items()))
        self.cli(first, "instruments", "import", "--csv", str(csv), "--provider", "dhan")
        for p in self.procs.values():
            p.start()
        for name in self.procs:
            await self._wait_healthy(name)
        feeder = asyncio.create_task(self._feed(dhan))
        sampler = asyncio.create_task(self._sample())
        f1, f2 = (f"ws://127.0.0.1:{self.ports[n]}/ws" for n in ("fanout-1", "fanout-2"))
        clients = [FleetClient(f"c{i}", [f1, f2] if i % 2 == 0 else [f2, f1], list(INSTRUMENTS), self.token)
                   for i in range(o.clients)]
        tasks = await run_clients(clients)
        try:
            await self._until(lambda: all(set(c.seqs) == set(INSTRUMENTS) for c in clients), 30,
                              "every client receives ticks of every instrument")
            await asyncio.sleep(o.phase)
            await self._kill_ingest(clients, dhan)
            await asyncio.sleep(o.phase)
            if o.redis == "cluster":
                await self._kill_redis_primary(cluster, clients)
                await asyncio.sleep(o.phase)
            await self._stop_fanout(clients)
            await asyncio.sleep(o.phase)
            self.peak_sessions = dict(dhan.peak_by_credential)  # before the pause: see _pause_ingest
            await self._pause_ingest()
            await asyncio.sleep(o.phase)
        finally:
            feeder.cancel()
            await asyncio.sleep(1.5)  # what is in flight reaches the clients
            await stop_clients(tasks)
            sampler.cancel()
            self.report["stores"] = {}
            for name in ("ingest-1", "ingest-2"):
                try:
                    doc = (await status(self.ports[name], self.token)).get("store", {})
                    self.report["stores"][name] = {k: doc.get(k) for k in ("written", "duplicates", "fenced")}
                except Exception as exc:
                    self.report["stores"][name] = repr(exc)
        self._verify(cluster, clients, dhan)
        return self.report

    async def _wait_healthy(self, name: str) -> None:
        async def ok() -> bool:
            try:
                doc = await status(self.ports[name], self.token)
            except Exception:
                return False
            return bool(doc)
        await self._until_async(ok, 30, f"{name} answers /status")

    async def _until(self, pred: Any, timeout: float, what: str) -> float:
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"timed out ({timeout:g} s) waiting until {what}")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    async def _until_async(self, pred: Any, timeout: float, what: str) -> float:
        t0 = time.monotonic()
        while not await pred():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"timed out ({timeout:g} s) waiting until {what}")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    async def _feed(self, dhan: FakeDhanServer) -> None:
        """Quotes round-robin over every instrument, paced at ``--rate`` (to the connections holding each)."""
        codes = list(INSTRUMENTS.values())
        t0, n = time.monotonic(), 0
        while True:
            code = codes[n % len(codes)]
            n += 1
            if dhan.holders(code):  # subscribed somewhere now
                await dhan.send_quote(code, 100.0 + n % 100 / 100, volume=n)
                self.sent += 1
            ahead = t0 + n / self.o.rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def _held(self) -> dict[str, list[int]]:
        """Slots each live ingest instance holds (asked at once; a stopped one does not answer)."""
        async def one(name: str) -> tuple[str, list[int] | None]:
            if self.procs[name].exited() is not None:
                return name, None
            try:
                code, body = await http_get(self.ports[name], "/status", self.token, timeout=1.0)
                return name, list(json.loads(body).get("fleet", {}).get("held", [])) if code == 200 else None
            except Exception:
                return name, None

        answers = await asyncio.gather(one("ingest-1"), one("ingest-2"))
        return {name: held for name, held in answers if held is not None}

    async def _sample(self) -> None:
        while True:
            self.holders.append((time.monotonic(), await self._held()))
            await asyncio.sleep(0.1)

    async def _kill_ingest(self, clients: list[FleetClient], dhan: FakeDhanServer) -> None:
        held = await self._held()
        victim = next((n for n, slots in held.items() if 0 in slots), None)
        if victim is None:
            raise RuntimeError(f"no ingest instance holds slot 0: {held}")
        survivor = "ingest-2" if victim == "ingest-1" else "ingest-1"
        moved = sorted(held[victim])
        self.procs[victim].proc.kill()  # type: ignore[union-attr]
        t_kill = time.monotonic()
        self.procs[victim].proc.wait(10)  # type: ignore[union-attr]

        async def all_moved() -> bool:
            return set(moved) <= set((await self._held()).get(survivor, []))

        took = await self._until_async(all_moved, self.o.lease_ttl * 3 + 10, "the slots move")
        self.report["timings"]["slot_move_s"] = round(took, 2)
        self.check("slots_move_within_lease_ttl", took <= self.o.lease_ttl + 1.5,
                   f"slots {moved} of {victim} held by {survivor} {took:.2f} s after kill -9 "
                   f"(lease_ttl {self.o.lease_ttl:g} s)")
        names = [i for i in INSTRUMENTS if shard_of(i, SLOTS) in moved]

        def gap_then_ticks() -> bool:
            for c in clients:
                for inst in names:
                    gap_at = [t for t, g in c.gaps if g["instrument"] == inst and t > t_kill]
                    if not gap_at or not any(t > gap_at[0] for t in c.times.get(inst, [])):
                        return False
            return True

        try:
            await self._until(gap_then_ticks, self.o.lease_ttl * 3 + 15, "gap then ticks")
            after = time.monotonic() - t_kill
            self.report["timings"]["gap_then_ticks_s"] = round(after, 2)
            self.check("clients_get_gap_then_ticks", True, f"{len(clients)} clients x {len(names)} "
                       f"instruments: a gap, then ticks, within {after:.2f} s of the kill")
        except RuntimeError as exc:
            self.check("clients_get_gap_then_ticks", False, str(exc))
        self.report["killed_ingest"] = {"victim": victim, "slots": moved, "instruments": names}

    async def _kill_redis_primary(self, cluster: RedisClusterNodes, clients: list[FleetClient]) -> None:
        key = f"mdgate:{{{next(iter(INSTRUMENTS))}}}:ticks"
        dead = cluster.primary_for(key)
        dead.kill()
        t_kill = time.monotonic()
        node = await asyncio.to_thread(cluster.wait_failover, key, dead, 30.0)
        took = time.monotonic() - t_kill
        self.report["timings"]["redis_failover_s"] = round(took, 2)

        def flowing() -> bool:
            return all(all(n > 0 for n in c.ticks_after(t_kill + took).values()) and
                       len(c.ticks_after(t_kill + took)) == len(INSTRUMENTS) for c in clients)

        try:
            waited = await self._until(flowing, 30, "ticks flow after the Redis failover")
            self.check("redis_primary_failover", True, f"127.0.0.1:{dead.port} killed, replica "
                       f"127.0.0.1:{node.port} took over in {took:.2f} s, ticks again {waited:.2f} s later")
        except RuntimeError as exc:
            self.check("redis_primary_failover", False, str(exc))

    async def _stop_fanout(self, clients: list[FleetClient]) -> None:
        f1 = f"ws://127.0.0.1:{self.ports['fanout-1']}/ws"
        on_f1 = [c for c in clients if c.urls[c.at % len(c.urls)] == f1]
        before = {c.name: len(c.resumes) for c in on_f1}
        rc, secs = await asyncio.to_thread(self.procs["fanout-1"].stop, 10.0)
        t_stop = time.monotonic()

        def resumed() -> bool:
            return all(len(c.resumes) > before[c.name]
                       and all(c.ticks_after(t_stop).get(i, 0) > 0 for i in INSTRUMENTS) for c in on_f1)

        try:
            waited = await self._until(resumed, 20, "the clients of fanout-1 resume on fanout-2")
        except RuntimeError as exc:
            self.check("fanout_stop_resume", False, str(exc))
            return
        recovered = [r for c in on_f1 for r in c.resumes[before[c.name]:]]
        all_recovered = bool(recovered) and all(all(r.values()) for r in recovered)
        self.check("fanout_stop_resume", rc == 0 and bool(on_f1) and all_recovered,
                   f"fanout-1 stopped (exit {rc}, {secs:.2f} s); its {len(on_f1)} clients resumed on "
                   f"fanout-2 {waited:.2f} s later, every instrument recovered: {all_recovered}")

    async def _pause_ingest(self) -> None:
        """
        Restart the killed ingest instance; once both hold a slot, SIGSTOP one for longer than
        its lease, let the other take its slot over, SIGCONT it: it must let the slot go, and
        what it still had (the quotes its socket buffered while it was stopped) must be refused
        by the store's fence, not written.
        """
        victim = self.report.get("killed_ingest", {}).get("victim")
        if victim is None:
            return
        self.procs[victim].start()
        await self._wait_healthy(victim)

        async def shared() -> bool:
            held = await self._held()
            return len(held) == 2 and all(held.values())

        try:
            await self._until_async(shared, self.o.lease_ttl * 4 + 10, "both ingest instances hold a slot")
        except RuntimeError as exc:
            self.check("paused_ingest_fenced", False, str(exc))
            return
        held = await self._held()
        paused = next(n for n, slots in held.items() if 0 in slots)
        other = next(n for n in held if n != paused)
        proc = self.procs[paused].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        try:
            async def taken() -> bool:
                return 0 in (await self._held()).get(other, [])

            took = await self._until_async(taken, self.o.lease_ttl * 3 + 10, "the paused one's slot is taken")
            await asyncio.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGCONT)

        async def fenced() -> tuple[bool, Any]:
            doc = await status(self.ports[paused], self.token)
            return 0 not in doc.get("fleet", {}).get("held", []), doc.get("store", {}).get("fenced")

        async def settled() -> bool:
            try:
                gone, n = await fenced()
            except Exception:
                return False
            return gone and bool(n)

        try:
            await self._until_async(settled, 15, "the paused instance lets its slot go and is fenced")
            _gone, n = await fenced()
            self.check("paused_ingest_fenced", True, f"{paused} stopped, {other} took slot 0 {took:.2f} s "
                       f"later; resumed, {paused} let the slot go and the store refused {n} of its ticks")
        except RuntimeError as exc:
            self.check("paused_ingest_fenced", False, f"{exc}: {await fenced()}")

    def _verify(self, cluster: Any, clients: list[FleetClient], dhan: FakeDhanServer) -> None:
        from redis import Redis
        from redis.cluster import RedisCluster

        kind: Any = RedisCluster if self.o.redis == "cluster" else Redis
        rc = kind.from_url(cluster.url, decode_responses=True)
        stored: dict[str, list[int]] = {}
        around: dict[str, list[tuple[str, int]]] = {}
        for inst in INSTRUMENTS:
            rows = rc.xrange(f"mdgate:{{{inst}}}:ticks")
            stored[inst] = seqs = [int(f["seq"]) for _id, f in rows if "seq" in f]
            ids = [i for i, f in rows if "seq" in f]
            for k, (a, b) in enumerate(itertools.pairwise(seqs)):
                if b != a + 1:  # what a hole or a step back looks like in the stream
                    lo = max(0, k - 2)
                    around.setdefault(inst, []).extend(zip(ids[lo:k + 4], seqs[lo:k + 4], strict=True))
        self.report["stream_anomalies"] = around
        rc.close()
        bad_streams = {i: "not increasing" for i, s in stored.items()
                       if any(b <= a for a, b in itertools.pairwise(s))}
        self.check("streams_each_seq_once", not bad_streams, bad_streams or
                   f"{sum(len(s) for s in stored.values())} ticks stored in {len(stored)} streams")
        lost = {}
        for c in clients:
            for inst, seqs in c.seqs.items():
                missing = set(seqs) - set(stored.get(inst, []))
                if missing:
                    lost[f"{c.name}/{inst}"] = sorted(missing)[:5]
        self.check("no_acknowledged_tick_lost", not lost, lost or "every tick a client received is in Redis")
        jumps = {i: [(a, b) for a, b in itertools.pairwise(s) if b > a + 1][:5] for i, s in stored.items()}
        self.report["stored_seq_jumps"] = {i: j for i, j in jumps.items() if j}
        self.report["client_holes"] = {
            f"{c.name}/{inst}": [(a, b) for a, b in itertools.pairwise(seqs) if b > a + 1][:5]
            for c in clients for inst, seqs in c.seqs.items()
            if any(b > a + 1 for a, b in itertools.pairwise(seqs))}
        holes = {c.name: c.holes_and_duplicates() for c in clients}
        received = sum(len(s) for c in clients for s in c.seqs.values())
        self.check("clients_every_seq_once", all(h == (0, 0) for h in holes.values()),
                   f"(holes, duplicates) per client {holes}; {received} ticks received")
        cred_peak = dict(self.peak_sessions or dhan.peak_by_credential)
        within = bool(cred_peak) and max(cred_peak.values()) <= SLOTS
        self.check("sessions_per_credential_within_slots", within,
                   f"peak concurrent upstream sessions per credential {cred_peak} (slots {SLOTS})")
        both = any(len(h) == 2 and all(h.values()) for _t, h in self.holders)
        self.check("two_ingest_instances_shared_the_slots", both, "both held a slot before the kill")
        exits = {n: p.exited() for n, p in self.procs.items()}
        victim = self.report.get("killed_ingest", {}).get("victim")
        survivor = "ingest-2" if victim == "ingest-1" else "ingest-1"
        survivors_up = exits[survivor] is None and exits["fanout-2"] is None
        self.check("survivors_up", survivors_up, exits)
        self.report["clients"] = {c.name: {"connects": [u.rsplit(":", 1)[1] for _t, u in c.connects],
                                           "resumes": c.resumes, "gaps": len(c.gaps), "errors": c.errors[-3:]}
                                  for c in clients}
        self.report["ticks"] = {"received": received, "stored": sum(len(s) for s in stored.values()),
                                "sent_by_fake": self.sent}
        self.report["ok"] = all(c["ok"] for c in self.report["checks"].values())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="fleet_chaos.py")
    p.add_argument("--lease-ttl", type=float, default=10.0, help="[fleet] lease_ttl of the instances (s)")
    p.add_argument("--phase", type=float, default=15.0, help="seconds of steady flow between faults")
    p.add_argument("--rate", type=float, default=400.0, help="quotes per second from the fake Dhan")
    p.add_argument("--clients", type=int, default=4, help="clients (half start on each fan-out)")
    p.add_argument("--redis", choices=["cluster", "single"], default="cluster",
                   help="a Redis Cluster (3 primaries + 3 replicas; a primary is killed) or one redis-server")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--tmp", type=Path, help="working directory (default: a new temporary one)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    tmp = opts.tmp or Path(tempfile.mkdtemp(prefix="mdgate-fleet-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"fleet chaos in {tmp} (pid {os.getpid()})", flush=True)
    try:
        report = asyncio.run(FleetChaos(opts, tmp).run())
    except RuntimeError as exc:
        report = {"ok": False, "error": str(exc), "checks": {}}
        print(f"FAIL {exc}", flush=True)
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "checks"}, indent=2))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
