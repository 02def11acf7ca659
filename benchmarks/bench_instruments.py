"""
How mdgate scales with the number of instruments: start-up time and memory with N Dhan
instruments always subscribed.

Everything on loopback, each part in its own process:

* a throw-away ``redis-server`` (``mdgate.testing.redis``: free port, no persistence);
* a fake Dhan server (``mdgate_dhan.testing.FakeDhanServer`` in ``_e2e_feeds.py``: Dhan's
  limits, 5,000 instruments per connection and 5 connections);
* ``python -m mdgate --config <tmp toml> run`` with N instruments ``NSE:DB00001…`` in
  ``[subscriptions] always``, their Dhan codes in ``[instruments]``; the gateway opens
  ceil(N / 5000) connections by itself (the spec's ``max_per_connection``).

Measured per run: process start → first ``/healthz`` 200; process start → every instrument
subscribed (``/status`` shows N Dhan subscriptions on the expected number of connections and
the fake server has received all N); the gateway's CPU until then; ``VmRSS`` and ``VmHWM``
after ``--idle`` seconds idle. Each figure is the median of ``--runs`` runs (a fresh gateway,
Redis and feed each run). Every process is stopped by its PID.

Python's bytecode cache matters to start-up: ``--bytecode env`` runs the gateway with the
environment as it is (where ``PYTHONDONTWRITEBYTECODE=1`` is set, as in this project's
sessions, every mdgate module is compiled again at each start: mdgate is installed editable);
``--bytecode cached`` gives it a bytecode cache of its own (``PYTHONPYCACHEPREFIX`` in a
temporary directory, filled by one start that is not counted), as an installed package has.

Usage::

    .venv/bin/python benchmarks/bench_instruments.py --instruments 1000,25000 --runs 3
    mkdir /tmp/before && git archive 5e2f378 | tar -x -C /tmp/before   # before and after, same minutes
    .venv/bin/python benchmarks/bench_instruments.py --tree /tmp/before        # then this tree, in turn
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_e2e import PY, Gateway, LineProc, proc_cpu, proc_mem, redis_server

from mdgate.testing.redis import free_port

HERE = Path(__file__).resolve().parent
#: Dhan's limit per connection (the spec's ``max_per_connection``).
PER_CONNECTION = 5000


def names(n: int) -> list[tuple[str, str]]:
    """N benchmark instruments with their Dhan codes (``NSE:DB00001`` -> ``NSE_EQ:100001``)."""
    return [(f"NSE:DB{i:05d}", f"NSE_EQ:{100000 + i}") for i in range(1, n + 1)]


def config(n: int, port: int, redis_url: str, dhan_url: str) -> str:
    """The gateway's TOML: Dhan on the fake, N instruments always on."""
    pairs = names(n)
    lines = [
        "[server]", 'host = "127.0.0.1"', f"port = {port}", "",
        "[redis]", f'url = "{redis_url}"', "",
        "[subscriptions]", f"always = {json.dumps([name for name, _ in pairs])}", "",
        "[providers.dhan]", f'url = "{dhan_url}"', "",
        # Yahoo gets no instrument here; its URL is on loopback all the same (never the Internet).
        "[providers.yahoo]", f'url = "ws://127.0.0.1:{free_port()}"', "",
        "[logging]", 'level = "warning"', "",
    ]
    for name, code in pairs:
        lines += [f'[instruments."{name}"]', f'dhan = "{code}"', ""]
    return "\n".join(lines)


@contextlib.contextmanager
def dhan_feed() -> Iterator[tuple[LineProc, str]]:
    """The fake Dhan server in its own process: (process, url)."""
    feed = LineProc("dhan", [PY, str(HERE / "_e2e_feeds.py"), "dhan"])
    try:
        yield feed, feed.expect("READY", 30)
    finally:
        feed.stop()


def all_subscribed(gw: Gateway, feed: LineProc, n: int, timeout: float) -> float:
    """Wait until every instrument is subscribed; return the monotonic time it was seen."""
    want_conns = math.ceil(n / PER_CONNECTION)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dhan: dict[str, Any] = gw.status().get("providers", {}).get("dhan", {})
        if dhan.get("subscriptions") == n and dhan.get("connections") == want_conns:
            state = json.loads(feed.ask("state", "STATE", 10))
            if state["subscribed"] == n:
                return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"not all {n} instruments subscribed within {timeout} s: {dhan}")


