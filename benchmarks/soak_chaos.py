"""
Chaos soak: the real ``mdgate run`` with both providers, Redis and clients,
for minutes, while a driver injects faults on a seeded random schedule.

Everything runs on loopback, each part its own process where it matters:

* ``redis-server`` (``mdgate.testing.redis``, AOF with ``appendfsync always``
  so that what Redis acknowledged survives its ``kill -9``);
* ``mdgate --config <tmp>/mdgate.toml run`` (the installed executable) with
  the Yahoo and Dhan plugins pointed at fakes speaking their wire formats
  (``mdgate_yahoo.testing.FakeYahooServer``, ``mdgate_dhan.testing.FakeDhanServer``;
  Dhan credentials through ``DHAN_CLIENT_ID`` / ``DHAN_ACCESS_TOKEN``);
* in this process: the fakes with numbered ticks and a ledger of what they
  put on the wire (``_chaos_fakes.py``), the clients (``_chaos_clients.py``),
  the fault schedule and a monitor sampling ``/healthz`` every second and
  the gateway's VmRSS every ``--rss-interval`` seconds.

Faults (each kind at least once, then at random; each bounded in time):
provider drops (TCP abort or clean close), refusals (Yahoo closes new
connections with 1013; Dhan sends 807 and refuses the next logins, then
accepts), stalls (the fake keeps the socket but stops sending), malformed
frames (plus a far-future ``ts`` tick and, for Dhan, a good packet stacked
with garbage), Redis ``kill -9`` + restart on the same port and Redis
``SIGSTOP`` pauses, hostile clients (garbage, oversize and near-limit
requests, deep nesting, connection floods, made-up instruments) and slow
clients (subscribe, never read).

At the end (faults stopped, everything healed, feeders stopped and flushed,
the gateway drained) it checks, and exits 1 if one fails:

* every tick the fakes sent is in Redis exactly once (streams and feed),
  except the ticks excused by the accounting rule of docs/reliability.md;
  no tick that was never sent; no far-future tick stored;
* the daemon never exited: same PID, every ``/healthz`` answered 200;
* VmRSS after warm-up is flat (last - first-after-warm-up within ``--rss-limit-mb``);
* both providers and the store recovered; no secret in the log; a clean stop.

Usage: ``.venv/bin/python benchmarks/soak_chaos.py [--duration 300] [--seed 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import anyio
from _chaos_clients import Clients
from _chaos_fakes import ChaosDhan, ChaosYahoo, Feeder, Ledger
from _chaos_procs import GatewayProcess, gateway_config, gateway_env, http_get, status, vm_rss_kb
from _chaos_report import checks, render, unexplained_unsubscribes
from _chaos_verify import exactly_once, read_redis, rss_summary, scan_log

from mdgate.testing.redis import RedisServer, free_port

YAHOO_TRACKED: Final = [f"NASDAQ:YC{i:02d}" for i in range(1, 9)]
DHAN_TRACKED: Final = {f"NSE:DC{i:02d}": f"NSE_EQ:{300000 + i}" for i in range(1, 9)}
#: From the Dhan plugin's own table of well-known codes (no config entry).
DHAN_KNOWN: Final = {"NSE:RELIANCE": "NSE_EQ:2885", "NSE:INFY": "NSE_EQ:1594"}
MADE_UP: Final = [f"NASDAQ:ZQ{i:04d}" for i in range(1, 1201)]

#: Fault kind -> the resource it holds while active.
KINDS: Final = {
    "yahoo_drop": "yahoo", "yahoo_refuse": "yahoo", "yahoo_stall": "yahoo", "yahoo_malformed": "yahoo",
    "dhan_drop": "dhan", "dhan_auth_807": "dhan", "dhan_stall": "dhan", "dhan_malformed": "dhan",
    "redis_kill": "redis", "redis_pause": "redis",
    "client_garbage": "clients", "client_huge": "clients", "client_nesting": "clients",
    "client_flood": "clients", "client_made_up": "clients", "client_slow": "clients",
}
CAPACITY: Final = {"yahoo": 1, "dhan": 1, "redis": 1, "clients": 3}
REDIS_AOF: Final = ("--appendonly", "yes", "--appendfsync", "always")


def _yahoo_code(instrument: str) -> str:
    exchange, symbol = instrument.split(":")
    return symbol + ".NS" if exchange == "NSE" else symbol


class Soak:
    """One soak run (see the module docstring)."""

    def __init__(self, opts: argparse.Namespace, tmp: Path) -> None:
        self.o = opts
        self.tmp = tmp
        self.rng = random.Random(opts.seed)
        self.ledger = Ledger()
        self.dhan_codes = {**DHAN_TRACKED, **DHAN_KNOWN}
        self.tracked = YAHOO_TRACKED + list(self.dhan_codes)
        self.code_maps = {
            "yahoo": {_yahoo_code(i): i for i in [*YAHOO_TRACKED, *MADE_UP, *self.dhan_codes]},
            "dhan": {c: i for i, c in self.dhan_codes.items()},
        }
        self.dhan_secret = ("7" + str(self.rng.randrange(10**8, 10**9)), "dhan-" + secrets.token_hex(12))
        self.client_token = "cli-" + secrets.token_hex(12)
        self.leak = "leak-" + secrets.token_hex(12)
        self.faults: Counter[str] = Counter()
        self.fault_log: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.busy: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.health: dict[str, Any] = {"checks": 0, "failures": 0, "examples": []}
        self.rss: list[tuple[float, int]] = []
        self.samples: list[dict[str, Any]] = []
        self.exit_seen: dict[str, Any] | None = None
        self.dead = anyio.Event()
        self.t0 = time.monotonic()
        self.redis_paused = False

    def now(self) -> float:
        """Seconds since the soak started."""
        return round(time.monotonic() - self.t0, 2)

    # -- the run -------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Set everything up, soak, verify; return the report."""
        self.redis = RedisServer(self.tmp / "redis", extra=REDIS_AOF)
        await anyio.to_thread.run_sync(self.redis.start)
        try:
            yahoo = ChaosYahoo(self.ledger, cap=100)
            async with yahoo:
                client_id, token = self.dhan_secret
                dhan = ChaosDhan(self.ledger, token=token, client_id=client_id)
                await dhan.start()
                try:
                    return await self._with_fakes(yahoo, dhan)
                finally:
                    await dhan.stop()
        finally:
            await anyio.to_thread.run_sync(self.redis.stop)

    async def _with_fakes(self, yahoo: ChaosYahoo, dhan: ChaosDhan) -> dict[str, Any]:
        self.yahoo, self.dhan = yahoo, dhan
        self.port = free_port()
        config = gateway_config(port=self.port, redis_url=self.redis.url, yahoo_url=yahoo.url,
                                dhan_url=dhan.url, token=self.client_token, always=self.tracked,
                                dhan_codes=DHAN_TRACKED)
        self.gw = GatewayProcess(config, self.tmp, gateway_env(*self.dhan_secret))
        self.pid = self.gw.start()
        report: dict[str, Any] = {}
        try:
            await self._ready()
            self.t0 = time.monotonic()
            report = await self._soak()
        finally:
            rc, secs = await anyio.to_thread.run_sync(self.gw.stop, 20.0)
            report["stop"] = {"rc": rc, "seconds": round(secs, 2)}
        report["log"] = scan_log(self.gw.log, [*self.dhan_secret, self.client_token, self.leak])
        return report

    async def _ready(self) -> None:
        with anyio.fail_after(30):
            while True:
                if self.gw.exited() is not None:
                    raise RuntimeError(f"gateway exited at start: {self.gw.log.read_text()[-2000:]}")
                try:
                    if (await http_get(self.port, "/healthz", timeout=1.0))[0] == 200:
                        break
                except (OSError, TimeoutError, ValueError):
                    pass
                await anyio.sleep(0.05)
            ycodes = {_yahoo_code(i) for i in YAHOO_TRACKED}
            dcodes = set(self.dhan_codes.values())
            while not (ycodes <= self.yahoo.subscribed and dcodes <= self.dhan.subscribed):
                await anyio.sleep(0.05)

    async def _soak(self) -> dict[str, Any]:
        o = self.o
        self.yfeed = Feeder("yahoo", self.yahoo, self.code_maps["yahoo"], o.rate, self.rng)
        self.dfeed = Feeder("dhan", self.dhan, self.code_maps["dhan"], o.rate, self.rng)
        self.clients = Clients(self.port, self.client_token, self.tracked, MADE_UP, 65536, self.rng)
        tail = max(6.0, 0.1 * o.duration)
        chaos_end = o.duration - tail
        chaos_done = anyio.Event()
        report: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            feeders = anyio.CancelScope()

            async def feed() -> None:
                with feeders:
                    async with anyio.create_task_group() as ftg:
                        ftg.start_soon(self.yfeed.run)
                        ftg.start_soon(self.dfeed.run)

            tg.start_soon(feed)
            for _ in range(2):
                tg.start_soon(self.clients.normal)
            tg.start_soon(self._monitor)
            tg.start_soon(self._chaos, 2.0, chaos_end, chaos_done)
            with anyio.move_on_after(o.duration):
                await self.dead.wait()
            with anyio.move_on_after(120):
                await chaos_done.wait()
            if not self.dead.is_set():
                report["recovery"] = await self._heal_and_drain(feeders)
                stored = await anyio.to_thread.run_sync(read_redis, self.redis.url)
                report["ticks"] = exactly_once(self.ledger, self.code_maps, stored)
                report["ticks"]["max_stored_ts"] = stored["max_ts"]
                report["ticks"]["excused_unsubscribe_unexplained"] = unexplained_unsubscribes(
                    report["ticks"], report["recovery"].get("decode_errors"), self.ledger.malformed)
            tg.cancel_scope.cancel()
        report.update({
            "seed": o.seed, "duration_s": o.duration, "rate_per_provider": o.rate, "pid": self.pid,
            "exited_during_soak": self.exit_seen, "healthz": self.health,
            "faults": dict(sorted(self.faults.items())), "fault_notes": self.notes,
            "malformed_sent": dict(sorted(self.ledger.malformed.items())),
            "rss": rss_summary(self.rss, o.warmup), "rss_series_mb": [
                (t, round(kb / 1024, 1)) for t, kb in self.rss],
            "clients": self.clients.stats.__dict__, "status_samples": self.samples,
            "provider_connections": {
                p: sum(1 for e in self.ledger.conns.values() if e.provider == p) for p in ("yahoo", "dhan")},
            "fault_log": self.fault_log,
        })
        return report

    # -- monitor -------------------------------------------------------------

    async def _monitor(self) -> None:
        step = 0
        while True:
            t = time.monotonic()
            rc = self.gw.exited()
            if rc is not None:
                self.exit_seen = {"rc": rc, "at_s": self.now()}
                self.dead.set()
                return
            if step % max(1, round(self.o.rss_interval)) == 0:
                kb = vm_rss_kb(self.pid)
                if kb is not None:
                    self.rss.append((self.now(), kb))
            self.health["checks"] += 1
            err: str | None = None
            try:
                code, _ = await http_get(self.port, "/healthz", timeout=3.0)
                if code != 200:
                    err = f"HTTP {code}"
            except (OSError, TimeoutError, ValueError, IndexError) as exc:
                err = f"{type(exc).__name__}: {exc}"[:120]
            if err is not None:
                self.health["failures"] += 1
                if len(self.health["examples"]) < 10:
                    self.health["examples"].append({"at_s": self.now(), "error": err,
                                                    "active_faults": sorted(self.active)})
            if step % 5 == 0:
                await self._sample()
            step += 1
            await anyio.sleep(max(0.0, 1.0 - (time.monotonic() - t)))

    async def _sample(self) -> None:
        try:
            st = await status(self.port, self.client_token)
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            self.samples.append({"at_s": self.now(), "error": f"{type(exc).__name__}: {exc}"[:120]})
            return
        self.samples.append({
            "at_s": self.now(), "status": st.get("status"), "clients": st.get("clients"),
            "providers": {n: p.get("state") for n, p in st.get("providers", {}).items()},
            "store": {k: st.get("store", {}).get(k) for k in ("state", "buffered", "written", "dropped")},
            "active_faults": sorted(self.active),
        })

    # -- chaos ---------------------------------------------------------------

    async def _chaos(self, start: float, end: float, done: anyio.Event) -> None:
        try:
            kinds = [k for k in KINDS if k not in self.o.skip]
            pending = list(kinds)
            self.rng.shuffle(pending)
            if "client_slow" in pending:  # the longest fault first, so that short runs see it end
                pending.remove("client_slow")
                pending.insert(0, "client_slow")
            window = max(1.0, end - start)
            gap = self.o.gap or min(4.0, max(0.3, window / (len(kinds) * 1.3)))
            async with anyio.create_task_group() as tg:
                await anyio.sleep(start)
                # a kind not yet run may still start in the quiet tail (short runs), up to 2 s before the end
                while not self.dead.is_set() and (
                        self.now() < end or (pending and self.now() < self.o.duration - 2.0)):
                    free = [k for k in (pending or kinds) if self.busy[KINDS[k]] < CAPACITY[KINDS[k]]]
                    if not free:
                        await anyio.sleep(0.1)
                        continue
                    if pending:
                        # every kind once first, the resource with the most kinds still to go first
                        # (a provider's faults run one at a time), as soon as it is free
                        left = Counter(KINDS[k] for k in pending)
                        kind = max(free, key=lambda k: left[KINDS[k]] / CAPACITY[KINDS[k]])
                        pending.remove(kind)
                        pause = min(gap, 0.4)
                    else:
                        kind = self.rng.choice(free)
                        pause = self.rng.uniform(0.5, 1.5) * gap
                    self.busy[KINDS[kind]] += 1
                    tg.start_soon(self._fault, kind)
                    await anyio.sleep(pause)
        finally:
            done.set()

    async def _fault(self, kind: str) -> None:
        t = self.now()
        self.active[kind] += 1
        entry: dict[str, Any] = {"at_s": t, "kind": kind}
        try:
            with anyio.fail_after(90):
                entry["detail"] = await self._inject(kind)
        except Exception as exc:  # a driver-side problem: reported, never fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self.active[kind] -= 1
            if not self.active[kind]:
                del self.active[kind]
            self.busy[KINDS[kind]] -= 1
            entry["seconds"] = round(self.now() - t, 2)
            self.fault_log.append(entry)

    async def _until(self, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for ``predicate``; a timeout is noted (the gateway did not recover in time)."""
        with anyio.move_on_after(timeout):
            while not predicate():
                await anyio.sleep(0.05)
            return True
        self.notes.append({"at_s": self.now(), "note": f"{what}: not within {timeout:g} s"})
        return False

    def _accepted_since(self, provider: str, t: float) -> bool:
        server = self.yahoo if provider == "yahoo" else self.dhan
        for c in server.connections:
            entry = self.ledger.conns.get(c.ws)
            if entry is not None and entry.opened > t and entry.closed_at is None and (
                    time.monotonic() - entry.opened > 0.5):
                return True
        return False

    async def _inject(self, kind: str) -> Any:
        self.faults[kind] += 1
        rng = self.rng
        t = time.monotonic()
        actions: dict[str, Callable[[], Awaitable[Any]]] = {
            "client_garbage": lambda: self.clients.garbage(self.leak),
            "client_huge": self.clients.huge,
            "client_nesting": self.clients.nesting,
            "client_flood": lambda: self.clients.flood(rng.randint(150, 300), 2.0),
            "client_made_up": self.clients.made_up,
            # long enough to fill the kernel's socket buffers and pass drain_timeout (4 s)
            # (Linux autotunes a loopback send buffer up to 4 MiB: at 1,000 ticks/s that takes ~40 s)
            "client_slow": lambda: self.clients.slow(
                min(75.0, max(10.0, 0.25 * self.o.duration)) * rng.uniform(0.8, 1.2)),
        }
        if kind in actions:
            return await actions[kind]()
        if kind.startswith(("yahoo_", "dhan_")):
            provider = kind.split("_", 1)[0]
            feeder = self.yfeed if provider == "yahoo" else self.dfeed
            what = kind.split("_", 1)[1]
            detail: dict[str, Any]
            if what == "malformed":
                return await feeder.malformed()
            if what == "drop":
                clean = rng.random() < 0.3
                detail = {"connections": await feeder.abort_all(clean), "clean": clean}
            elif what == "refuse":
                self.yahoo.refuse_left = rng.randint(1, 3)
                detail = {"refuse": self.yahoo.refuse_left, "connections": await feeder.abort_all(False)}
            elif what == "auth_807":
                refuse = rng.randint(0, 2)
                detail = {"refuse_next": refuse, "connections": await feeder.auth_refusal(refuse)}
            else:
                detail = {"connections": await feeder.stall()}
            await self._until(f"{kind}: {provider} reconnected",
                              lambda: self._accepted_since(provider, t), 30)
            return detail
        if kind == "redis_kill":
            down = rng.uniform(0.5, 4.0)
            await anyio.to_thread.run_sync(self.redis.kill)
            await anyio.sleep(down)
            await anyio.to_thread.run_sync(self.redis.start)
            return {"down_s": round(down, 2)}
        # redis_pause: now and then longer than the store's 10 s reply timeout (a hung server)
        pause = 12.0 if self.o.duration >= 120 and rng.random() < 0.2 else rng.uniform(0.5, 3.0)
        self.redis.pause()
        self.redis_paused = True
        try:
            await anyio.sleep(pause)
        finally:
            self.redis.resume()
            self.redis_paused = False
        return {"paused_s": round(pause, 2)}

    # -- the end -------------------------------------------------------------

    async def _heal_and_drain(self, feeders: anyio.CancelScope) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.yahoo.refuse_left = self.dhan.refuse_left = 0
        if self.redis.proc is None:
            await anyio.to_thread.run_sync(self.redis.start)
        t = time.monotonic()
        last: dict[str, Any] = {}

        def healthy() -> bool:
            providers = last.get("providers", {})
            return (last.get("store", {}).get("state") == "ok"
                    and all(providers.get(p, {}).get("state") == "connected" for p in ("yahoo", "dhan")))

        with anyio.move_on_after(45):
            while True:
                try:
                    last = await status(self.port, self.client_token)
                except (OSError, TimeoutError, ValueError, RuntimeError):
                    last = {}
                if healthy():
                    break
                await anyio.sleep(0.25)
        out["recovered"] = healthy()
        out["recovery_s"] = round(time.monotonic() - t, 2)
        out["final_states"] = {p: v.get("state") for p, v in last.get("providers", {}).items()}
        await anyio.sleep(3.0)  # a quiet stretch: ticks must flow again after all that
        feeders.cancel()
        await anyio.sleep(0.05)
        flushed = 0
        for feeder in (self.yfeed, self.dfeed):
            for ws in feeder.open_connections():
                flushed += await feeder.flush(ws)
        out["connections_flushed"] = flushed
        prev: tuple[Any, ...] = ()
        drained = False
        with anyio.move_on_after(60):
            while True:
                await anyio.sleep(0.5)
                try:
                    st = await status(self.port, self.client_token)
                except (OSError, TimeoutError, ValueError, RuntimeError):
                    continue
                store, pipe = st.get("store", {}), st.get("pipeline", {})
                cur = (pipe.get("ticks"), store.get("written"), store.get("duplicates"))
                if store.get("buffered") == 0 and pipe.get("queued") == 0 and cur == prev:
                    drained = True
                    out["final_store"] = store
                    out["final_pipeline"] = pipe
                    out["decode_errors"] = {p: v.get("decode_errors_by_kind")
                                            for p, v in st.get("providers", {}).items()}
                    break
                prev = cur
        out["drained"] = drained
        return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="soak_chaos.py")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of soak (default 300)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    p.add_argument("--rate", type=float, default=500.0, help="ticks per second per provider (default 500)")
    p.add_argument("--warmup", type=float, default=None,
                   help="RSS warm-up seconds (default 20%% of the duration, at least 8)")
    p.add_argument("--rss-interval", type=float, default=2.0, help="seconds between VmRSS samples")
    p.add_argument("--rss-limit-mb", type=float, default=20.0, help="allowed RSS growth after warm-up")
    p.add_argument("--gap", type=float, default=0.0, help="mean seconds between faults (default: auto)")
    p.add_argument("--skip", action="append", default=[], choices=sorted(KINDS),
                   help="leave a fault kind out (repeatable)")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--tmp", type=Path, default=None, help="work directory (kept); default: a temp dir")
    opts = p.parse_args(argv)
    if opts.warmup is None:
        opts.warmup = max(8.0, 0.2 * opts.duration)
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every guarantee held, 1 when one was violated, 2 when the driver failed."""
    opts = parse_args(argv)
    tmp = opts.tmp or Path(tempfile.mkdtemp(prefix="mdgate-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        report = anyio.run(Soak(opts, tmp).run)
    except Exception as exc:
        print(f"soak_chaos: driver failed: {type(exc).__name__}: {exc} (work dir {tmp})", file=sys.stderr)
        return 2
    report["wall_s"] = round(time.monotonic() - t0, 1)
    report["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    report["checks"] = checks(report, opts, [k for k in KINDS if k not in opts.skip])
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=1, default=str))
    print(render(report))
    if report["ok"] and opts.tmp is None:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"work dir (gateway.log, mdgate.toml): {tmp}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
