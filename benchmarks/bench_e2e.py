"""
End-to-end benchmark: provider sockets -> mdgate -> Redis + WebSocket clients.

Everything on loopback, each part in its own process:

* a throw-away ``redis-server`` (free port, no persistence);
* fake provider servers speaking the real wire protocols
  (``mdgate_yahoo.testing.FakeYahooServer``, ``mdgate_dhan.testing.FakeDhanServer``)
  with numbered ticks and send timestamps, paced or blasting
  (``benchmarks/_e2e_feeds.py``); one pair feeds the gateway, another pair
  the alternatives;
* ``mdgate run`` as a subprocess (``python -m mdgate --config <tmp> run``),
  500 Yahoo + 500 Dhan instruments subscribed through ``[subscriptions] always``;
* lean measuring WebSocket clients in their own process (``_e2e_clients.py``);
* the alternatives, in the same run on the same kind of feed: yfinance's
  ``AsyncWebSocket`` and dhanhq's ``MarketFeed`` decode-only
  (``_e2e_sdk.py``) and a naive per-tick pipeline (``_e2e_naive.py``); and,
  as a baseline, mdgate's own receive and decode alone (the gateway's provider
  WebSocket and each plugin's decoder: ``_e2e_sdk.py mdgate-yahoo|mdgate-dhan``),
  so that what the gateway adds to it (storing, the client, the pipeline) shows.

Prints markdown tables: throughput, latency, CPU, memory, start-up time, the
loss check and the ratios against each alternative. Gateway CPU comes from
``/proc/<pid>/stat`` (utime+stime), memory from ``/proc/<pid>/status``.

Usage: ``.venv/bin/python benchmarks/bench_e2e.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from mdgate.testing.redis import RedisServer, free_port

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
DHAN_CLIENT_ID = "1000000001"
#: The fake Dhan server's test credential.
DHAN_TOKEN = "test-token"

N_YAHOO = 500
N_DHAN = 500
#: Offered rate at which gateway and SDKs are compared by CPU per tick (everyone keeps up).
PACED_COMPARE = 10_000.0
N_ALT = 100  # yfinance uses one connection: Yahoo keeps 100 symbols per connection


def yahoo_names(n: int) -> list[str]:
    """Benchmark instruments served by Yahoo (``NASDAQ:YB0001`` -> ``YB0001``)."""
    return [f"NASDAQ:YB{i:04d}" for i in range(1, n + 1)]


def dhan_names(n: int) -> list[tuple[str, str]]:
    """Benchmark instruments served by Dhan, with their codes."""
    return [(f"NSE:DB{i:04d}", f"NSE_EQ:{100000 + i}") for i in range(1, n + 1)]


# -- processes ---------------------------------------------------------------


class LineProc:
    """A child process spoken to with one line each way."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=HERE.parent,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line.rstrip("\n"))
            del self.errors[:-40]

    def send(self, line: str) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """Return the rest of the next line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no {prefix!r} within {timeout} s; "
                                   f"stderr: {self.errors[-10:]}") from None
            if line == "" and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.errors[-10:]}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def ask(self, line: str, prefix: str, timeout: float = 120.0) -> str:
        """Send a command and wait for its answer."""
        self.send(line)
        return self.expect(prefix, timeout)

    def stop(self) -> None:
        """Quit politely, then kill."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send("quit")
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[tuple[str, int]]:
    """A throw-away redis-server on a free port (``mdgate.testing.redis``): (url, pid)."""
    server = RedisServer(directory)
    server.start()
    try:
        assert server.proc is not None
        yield server.url, server.proc.pid
    finally:
        server.stop()


# -- the gateway ---------------------------------------------------------------


