"""
What ``/metrics`` costs: the instrumentation on the tick path and the scrape.

Two measurements, both printed as markdown:

1. **In the real daemon, A/B.** The end-to-end harness of ``bench_e2e.py``
   (``mdgate run`` as a subprocess, Redis, the Yahoo and Dhan fakes, one
   measuring client subscribed to all 1,000 instruments) at a paced
   10,000 ticks/s, in alternating rounds: *on* (as shipped, with a scraper
   fetching ``/metrics`` every second, 15 times more often than the usual
   interval) and *off* (the same gateway started with a ``sitecustomize``
   that turns the histogram observations into no-ops, and nobody scraping).
   The overhead is the difference of the medians of gateway CPU per tick.
   Rounds alternate so that the machine's drift hits both sides alike.
2. **Per operation, in-process**: the cost of each observation the tick
   path makes (provider latency per tick, in batches of 1 and of 100; tick
   age per write to a client socket) and of rendering ``/metrics`` once,
   set against the gateway CPU per tick measured in part 1.

Usage: ``.venv/bin/python benchmarks/bench_metrics.py [--rounds N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Iterator

from _ab import cpu_table, harness, paced_round
from bench_e2e import Bench, Gateway, http_get

RATE = 10_000.0
#: Turns the tick-path observations off in the gateway it is put in front of (PYTHONPATH).
SITECUSTOMIZE = """
import mdgate._histogram, mdgate._stats
mdgate._histogram.Histogram.observe = lambda self, value: None
mdgate._stats.ProviderLatency.observe = lambda self, batch: None
"""


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds until stopped; counts scrapes and bytes."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.stop = threading.Event()
        self.scrapes = 0
        self.bytes = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            code, body = http_get(self.port, "/metrics")
            if code != 200:
                raise RuntimeError(f"/metrics: HTTP {code}")
            self.scrapes += 1
            self.bytes = len(body)


@contextlib.contextmanager
def scraped(b: Bench, gw: Gateway) -> Iterator[None]:
    """Scrape ``/metrics`` every second while the window runs."""
    scraper = Scraper(gw.port, 1.0)
    scraper.start()
    try:
        yield
    finally:
        scraper.stop.set()
        scraper.join()
        b.facts["scrapes"] = b.facts.get("scrapes", 0) + scraper.scrapes
        b.facts["page_bytes"] = scraper.bytes


def one_round(b: Bench, urls: dict[str, str], off: bool) -> float:
    """Gateway CPU per tick (µs) in one window, metrics on (scraped) or off."""
    if off:
        shim = b.tmp / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = {"PYTHONPATH": f"{shim}:{os.environ.get('PYTHONPATH', '')}"}
        return paced_round(b, urls, "metrics off", RATE, extra_env=env).cpu_us
    return paced_round(b, urls, "metrics on", RATE, during=lambda gw: scraped(b, gw)).cpu_us


def per_operation() -> dict[str, float]:
    """Microseconds per observation and per render, in this process."""
    from mdgate._config import Settings
    from mdgate._histogram import MS_BOUNDS, Histogram
    from mdgate._model import Tick
    from mdgate._stats import ProviderLatency
    from mdgate.testing import settings_from_toml

    now = int(time.time() * 1000)
    lat = ProviderLatency()
    one = [Tick("NASDAQ:AAPL", 190.0, now - 40, now, "YF")]
    hundred = [Tick(f"NSE:S{i}", 100.0, now - 7 - i % 50, now, "DH" if i % 2 else "YF") for i in range(100)]
    age = Histogram(MS_BOUNDS, scale=0.001)
    n = 200_000
    out = {
        "latency, batch of 1 (per tick)":
            min(timeit.repeat(lambda: lat.observe(one), number=n, repeat=5)) / n,
        "latency, batch of 100 (per tick)":
            min(timeit.repeat(lambda: lat.observe(hundred), number=n // 100, repeat=5)) / n,
        "tick age, per client write": min(timeit.repeat(lambda: age.observe(time.time() * 1000 - now),
                                                        number=n, repeat=5)) / n,
    }
    from mdgate._app import Gateway as InProcess
    from mdgate._providers.registry import load_registry

    settings: Settings = settings_from_toml("[subscriptions]\nalways = []\n", {})
    gw = InProcess(settings, load_registry({}, entry_points=False))
    gw.pipeline_stats.latency.observe(hundred)
    gw.render_metrics()  # the first call imports prometheus_client
    out["render /metrics (one scrape)"] = min(timeit.repeat(gw.render_metrics, number=50, repeat=5)) / 50
    return {k: v * 1e6 for k, v in out.items()}


def main() -> None:
    """Run both parts and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side (default 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per round (default 8)")
    args = parser.parse_args()
    ops = per_operation()
    sides = ("on (as shipped, scraped)", "off (observations no-op, not scraped)")
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    with harness("mdgate-bench-metrics-", args.seconds) as (b, urls):
        for _ in range(args.rounds):
            for side, off in zip(cpu, (False, True), strict=True):
                cpu[side].append(one_round(b, urls, off))
    on, off = (statistics.median(v) for v in cpu.values())
    print(f"## Metrics overhead at {RATE:,.0f} ticks/s (Redis + 1 client, 1,000 instruments)\n")
    print(f"{args.rounds} alternating rounds per side, {args.seconds:g} s windows; "
          f"`/metrics` scraped every 1 s while on ({b.facts.get('scrapes', 0)} scrapes, "
          f"{b.facts.get('page_bytes', 0):,} bytes a page).\n")
    print("\n".join(cpu_table("tick", cpu)))
    print(f"\nDifference of the medians: {on - off:+.1f} µs per tick ({(on - off) / off * 100:+.1f} %).\n")
    print("| operation | µs | share of the gateway's CPU per tick at this rate |")
    print("|---|---|---|")
    for name, us in ops.items():
        if name.startswith("render"):
            share = us / (RATE * 15) / on * 100  # one scrape every 15 s, spread over the ticks
            print(f"| {name} | {us:.0f} | {share:.3f} % (scraped every 15 s) |")
        else:
            print(f"| {name} | {us:.3f} | {us / on * 100:.2f} % |")
    print(f"\n(python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
