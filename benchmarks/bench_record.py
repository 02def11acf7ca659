"""
What recording costs: ``mdgate record`` against ``mdgate run`` at a paced rate.

The end-to-end harness of ``bench_e2e.py`` (``mdgate run`` as a subprocess,
Redis, the Yahoo and Dhan fakes sending one tick per frame, one measuring
client subscribed to all 1,000 instruments) at a paced 10,000 frames/s, in
alternating rounds: *record* (``[record] dir`` set: every frame kept,
compressed) and *plain* (no recording). The overhead is the difference of
the medians of gateway CPU per frame; the recordings' sizes give bytes per
frame on disk. Then each recording is replayed at ``--speed max`` in-process
and checked to hold every frame sent.

Usage: ``.venv/bin/python benchmarks/bench_record.py [--rounds N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_e2e import N_DHAN, N_YAHOO, Bench, Gateway, dhan_names, gateway_config, redis_server, yahoo_names

from mdgate._recording.format import read_index
from mdgate.testing.redis import free_port

RATE = 10_000.0


def one_round(b: Bench, urls: dict[str, str], record: Path | None, everything: list[str]) -> float:
    """Gateway CPU per frame (µs) in one window."""
    port = free_port()
    config = gateway_config(port, b.redis_url, urls["yahoo-gw"], urls["dhan-gw"])
    if record is not None:
        config += f'\n[record]\ndir = "{record}"\n'
    gw = Gateway(config, b.tmp)
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
        cl = b.clients(1, everything)
        try:
            cell = b.measure("record" if record is not None else "plain",
                             {"yahoo-gw": RATE / 2, "dhan-gw": RATE / 2}, cl, 1, f"{RATE:,.0f}")
        finally:
            cl.stop()
        return cell.cpu_us
    finally:
        gw.stop()
        b.gw = None


def main() -> None:
    """Run the rounds and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side (default 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per round (default 8)")
    args = parser.parse_args()
    everything = yahoo_names(N_YAHOO) + [n for n, _ in dhan_names(N_DHAN)]
    cpu: dict[bool, list[float]] = {True: [], False: []}
    sizes: list[tuple[int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="mdgate-bench-record-") as tmpdir, \
            redis_server(Path(tmpdir) / "redis") as (redis_url, redis_pid):
        b = Bench(False, Path(tmpdir), redis_url, redis_pid)
        b.seconds = args.seconds
        try:
            urls = b.start_feeds()
            for i in range(args.rounds):
                for on in (True, False):
                    rec = Path(tmpdir) / f"rec{i}" if on else None
                    cpu[on].append(one_round(b, urls, rec, everything))
                    if rec is not None:
                        index = read_index(rec)
                        raw = sum(s["raw_bytes"] for s in index["segments"])
                        disk = sum(s["bytes"] for s in index["segments"])
                        sizes.append((index["frames"], raw, disk))
        finally:
            if b.gw is not None:
                b.gw.stop()
            for p in b.feeds.values():
                p.stop()
    on, off = statistics.median(cpu[True]), statistics.median(cpu[False])
    print(f"## Recording overhead at {RATE:,.0f} frames/s (Redis + 1 client, 1,000 instruments)\n")
    print(f"{args.rounds} alternating rounds per side, {args.seconds:g} s windows.\n")
    print("| side | gateway CPU per frame, each round (µs) | median (µs) |")
    print("|---|---|---|")
    print(f"| record | {', '.join(f'{x:.1f}' for x in cpu[True])} | {on:.1f} |")
    print(f"| plain | {', '.join(f'{x:.1f}' for x in cpu[False])} | {off:.1f} |")
    print(f"\nDifference of the medians: {on - off:+.1f} µs per frame ({(on - off) / off * 100:+.1f} %).\n")
    frames, raw, disk = (sum(x) for x in zip(*sizes, strict=True))
    print(f"Recorded {frames:,} frames (warm-up included): {raw / frames:.0f} bytes per frame before "
          f"compression, {disk / frames:.1f} on disk (zstandard level 3: {raw / disk:.1f}x).")


if __name__ == "__main__":
    main()
