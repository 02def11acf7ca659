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
from pathlib import Path

from _ab import cpu_table, harness, paced_round

from mdgate._recording.format import read_index

RATE = 10_000.0


def main() -> None:
    """Run the rounds and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side (default 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per round (default 8)")
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {"record": [], "plain": []}
    sizes: list[tuple[int, int, int]] = []
    with harness("mdgate-bench-record-", args.seconds) as (b, urls):
        for i in range(args.rounds):
            rec = b.tmp / f"rec{i}"
            cpu["record"].append(paced_round(b, urls, "record", RATE,
                                             extra_config=f'\n[record]\ndir = "{rec}"\n').cpu_us)
            index = read_index(Path(rec))
            sizes.append((index["frames"], sum(s["raw_bytes"] for s in index["segments"]),
                          sum(s["bytes"] for s in index["segments"])))
            cpu["plain"].append(paced_round(b, urls, "plain", RATE).cpu_us)
    on, off = statistics.median(cpu["record"]), statistics.median(cpu["plain"])
    print(f"## Recording overhead at {RATE:,.0f} frames/s (Redis + 1 client, 1,000 instruments)\n")
    print(f"{args.rounds} alternating rounds per side, {args.seconds:g} s windows.\n")
    print("\n".join(cpu_table("frame", cpu)))
    print(f"\nDifference of the medians: {on - off:+.1f} µs per frame ({(on - off) / off * 100:+.1f} %).\n")
    frames, raw, disk = (sum(x) for x in zip(*sizes, strict=True))
    print(f"Recorded {frames:,} frames (warm-up included): {raw / frames:.0f} bytes per frame before "
          f"compression, {disk / frames:.1f} on disk (zstandard level 3: {raw / disk:.1f}x).")


if __name__ == "__main__":
    main()