def one_run(
    n: int, idle: float, tmp: Path, pycache: Path | None, tree: Path | None = None,
) -> dict[str, float]:
    """One fresh Redis + feed + gateway with N instruments (``tree``: an earlier checkout's); its figures."""
    with redis_server(tmp / "redis") as (redis_url, _), dhan_feed() as (feed, dhan_url):
        port = free_port()
        gw = Gateway(config(n, port, redis_url, dhan_url), tmp)
        if pycache is not None:
            gw.env.pop("PYTHONDONTWRITEBYTECODE", None)
            gw.env["PYTHONPYCACHEPREFIX"] = str(pycache)
        if tree is not None:  # an earlier checkout's sources, the same virtual environment
            gw.env["PYTHONPATH"] = os.pathsep.join(
                str(tree / d) for d in ("src", "plugins/mdgate-yahoo/src", "plugins/mdgate-dhan/src"))
        try:
            t0 = time.monotonic()
            healthz = gw.start(port)
            done = all_subscribed(gw, feed, n, timeout=120)
            cpu = proc_cpu(gw.pid)
            time.sleep(idle)
            mem = proc_mem(gw.pid)
        finally:
            gw.stop()
            if gw.proc is not None and gw.proc.poll() is None:
                gw.proc.kill()
                gw.proc.wait()
    return {"healthz_ms": healthz * 1000, "subscribed_ms": (done - t0) * 1000, "cpu_ms": cpu * 1000,
            "rss_mib": mem["VmRSS"] / 1024, "hwm_mib": mem["VmHWM"] / 1024}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one markdown row per instrument count."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench_instruments.py")
    p.add_argument("--instruments", default="1000,25000", help="comma-separated counts")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--idle", type=float, default=2.0, help="seconds idle before reading memory")
    p.add_argument("--bytecode", default="env,cached",
                   help="env (the environment as it is), cached (a bytecode cache of its own), or both")
    p.add_argument("--tree", type=Path, action="append", default=[],
                   help="another checkout to measure in turn (its sources, this venv); repeatable")
    p.add_argument("--no-this-tree", action="store_true", help="measure the --tree checkouts only")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.instruments.split(",")]
    trees: list[tuple[str, Path | None]] = [(str(t), t.resolve()) for t in args.tree]
    if not args.no_this_tree:
        trees.append(("this tree", None))
    variants = [(f"{mode}, {name}" if args.tree else mode, tree, mode)
                for (name, tree), mode in itertools.product(trees, args.bytecode.split(","))]
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mdgate-bench-pyc-") as pyc:
        caches = {label: Path(pyc) / str(i) if mode == "cached" else None
                  for i, (label, _, mode) in enumerate(variants)}
        for label, tree, _ in variants:
            if caches[label] is not None:  # fill the cache: one start not counted
                with tempfile.TemporaryDirectory(prefix="mdgate-bench-inst-") as tmpdir:
                    one_run(counts[0], 0.0, Path(tmpdir), caches[label], tree)
        # in turn, run by run: a machine whose load drifts affects every variant alike
        for n, i, (label, tree, _) in itertools.product(counts, range(args.runs), variants):
            with tempfile.TemporaryDirectory(prefix="mdgate-bench-inst-") as tmpdir:
                r = one_run(n, args.idle, Path(tmpdir), caches[label], tree)
            results.setdefault((n, label), []).append(r)
            figures = ", ".join(f"{k}={v:,.1f}" for k, v in r.items())
            print(f"{label} N={n} run {i + 1}: {figures}", flush=True)
    rows: list[str] = []
    for (n, label), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append(f"| {n:,} | {label} | {math.ceil(n / PER_CONNECTION)} | {med['healthz_ms']:,.0f} | "
                    f"{med['subscribed_ms']:,.0f} | {med['cpu_ms']:,.0f} | {med['rss_mib']:.1f} | "
                    f"{med['hwm_mib']:.1f} |")
    print()
    print(f"Median of {args.runs} runs; Python {sys.version.split()[0]}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} in the environment.")
    print()
    print("| instruments | bytecode | connections | start → /healthz 200 ms | start → all subscribed ms | "
          "gateway CPU until then ms | VmRSS idle MiB | VmHWM MiB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
