"""
Memory and CPU of many clients subscribing to many instruments (issue 17).

A client server (:class:`mdgate._serve.server.ClientServer` with the real
fan-out, outboxes, resume path and :class:`mdgate._latest.LatestTicks`
snapshot) runs in a subprocess of its own, its latest-tick table filled with
one tick per instrument; subscriptions are accepted without routing (the
subscription manager is not measured here). Then N clients in another process
(``_e2e_clients.py``, the end-to-end benchmark's clients) each subscribe to
every instrument in one request and wait for their snapshot.

Printed: the server's RSS before, its peak (VmHWM) and RSS after the burst,
the server's CPU for the whole burst and the time until every client had its
snapshot. ``--rate`` keeps ticks flowing meanwhile (published in batches every
millisecond), so that snapshots are built while the table moves.
``--trace`` runs the server under ``tracemalloc`` and prints what is still
allocated per client after the burst (by line), which is what grows with the
client count.

Command::

    .venv/bin/python benchmarks/bench_fanout_memory.py --clients 200 --instruments 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable


def _mem(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def names(n: int) -> list[str]:
    """``n`` instrument names, half NASDAQ, half NSE."""
    half = n // 2
    return ([f"NASDAQ:YB{i:04d}" for i in range(1, half + 1)]
            + [f"NSE:DB{i:04d}" for i in range(1, n - half + 1)])


# -- the server process ---------------------------------------------------------


class _Interest:
    def acquire(self, instrument: str) -> bool:
        return True

    def release(self, instrument: str) -> None:
        return None


def _tick(name: str, i: int, now: int) -> Any:
    from mdgate._model import Tick
    return Tick(name, 100.0 + (i % 97) / 4, now, now, "bench", size=10 + i % 7, volume=1000 + i,
                bid=99.5, ask=100.5, bid_size=5, ask_size=7, seq=i + 1)


async def _serve(args: argparse.Namespace) -> None:
    import gc

    import anyio

    from mdgate._config import ServerSettings
    from mdgate._latest import LatestTicks
    from mdgate._serve.backends import Backends
    from mdgate._serve.fanout import Fanout
    from mdgate._serve.server import ClientServer
    from mdgate.plugins.stores.memory_store import MemoryStore

    insts = names(args.instruments)
    now = int(time.time() * 1000)
    latest = LatestTicks(_tick(n, i, now) for i, n in enumerate(insts))
    settings = ServerSettings(host="127.0.0.1", port=0, max_clients=args.clients + 10,
                              max_clients_per_address=args.clients + 10)
    fanout = Fanout(settings.max_ticks_per_frame, framed=not settings.compression)

    async def snapshot(wanted: Any) -> Any:
        return await latest.snapshot(wanted, None)

    server = ClientServer(settings, Backends(fanout, _Interest(), snapshot, MemoryStore(),
                                             lambda **_: {}))

    async def publish() -> None:
        i, per = 0, max(1, round(args.rate / 1000))
        while True:
            await anyio.sleep(0.001)
            t = int(time.time() * 1000)
            batch = [_tick(insts[(i + k) % len(insts)], i + k, t) for k in range(per)]
            i += per
            latest.advance(batch)
            fanout.publish(batch)

    async with anyio.create_task_group() as tg:
        port = await tg.start(server.run)
        if args.rate:
            tg.start_soon(publish)
        gc.collect()
        gc.freeze()
        if args.trace:
            import tracemalloc
            tracemalloc.start(1)
        print(f"PORT {port}", flush=True)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        base = None
        at_peak: list[Any] = [None, 0]

        async def watch_peak() -> None:  # tracemalloc: keep a snapshot of the fullest moment seen
            import tracemalloc
            while True:
                await anyio.sleep(0.01)
                current = tracemalloc.get_traced_memory()[0]
                if base is not None and current > at_peak[1]:
                    at_peak[:] = [tracemalloc.take_snapshot(), current]

        if args.trace:
            tg.start_soon(watch_peak)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            if line == "mark" and args.trace:
                import tracemalloc
                base = tracemalloc.take_snapshot()
                tracemalloc.reset_peak()
                print("MARKED", flush=True)
            elif line == "trace" and args.trace:
                import tracemalloc
                gc.collect()
                snap = tracemalloc.take_snapshot()
                top = snap.compare_to(base, "lineno") if base is not None else []
                rows = [{"where": str(s.traceback[0]), "bytes": s.size_diff, "count": s.count_diff}
                        for s in top[:args.top] if s.size_diff > 0]
                current, peak = tracemalloc.get_traced_memory()
                rows.append({"where": "ALL (net growth)", "bytes": sum(st.size_diff for st in top),
                             "count": sum(st.count_diff for st in top)})
                if at_peak[0] is not None:
                    rows += [{"where": "AT PEAK " + str(st.traceback[0]), "bytes": st.size_diff,
                              "count": st.count_diff}
                             for st in at_peak[0].compare_to(base, "lineno")[:args.top] if st.size_diff > 0]
                print("TRACE " + json.dumps({"rows": rows, "current": current, "peak": peak}), flush=True)
        tg.cancel_scope.cancel()


# -- the driver -----------------------------------------------------------------


def _expect(proc: subprocess.Popen[str], prefix: str, timeout: float = 180.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process ended before {prefix!r}")
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise TimeoutError(prefix)


def _say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def main() -> None:
    """Run the burst and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--instruments", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.0, help="ticks/s published during the burst (0: none)")
    p.add_argument("--rounds", type=int, default=1, help="bursts, each with a fresh server")
    p.add_argument("--trace", action="store_true", help="tracemalloc in the server: what stays per client")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args))
        return
    for rnd in range(args.rounds):
        _round(args, rnd)