def gateway_config(port: int, redis_url: str, yahoo_url: str, dhan_url: str, event_loop: str = "") -> str:
    """The gateway's TOML: both providers on the fakes, 1000 instruments always on."""
    always = yahoo_names(N_YAHOO) + [n for n, _ in dhan_names(N_DHAN)]
    lines = [
        "[server]", 'host = "127.0.0.1"', f"port = {port}", "",
        "[redis]", f'url = "{redis_url}"', "",
        "[subscriptions]", f"always = {json.dumps(always)}", "",
        "[providers.yahoo]", f'url = "{yahoo_url}"', "",
        "[providers.dhan]", f'url = "{dhan_url}"', "",
        "[logging]", 'level = "warning"', "",
        *(["[runtime]", f'event_loop = "{event_loop}"', ""] if event_loop else []),
    ]
    for name, code in dhan_names(N_DHAN):
        lines += [f'[instruments."{name}"]', f'dhan = "{code}"', ""]
    return "\n".join(lines)


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP GET on loopback."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Gateway:
    """``mdgate run`` as a subprocess."""

    def __init__(self, config: str, tmp: Path) -> None:
        self.port = 0
        self.path = tmp / "mdgate.toml"
        self.path.write_text(config)
        self.log = tmp / "gateway.log"
        self.env = {**os.environ, "DHAN_CLIENT_ID": DHAN_CLIENT_ID, "DHAN_ACCESS_TOKEN": DHAN_TOKEN}
        for key in ("MDGATE_REDIS_URL", "MDGATE_DATABASE_URL"):
            self.env.pop(key, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> float:
        """Start; return seconds from spawn to the first ``/healthz`` 200."""
        self.port = port
        with self.log.open("wb") as log:
            t0 = time.monotonic()
            # MDGATE_BENCH_GATEWAY: a script run instead of ``-m mdgate`` (to compare builds).
            entry = os.environ.get("MDGATE_BENCH_GATEWAY")
            self.proc = subprocess.Popen(
                [PY, *([entry] if entry else ["-m", "mdgate"]), "--config", str(self.path), "run"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=HERE.parent,
            )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(port, "/healthz", 0.5)[0] == 200:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > 30:
                raise RuntimeError("gateway: no /healthz within 30 s")
            time.sleep(0.005)

    @property
    def pid(self) -> int:
        """The gateway's pid."""
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        """``GET /status``."""
        code, body = http_get(self.port, "/status")
        if code != 200:
            raise RuntimeError(f"/status: HTTP {code}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def stop(self) -> float:
        """SIGTERM; return seconds until exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0


# -- measuring -------------------------------------------------------------------


@dataclass
class Cell:
    """One measured configuration."""

    label: str
    clients: int
    offered: str
    sent: int = 0
    stored_rate: float = 0.0
    delivered_rate: float = 0.0
    per_client_rate: float = 0.0
    min_ratio: float = 0.0
    p50: float | None = None
    p99: float | None = None
    pmax: float | None = None
    int_p99: float | None = None
    cpu_us: float = 0.0
    client_cpu_us: float = 0.0
    conflated: int = 0
    feed_rate: float = 0.0
    e2e_rate: float = 0.0
    redis_cpu_us: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    """The whole run."""

    def __init__(self, quick: bool, tmp: Path, redis_url: str, redis_pid: int) -> None:
        self.quick = quick
        self.tmp = tmp
        self.redis_url = redis_url
        self.redis_pid = redis_pid
        self.seconds = 2.0 if quick else 6.0
        self.feeds: dict[str, LineProc] = {}
        self.gw: Gateway | None = None
        self.cells: list[Cell] = []
        self.notes: list[str] = []
        #: /status requests that took over 5 s (the gateway flooded past its limits).
        self.slow_status = 0
        self.facts: dict[str, Any] = {}
        self.args = argparse.Namespace(counts="", rates="", no_alt=False, profile="", event_loop="")
        self.counts: list[int] = []

    # helpers
    def feed(self, key: str) -> LineProc:
        """Start (once) and return a feed process."""
        if key not in self.feeds:
            provider = key.split("-")[0]
            p = LineProc(key, [PY, str(HERE / "_e2e_feeds.py"), provider])
            self.feeds[key] = p
        return self.feeds[key]

    def start_feeds(self) -> dict[str, str]:
        """Start the four feeds; return their URLs."""
        urls: dict[str, str] = {}
        for key in ("yahoo-gw", "dhan-gw", "yahoo-alt", "dhan-alt"):
            self.feed(key)
        for key in list(self.feeds):
            urls[key] = self.feeds[key].expect("READY", 30)
        return urls

    def feed_state(self, key: str) -> dict[str, int]:
        """A feed's subscription/sent counters."""
        state: dict[str, int] = json.loads(self.feeds[key].ask("state", "STATE", 10))
        return state

    def stream(self, rates: dict[str, float | None], seconds: float) -> tuple[int, float]:
        """Stream on several feeds at once; return (ticks sent, longest feed time)."""
        for key, rate in rates.items():
            self.feeds[key].send(f"stream {'max' if rate is None else rate} {seconds}")
        sent, elapsed = 0, 0.0
        for key in rates:
            n, secs = self.feeds[key].expect("DONE", seconds * 10 + 60).split()
            sent += int(n)
            elapsed = max(elapsed, float(secs))
        return sent, elapsed

    def wait_stored(self, ticks0: int, written0: int, sent: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the gateway ingested and Redis acknowledged ``sent`` more ticks."""
        assert self.gw is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.gw.status()
            except TimeoutError:  # a gateway flooded past its limits answers late: noted, waited for
                self.slow_status += 1
                if time.monotonic() > deadline:
                    raise
                continue
            if (st["pipeline"]["ticks"] - ticks0 >= sent and st["store"]["written"] - written0 >= sent) \
                    or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def measure(self, label: str, rates: dict[str, float | None], clients: LineProc | None,
                n_clients: int, offered: str, seconds: float | None = None) -> Cell:
        """One window: stream, wait for Redis and the clients, collect everything."""
        assert self.gw is not None
        secs = seconds or self.seconds
        cell = Cell(label, n_clients, offered)
        st0 = self.gw.status()
        cpu0 = proc_cpu(self.gw.pid)
        rcpu0 = proc_cpu(self.redis_pid)
        others = {"feeds": [p.proc.pid for p in self.feeds.values()],
                  "clients": [clients.proc.pid] if clients is not None else []}
        others0 = {k: sum(proc_cpu(pid) for pid in pids) for k, pids in others.items()}
        spy: subprocess.Popen[bytes] | None = None
        if self.args.profile and self.args.profile in label:
            name = f"mdgate-profile-{label.replace(' ', '').replace(',', '_').replace('/', '')}.txt"
            out = Path(tempfile.gettempdir()) / name
            print(f"  py-spy -> {out}", file=sys.stderr, flush=True)
            spy = subprocess.Popen([str(Path(PY).parent / "py-spy"), "record", "--pid", str(self.gw.pid),
                                    # --gil: only samples that hold the GIL, i.e. Python running
                                    # (a thread blocked in epoll or send shows as busy otherwise)
                                    "--gil", "--format", "raw", "--rate", "200", "--output", str(out),
                                    "--duration", str(int(secs) + 1)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        if clients is not None:
            clients.send("start")
        t0 = time.monotonic()
        sent, feed_secs = self.stream(rates, secs)
        st1 = self.wait_stored(st0["pipeline"]["ticks"], st0["store"]["written"], sent)
        t1 = time.monotonic()
        cpu1 = proc_cpu(self.gw.pid)
        rcpu1 = proc_cpu(self.redis_pid)
        cell.redis_cpu_us = (rcpu1 - rcpu0) / max(sent, 1) * 1e6
        wall = t1 - t0
        cell.extra["cpu_share"] = {
            "gateway": (cpu1 - cpu0) / wall, "redis-server": (rcpu1 - rcpu0) / wall,
            **{k: (sum(proc_cpu(pid) for pid in pids) - others0[k]) / wall for k, pids in others.items()},
        }
        cell.sent = sent
        cell.feed_rate = sent / feed_secs if feed_secs else 0.0
        cell.stored_rate = sent / (t1 - t0)
        cell.cpu_us = (cpu1 - cpu0) / max(sent, 1) * 1e6
        cell.conflated = st1["pipeline"]["conflated"] - st0["pipeline"]["conflated"]
        cell.extra["hwm_mib"] = proc_mem(self.gw.pid)["VmHWM"] / 1024
        if spy is not None:
            spy.wait()
        if self.slow_status:
            self.notes.append(f"{label}: /status answered after more than 5 s, {self.slow_status} time(s)")
            self.slow_status = 0
        written = st1["store"]["written"] - st0["store"]["written"]
        if written < sent:
            self.notes.append(f"{label}: Redis acknowledged {written} of {sent} ticks within the timeout")
        if clients is not None:
            res = json.loads(clients.ask(f"stop {sent} 60", "RESULT", 120))
            cell.delivered_rate = res["ticks"] / res["window_s"]
            cell.per_client_rate = cell.delivered_rate / max(res["clients"], 1)
            cell.min_ratio = res["min_ticks"] / max(sent, 1)
            cell.p50, cell.p99, cell.pmax, cell.int_p99 = res["p50"], res["p99"], res["max"], res["int_p99"]
            cell.client_cpu_us = res["cpu_s"] / max(res["ticks"], 1) * 1e6
            cell.extra["client_closed"] = res["closed"]
            cell.extra["frames"] = res["frames"]
            cell.e2e_rate = sent / max(t1 - t0, res["window_s"])
            if res["min_ticks"] < sent and not cell.conflated:
                self.notes.append(f"{label}: a client received {res['min_ticks']} of {sent} ticks")
            if res["closed"]:
                self.notes.append(f"{label}: {res['closed']} client connection(s) closed")
        self.cells.append(cell)
        print(f"  {label}: {_fmt_cell(cell)}", file=sys.stderr, flush=True)
        return cell

    def clients(self, n: int, instruments: list[str], port: int | None = None) -> LineProc:
        """Start ``n`` measuring clients subscribed to ``instruments``."""
        assert self.gw is not None
        p = LineProc(f"clients-{n}", [
            PY, str(HERE / "_e2e_clients.py"), "--port", str(port or self.gw.port),
            "--clients", str(n), "--instruments", ",".join(instruments)])
        t0 = time.monotonic()
        cpu0 = proc_cpu(self.gw.pid) if port is None else 0.0
        p.expect("READY", 180)
        if port is None and f"subscribe_{n}" not in self.facts:
            self.facts[f"subscribe_{n}"] = (time.monotonic() - t0, proc_cpu(self.gw.pid) - cpu0)
            print(f"  {n} clients subscribed {len(instruments)} instruments each (snapshot received) in "
                  f"{time.monotonic() - t0:.2f} s, gateway CPU {proc_cpu(self.gw.pid) - cpu0:.2f} s",
                  file=sys.stderr, flush=True)
        return p


def _fmt_cell(c: Cell) -> str:
    return (f"sent={c.sent} feed/s={c.feed_rate:,.0f} stored/s={c.stored_rate:,.0f} e2e/s={c.e2e_rate:,.0f} "
            f"delivered/s={c.delivered_rate:,.0f} p50={_ms(c.p50)} p99={_ms(c.p99)} max={_ms(c.pmax)} "
            f"int_p99={_ms(c.int_p99)} cpu_us={c.cpu_us:.1f} client_cpu_us={c.client_cpu_us:.1f} "
            f"conflated={c.conflated} {c.extra}")


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer cells (about 2 minutes)")
    parser.add_argument("--counts", default="", help="client counts to run (default 1,50,200; --quick 1,50)")
    parser.add_argument("--rates", default="",
                        help="offered ticks/s to run, 'max' for blast (default 1000,10000,max)")
    parser.add_argument("--no-alt", action="store_true", help="skip the alternatives (development)")
    parser.add_argument("--event-loop", default="", choices=["", "asyncio", "auto", "uvloop"],
                        help="[runtime] event_loop for the gateway (default: the gateway's own default)")
    parser.add_argument("--profile", default="", help="py-spy record the gateway during cells whose label "
                        "contains this text, into $TMPDIR/mdgate-profile-*.txt (development; needs py-spy)")
    args = parser.parse_args()
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mdgate-bench-") as tmpdir, \
            redis_server(Path(tmpdir) / "redis") as (redis_url, redis_pid):
        bench = Bench(args.quick, Path(tmpdir), redis_url, redis_pid)
        bench.args = args
        try:
            run(bench)
        finally:
            if bench.gw is not None:
                bench.gw.stop()
            for p in bench.feeds.values():
                p.stop()
    print(f"\n(total {time.monotonic() - t_start:.0f} s)", file=sys.stderr)


def run(b: Bench) -> None:
    """The phases, in order."""
    b.facts["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
    b.facts["redis_version"] = redis.Redis.from_url(b.redis_url).info("server")["redis_version"]
    urls = b.start_feeds()
    gw_port = free_port()
    b.gw = Gateway(gateway_config(gw_port, b.redis_url, urls["yahoo-gw"], urls["dhan-gw"], b.args.event_loop),
                   b.tmp)
    log = sys.stderr
    print("starting gateway", file=log, flush=True)
    b.facts["healthz_s"] = b.gw.start(gw_port)
    # subscribed everywhere
    deadline = time.monotonic() + 60
    while True:
        ys, ds = b.feed_state("yahoo-gw"), b.feed_state("dhan-gw")
        if ys["subscribed"] >= N_YAHOO and ds["subscribed"] >= N_DHAN:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateway did not subscribe everything: yahoo {ys} dhan {ds}")
        time.sleep(0.05)
    b.facts["subscribed_s"] = time.monotonic()
    b.facts["yahoo_connections"] = ys["connections"]
    time.sleep(0.5)
    b.facts["rss_idle_kib"] = proc_mem(b.gw.pid)["VmRSS"]

    everything = yahoo_names(N_YAHOO) + [n for n, _ in dhan_names(N_DHAN)]
    # warm-up
    b.stream({"yahoo-gw": 2000.0, "dhan-gw": 2000.0}, 1.0)

    counts = b.counts = [int(x) for x in b.args.counts.split(",")] if b.args.counts else (
        [1, 50] if b.quick else [1, 50, 200])
    rates: list[float | None] = [None if x == "max" else float(x) for x in b.args.rates.split(",")] \
        if b.args.rates else [1000.0, 10000.0, None]
    paced = [r for r in rates if r is not None]

    def both(n: int, r: float | None, cl: LineProc | None) -> None:
        half = None if r is None else r / 2
        b.measure(f"both, {n} clients, {'max' if r is None else f'{r:,.0f}/s'}",
                  {"yahoo-gw": half, "dhan-gw": half}, cl, n, "max" if r is None else f"{r:,.0f}")

    # 1. paced load first, so that the memory figure under paced load is not the blast's
    if paced:
        for n in counts:
            print(f"{n} client(s), paced", file=log, flush=True)
            cl = b.clients(n, everything)
            try:
                if n == 1:
                    b.measure(f"Yahoo only, 1 client, {PACED_COMPARE:,.0f}/s", {"yahoo-gw": PACED_COMPARE},
                              cl, n, f"{PACED_COMPARE:,.0f}")
                    b.measure(f"Dhan only, 1 client, {PACED_COMPARE:,.0f}/s", {"dhan-gw": PACED_COMPARE},
                              cl, n, f"{PACED_COMPARE:,.0f}")
                for r in paced:
                    both(n, r, cl)
            finally:
                cl.stop()
    b.facts["rss_paced_kib"] = proc_mem(b.gw.pid)["VmHWM"]
    # 2. blast: the feeds send as fast as their sockets take it
    if None in rates:
        print("ingest (no client), max", file=log, flush=True)
        b.measure("ingest only (Redis, no client), max", {"yahoo-gw": None, "dhan-gw": None}, None, 0, "max")
        for n in counts:
            print(f"{n} client(s), max", file=log, flush=True)
            cl = b.clients(n, everything)
            try:
                if n == 1:
                    b.measure("Yahoo only, 1 client, max", {"yahoo-gw": None}, cl, n, "max")
                    b.measure("Dhan only, 1 client, max", {"dhan-gw": None}, cl, n, "max")
                both(n, None, cl)
            finally:
                cl.stop()
    b.facts["rss_peak_kib"] = proc_mem(b.gw.pid)["VmHWM"]
    b.facts["rss_end_kib"] = proc_mem(b.gw.pid)["VmRSS"]

    if not b.args.no_alt:
        print("alternatives", file=log, flush=True)
        alternatives(b, urls)
    print("loss check", file=log, flush=True)
    loss_check(b)
    b.facts["stop_s"] = b.gw.stop()
    report(b)


def alternatives(b: Bench, urls: dict[str, str]) -> None:
    """yfinance and dhanhq decode-only, then the naive pipeline, on the alt feeds."""
    ysyms = [n.split(":")[1] for n in yahoo_names(N_ALT)]
    dcodes = [c for _, c in dhan_names(N_ALT)]
    env = {**os.environ, "DHAN_CLIENT_ID": DHAN_CLIENT_ID, "DHAN_ACCESS_TOKEN": DHAN_TOKEN}
    for sdk, key, codes in (("yfinance", "yahoo-alt", ysyms), ("dhanhq", "dhan-alt", dcodes),
                            ("mdgate-yahoo", "yahoo-alt", ysyms), ("mdgate-dhan", "dhan-alt", dcodes)):
        if importlib.util.find_spec(sdk.replace("-", "_")) is None:
            b.notes.append(f"{sdk} is not installed (pip install -e '.[dev]'): its rows are missing")
            continue
        p = LineProc(sdk, [PY, str(HERE / "_e2e_sdk.py"), sdk, urls[key], ",".join(codes)], env)
        try:
            p.expect("READY", 60)
            deadline = time.monotonic() + 30
            while b.feed_state(key)["subscribed"] < len(codes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{sdk} did not subscribe")
                time.sleep(0.05)
            for rate in (PACED_COMPARE, None):
                cpu0 = proc_cpu(p.proc.pid)
                p.send("start")
                sent, feed_secs = b.stream({key: rate}, b.seconds)
                res = json.loads(p.ask(f"stop {sent} 60", "RESULT"))
                cpu1 = proc_cpu(p.proc.pid)
                offered = "max" if rate is None else f"{rate:,.0f}"
                cell = Cell(f"{sdk} decode-only, {offered if rate is None else offered + '/s'}", 1, offered,
                            sent=sent)
                cell.delivered_rate = res["messages"] / res["window_s"]
                cell.feed_rate = sent / feed_secs
                cell.cpu_us = (cpu1 - cpu0) / max(res["messages"], 1) * 1e6
                cell.extra["decoded"] = res["messages"]
                b.cells.append(cell)
                print(f"  {cell.label}: {_fmt_cell(cell)}", file=sys.stderr, flush=True)
        finally:
            p.stop()
    # naive pipeline, one client
    names = [f"{n.split(':')[1]}={n}" for n in yahoo_names(N_ALT)]
    names += [f"{c}={n}" for n, c in dhan_names(N_ALT)]
    port = free_port()
    naive = LineProc("naive", [
        PY, str(HERE / "_e2e_naive.py"), "--port", str(port), "--redis", b.redis_url.replace("/0", "/1"),
        "--yahoo", urls["yahoo-alt"], "--yahoo-symbols", ",".join(ysyms), "--dhan", urls["dhan-alt"],
        "--dhan-codes", ",".join(dcodes), "--names", ",".join(names)], env)
    try:
        naive.expect("READY", 60)
        insts = yahoo_names(N_ALT) + [n for n, _ in dhan_names(N_ALT)]
        cl = b.clients(1, insts, port)
        try:
            for rate, label in ((1000.0, "1,000/s"), (None, "max")):
                half = None if rate is None else rate / 2
                cpu0 = proc_cpu(naive.proc.pid)
                rcpu0 = proc_cpu(b.redis_pid)
                cl.send("start")
                t0 = time.monotonic()
                sent, feed_secs = b.stream({"yahoo-alt": half, "dhan-alt": half}, b.seconds)
                res = json.loads(cl.ask(f"stop {sent} 120", "RESULT", 300))
                t1 = time.monotonic()
                cpu1 = proc_cpu(naive.proc.pid)
                rcpu1 = proc_cpu(b.redis_pid)
                cell = Cell(f"naive pipeline, 1 client, {label}", 1, label.replace("/s", ""), sent=sent)
                cell.delivered_rate = res["ticks"] / res["window_s"]
                cell.stored_rate = res["ticks"] / (t1 - t0)
                cell.per_client_rate = cell.delivered_rate
                cell.e2e_rate = cell.delivered_rate
                cell.p50, cell.p99, cell.pmax = res["p50"], res["p99"], res["max"]
                cell.int_p99 = res["int_p99"]
                cell.cpu_us = (cpu1 - cpu0) / max(res["ticks"], 1) * 1e6
                cell.redis_cpu_us = (rcpu1 - rcpu0) / max(res["ticks"], 1) * 1e6
                cell.feed_rate = sent / feed_secs
                cell.min_ratio = res["min_ticks"] / max(sent, 1)
                b.cells.append(cell)
                print(f"  {cell.label}: {_fmt_cell(cell)}", file=sys.stderr, flush=True)
        finally:
            cl.stop()
    finally:
        naive.proc.kill()
        naive.proc.wait()


def loss_check(b: Bench) -> None:
    """Read every tick stream back; every numbered tick must be stored exactly once."""
    r = redis.Redis.from_url(b.redis_url)
    y_sent = b.feed_state("yahoo-gw")["sent"]
    d_sent = b.feed_state("dhan-gw")["sent"]
    y_total = y_bad = 0
    for name in yahoo_names(N_YAHOO):
        seqs = [int(f[b"volume"]) for _, f in _xrange_all(r, f"mdgate:{{{name}}}:ticks")]
        y_total += len(seqs)
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            y_bad += 1
    d_seqs: list[int] = []
    for name, _ in dhan_names(N_DHAN):
        d_seqs.extend(int(f[b"volume"]) for _, f in _xrange_all(r, f"mdgate:{{{name}}}:ticks"))
    d_ok = sorted(d_seqs) == list(range(1, d_sent + 1))
    b.facts["loss"] = {
        "yahoo_sent": y_sent, "yahoo_stored": y_total, "yahoo_bad_symbols": y_bad,
        "dhan_sent": d_sent, "dhan_stored": len(d_seqs), "dhan_exact": d_ok,
        "ok": y_bad == 0 and y_total == y_sent and d_ok,
    }


def _xrange_all(r: redis.Redis, key: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    start = "-"
    while True:
        batch: list[tuple[bytes, dict[bytes, bytes]]] = r.xrange(key, start, "+", count=10000)  # type: ignore[assignment]
        if not batch:
            return
        yield from batch
        if len(batch) < 10000:
            return
        last = batch[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def report(b: Bench) -> None:
    """Print the markdown tables."""
    out: list[str] = []
    cells = {c.label: c for c in b.cells}
    out.append("| run | clients | offered ticks/s | ticks sent | stored ticks/s (→ Redis) "
               "| delivered ticks/s per client | delivered ticks/s, all clients "
               "| latency send → client p50 / p99 / max ms "
               "| gateway part p99 ms | gateway CPU µs/tick | redis-server CPU µs/tick | conflated |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in b.cells:
        if "decode-only" in c.label:
            continue
        lat = "n/a" if c.p50 is None else f"{_ms(c.p50)} / {_ms(c.p99)} / {_ms(c.pmax)}"
        per_client = f"{c.per_client_rate:,.0f}" if c.clients else "n/a"
        total = f"{c.delivered_rate:,.0f}" if c.clients else "n/a"
        out.append(f"| {c.label} | {c.clients} | {c.offered} | {c.sent:,} | {c.stored_rate:,.0f} | "
                   f"{per_client} | {total} | {lat} | {_ms(c.int_p99)} | {c.cpu_us:.1f} "
                   f"| {c.redis_cpu_us:.1f} | {c.conflated:,} |")
    out.append("")
    out.append("| alternative, decode only (no storage, no clients) | messages | decoded msgs/s "
               "| process CPU µs/msg | feed sent ticks/s |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for c in b.cells:
        if "decode-only" in c.label:
            out.append(f"| {c.label} | {c.extra['decoded']:,} | {c.delivered_rate:,.0f} | {c.cpu_us:.1f} | "
                       f"{c.feed_rate:,.0f} |")
    out.append("")
    out.append(f"| CPU per tick at the same paced rate ({PACED_COMPARE:,.0f} ticks/s, one provider) "
               "| mdgate µs/tick (Redis + 1 client) | alternative µs/tick (decode only) "
               "| alternative / mdgate | mdgate's own receive + decode alone µs/msg |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for sdk, prov in (("yfinance", "Yahoo"), ("dhanhq", "Dhan")):
        ca = cells.get(f"{prov} only, 1 client, {PACED_COMPARE:,.0f}/s")
        cb = cells.get(f"{sdk} decode-only, {PACED_COMPARE:,.0f}/s")
        own = cells.get(f"mdgate-{prov.lower()} decode-only, {PACED_COMPARE:,.0f}/s")
        if ca is not None and cb is not None:
            out.append(f"| mdgate {prov} / {sdk} | {ca.cpu_us:.1f} | {cb.cpu_us:.1f} | "
                       f"**{cb.cpu_us / max(ca.cpu_us, 1e-9):.1f}x** | "
                       f"{'n/a' if own is None else f'{own.cpu_us:.1f}'} |")
    out.append("")
    ratio_rows: list[tuple[str, str, str, str]] = [
        ("mdgate Yahoo (Redis + 1 client) / yfinance decode-only", "Yahoo only, 1 client, max",
         "yfinance decode-only, max", "3x"),
        ("mdgate Dhan (Redis + 1 client) / dhanhq decode-only", "Dhan only, 1 client, max",
         "dhanhq decode-only, max", "3x"),
        ("mdgate both (Redis + 1 client) / naive pipeline (Redis + 1 client)", "both, 1 clients, max",
         "naive pipeline, 1 client, max", "10x"),
    ]
    out.append("| ratio (same run, feeds blasting) | mdgate ticks/s | alternative ticks/s | ratio (target) "
               "| feed ticks/s (mdgate / alternative) | mdgate µs/tick | alternative µs/tick "
               "| ratio per CPU-second |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for text, a, alt, target in ratio_rows:
        if a in cells and alt in cells:
            ca, cb = cells[a], cells[alt]
            out.append(f"| {text} | {ca.e2e_rate:,.0f} | {cb.e2e_rate or cb.delivered_rate:,.0f} | "
                       f"**{ca.e2e_rate / max(cb.e2e_rate or cb.delivered_rate, 1):.1f}x** ({target}) | "
                       f"{ca.feed_rate:,.0f} / {cb.feed_rate:,.0f} | {ca.cpu_us:.1f} | {cb.cpu_us:.1f} | "
                       f"{cb.cpu_us / max(ca.cpu_us, 1e-9):.1f}x |")
    out.append("")
    f = b.facts
    loss = f.get("loss", {})
    out.append("| fact | value | target |")
    out.append("| --- | ---: | --- |")
    out.append(f"| process start → first `/healthz` 200 | {f['healthz_s'] * 1000:,.0f} ms | ≤ 1 s |")
    out.append(f"| RSS, 1,000 instruments subscribed (500 Yahoo on {f['yahoo_connections']} connections "
               f"+ 500 Dhan), idle | {f['rss_idle_kib'] / 1024:.1f} MiB | ≤ 64 MB |")
    one = cells.get("both, 1 clients, 10,000/s")
    if one is not None:
        out.append(f"| peak RSS (VmHWM) after 1,000 and 10,000 ticks/s with 1 client (1,000 instruments) "
                   f"| {one.extra['hwm_mib']:.1f} MiB | ≤ 64 MB |")
    out.append(f"| peak RSS (VmHWM) after the paced runs (≤ 10,000 ticks/s, up to {max(b.counts)} clients) "
               f"| {f['rss_paced_kib'] / 1024:.1f} MiB | ≤ 64 MB |")
    out.append(f"| peak RSS (VmHWM) after the blast runs | {f['rss_peak_kib'] / 1024:.1f} MiB | (buffers) |")
    p99 = cells.get("both, 50 clients, 10,000/s")
    if p99 is not None:
        out.append(f"| p99 latency at 10,000 ticks/s, 50 clients | {_ms(p99.p99)} ms | ≤ 10 ms |")
    for label in ("ingest only (Redis, no client), max", "both, 1 clients, max",
                  "both, 50 clients, 10,000/s"):
        shared = cells.get(label)
        if shared is not None and "cpu_share" in shared.extra:
            share = ", ".join(f"{k} {v:.2f}" for k, v in shared.extra["cpu_share"].items())
            out.append(f"| CPU (cores) used during \"{label}\" | {share} | 2 cores in all |")
    for n in b.counts:
        sub = f.get(f"subscribe_{n}")
        if sub is not None:
            out.append(f"| {n} client(s) subscribing 1,000 instruments each → snapshot received "
                       f"| {sub[0] * 1000:,.0f} ms (gateway CPU {sub[1] * 1000:,.0f} ms) | |")
    out.append(f"| loss check, Yahoo: ticks sent / stored, symbols with gaps or duplicates "
               f"| {loss.get('yahoo_sent', 0):,} / {loss.get('yahoo_stored', 0):,}, "
               f"{loss.get('yahoo_bad_symbols', '?')} | every tick stored once |")
    out.append(f"| loss check, Dhan: ticks sent / stored, sequence numbers exactly 1..sent "
               f"| {loss.get('dhan_sent', 0):,} / {loss.get('dhan_stored', 0):,}, "
               f"{'yes' if loss.get('dhan_exact') else 'NO'} | every tick stored once |")
    out.append(f"| SIGTERM → exit | {f.get('stop_s', 0) * 1000:,.0f} ms | ≤ 5 s |")
    out.append("")
    out.append(f"Machine: {platform.python_implementation()} {platform.python_version()}, "
               f"{os.cpu_count()} CPUs ({_cpu_model()}), redis-server {f.get('redis_version', '?')}; "
               f"{'--quick, ' if b.quick else ''}{b.seconds:g} s windows; "
               f"/tmp/mdgate_quiet present: {Path('/tmp/mdgate_quiet').exists()}; "
               f"load average at start {f.get('loadavg', '?')}.")
    for note in b.notes:
        out.append(f"Note: {note}")
    print("\n".join(out))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    main()
