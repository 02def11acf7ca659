"""
Alternating A/B rounds of the real daemon, for the overhead benchmarks
(``bench_metrics.py``, ``bench_record.py``): each round starts ``mdgate run``
with one variant's config and environment on the ``bench_e2e.py`` harness
(Redis, the Yahoo and Dhan fakes, 1,000 instruments, one measuring client)
and measures one paced window.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_e2e import (
    N_DHAN,
    N_YAHOO,
    Bench,
    Cell,
    Gateway,
    dhan_names,
    gateway_config,
    redis_server,
    yahoo_names,
)

from mdgate.testing.redis import free_port

EVERYTHING = yahoo_names(N_YAHOO) + [n for n, _ in dhan_names(N_DHAN)]


@contextlib.contextmanager
def harness(prefix: str, seconds: float) -> Iterator[tuple[Bench, dict[str, str]]]:
    """A Redis, the feeds and a :class:`Bench` with ``seconds`` windows; everything stopped after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmpdir, \
            redis_server(Path(tmpdir) / "redis") as (redis_url, redis_pid):
        b = Bench(False, Path(tmpdir), redis_url, redis_pid)
        b.seconds = seconds
        try:
            yield b, b.start_feeds()
        finally:
            if b.gw is not None:
                b.gw.stop()
            for p in b.feeds.values():
                p.stop()


def paced_round(
    b: Bench, urls: dict[str, str], label: str, rate: float, *, extra_config: str = "",
    extra_env: dict[str, str] | None = None, during: Callable[[Gateway], Any] | None = None,
) -> Cell:
    """
    One round: a gateway (its TOML plus ``extra_config``, its environment plus
    ``extra_env``) subscribed to every benchmark instrument, a warm-up, one
    client, then one window at ``rate`` ticks/s (half Yahoo, half Dhan);
    ``during(gateway)``, a context manager, runs around the window.
    """
    port = free_port()
    gw = Gateway(gateway_config(port, b.redis_url, urls["yahoo-gw"], urls["dhan-gw"]) + extra_config, b.tmp)
    gw.env.update(extra_env or {})
    gw.start(port)
    b.gw = gw
    try:
        deadline = time.monotonic() + 60
        while b.feed_state("yahoo-gw")["subscribed"] < N_YAHOO or \
                b.feed_state("dhan-gw")["subscribed"] < N_DHAN:
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not subscribe everything")
            time.sleep(0.05)
        b.stream({"yahoo-gw": 2000.0, "dhan-gw": 2000.0}, 1.0)  # warm-up
        cl = b.clients(1, EVERYTHING)
        try:
            with during(gw) if during is not None else contextlib.nullcontext():
                return b.measure(label, {"yahoo-gw": rate / 2, "dhan-gw": rate / 2}, cl, 1, f"{rate:,.0f}")
        finally:
            cl.stop()
    finally:
        gw.stop()
        b.gw = None


def cpu_table(label: str, rows: dict[str, list[float]]) -> list[str]:
    """Markdown rows: each side's gateway CPU per tick, round by round, and the median."""
    import statistics

    out = [f"| side | gateway CPU per {label}, each round (µs) | median (µs) |", "|---|---|---|"]
    for side, values in rows.items():
        out.append(f"| {side} | {', '.join(f'{x:.1f}' for x in values)} | {statistics.median(values):.1f} |")
    return out