def _round(args: argparse.Namespace, rnd: int) -> None:
    argv = [PY, __file__, "--serve", "--clients", str(args.clients), "--instruments", str(args.instruments),
            "--rate", str(args.rate), "--top", str(args.top)] + (["--trace"] if args.trace else [])
    server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = None
    try:
        port = int(_expect(server, "PORT "))
        time.sleep(0.3)
        if args.trace:
            _say(server, "mark")
            _expect(server, "MARKED")
        before, cpu0, t0 = _mem(server.pid), _cpu(server.pid), time.monotonic()
        clients = subprocess.Popen(
            [PY, str(HERE / "_e2e_clients.py"), "--port", str(port), "--clients", str(args.clients),
             "--instruments", ",".join(names(args.instruments))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _expect(clients, "READY")
        took, cpu = time.monotonic() - t0, _cpu(server.pid) - cpu0
        time.sleep(0.3)
        after = _mem(server.pid)
        print(f"round {rnd + 1}: {args.clients} clients x {args.instruments} instruments, "
              f"rate {args.rate:,.0f}/s: "
              f"snapshot received by all in {took * 1000:,.0f} ms, server CPU {cpu * 1000:,.0f} ms; "
              f"RSS before {before['VmRSS']:.1f} MiB, peak {after['VmHWM']:.1f} MiB, "
              f"after {after['VmRSS']:.1f} MiB", flush=True)
        if args.trace:
            _say(server, "trace")
            doc = json.loads(_expect(server, "TRACE "))
            print(f"  traced by Python: {doc['current'] / 2**20:.1f} MiB now, "
                  f"peak {doc['peak'] / 2**20:.1f} MiB; "
                  f"still allocated after the burst, per client (top {args.top} lines):")
            for r in doc["rows"]:
                print(f"  {r['bytes'] / args.clients:>10,.0f} B {r['count'] / args.clients:>8,.1f} blocks  "
                      f"{r['where']}")
    finally:
        if clients is not None:
            _say(clients, "quit")
            clients.wait(10)
        _say(server, "quit")
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
