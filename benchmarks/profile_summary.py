"""
Where a gateway's CPU goes, by step of the tick path, from a py-spy profile.

Reads the raw output of ``py-spy record --gil --format raw`` (one line per distinct stack:
``frame;frame;...;frame COUNT``, root first) and puts each sample in the first step, in this
order, whose code is on its stack. ``--gil`` keeps only samples that hold the GIL: Python
running. Without it, a thread blocked in ``epoll_wait`` or ``send`` (which release the GIL)
is counted as busy on this VM, and the event loop's wait looks like half the CPU; the
kernel's part (the system calls themselves) is measured apart (``perf``, or the
utime/stime split). The steps:

* **decode**: the provider plugin's decoder and the runtime's checks of its output;
* **fan-out**: the client server, the per-client outboxes and their writes;
* **Redis**: the tick store (batching, encoding, redis-py, hiredis);
* **pipeline**: the queue, numbering, the latest-tick table, the pipeline loop;
* **receive**: the provider connection loop, its transport, and the event loop's read
  callbacks (socket reads and the WebSocket library's frame parsing; a Redis reply read in
  such a callback counts here too);
* **event loop**: ``select`` and asyncio's scheduling of callbacks and tasks;
* **the rest**: status, logging, timers.

With ``--us-per-tick`` (the gateway CPU per tick the benchmark measured in the same cell)
each step's share is also given in µs per tick. Used for docs/benchmarks.md:

    .venv/bin/python benchmarks/bench_e2e.py --no-alt --counts 1 --rates 10000 \\
        --profile "both, 1 clients, 10,000"
    .venv/bin/python benchmarks/profile_summary.py $TMPDIR/mdgate-profile-both_1clients_10_000s.txt \\
        --us-per-tick 49.7

py-spy is in the ``dev`` extra (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

#: (step, substrings of a frame that put a sample in it), in priority order.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode", ("mdgate_yahoo/", "mdgate_dhan/", "mdgate/_providers/checks.py")),
    ("fan-out", ("mdgate/_serve/",)),
    ("Redis", ("mdgate/plugins/stores/", "redis/", "hiredis")),
    ("pipeline", ("mdgate/_pipeline.py", "mdgate/_seq.py", "mdgate/_latest.py", "mdgate/_queue.py")),
    # the provider connection loop, and what runs in the event loop's read callbacks: the
    # socket reads and the WebSocket library's frame parsing (the clients send next to nothing)
    ("receive", ("mdgate/_providers/connection.py", "mdgate/_providers/transport.py", "websockets/",
                 "_read_ready")),
    ("event loop (select, scheduling)", ("selectors.py", "asyncio/base_events.py", "asyncio/events.py")),
)
OTHER = "the rest (status, logging, timers)"


#: Leaf frames that are the event loop itself running C code (uvloop's loop: its ``epoll`` and
#: the scheduling of callbacks have no Python frame of their own).
LOOP_LEAVES: tuple[str, ...] = ("Runner.run (asyncio/runners.py", "run_until_complete (")


def classify(stack: str) -> str:
    """The step a sample with this stack (``frame;frame;...``, root first) belongs to."""
    leaf = stack.rpartition(";")[2]
    if leaf.startswith(LOOP_LEAVES):
        return STEPS[-1][0]
    for step, needles in STEPS:
        if any(n in stack for n in needles):
            return step
    return OTHER


def summarize(path: Path) -> tuple[Counter[str], int]:
    """Samples per step, and in all."""
    steps: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        steps[classify(stack)] += int(count)
    return steps, sum(steps.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="profile_summary.py")
    p.add_argument("profile", type=Path, help="py-spy record --format raw output")
    p.add_argument("--us-per-tick", type=float, help="gateway CPU per tick measured in the same cell")
    args = p.parse_args(argv)
    steps, total = summarize(args.profile)
    if not total:
        print("no samples")
        return 1
    head = "| step | share of the gateway's CPU |" + (" µs per tick |" if args.us_per_tick else "")
    print(head)
    print("| --- | ---: |" + (" ---: |" if args.us_per_tick else ""))
    for step in [s for s, _ in STEPS] + [OTHER]:
        share = steps[step] / total
        cells = f"| {step} | {share:.0%} |"
        if args.us_per_tick:
            cells += f" {share * args.us_per_tick:.1f} |"
        print(cells)
    print(f"\n{total} samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
