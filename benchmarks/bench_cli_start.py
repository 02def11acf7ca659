"""
How long ``mdgate --help`` takes, start to exit (the command line's start-up: imports, plugin
discovery, help rendering), median of ``--runs`` after one warm-up run.

With ``--tree DIR`` the same is run against an earlier checkout (``PYTHONPATH`` pointing at its
sources and plugins, the same virtual environment), in turn with this tree, so that before and
after are measured in the same minute::

    git worktree add --detach /tmp/before 8319b1e
    .venv/bin/python benchmarks/bench_cli_start.py --tree /tmp/before

Python's bytecode cache matters: ``--bytecode env`` runs with the environment as it is (where
``PYTHONDONTWRITEBYTECODE=1`` is set, as in this project's sessions, every mdgate module is
compiled again at each start: mdgate is installed editable), ``--bytecode cached`` gives each
tree a bytecode cache of its own (``PYTHONPYCACHEPREFIX`` in a temporary directory, filled by
the warm-up run), as an installed package or a default Python environment has.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MDGATE = str(Path(sys.executable).parent / "mdgate")


def once(env: dict[str, str]) -> float:
    """Wall seconds of one ``mdgate --help``."""
    t0 = time.perf_counter()
    subprocess.run([MDGATE, "--help"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench_cli_start.py")
    p.add_argument("--runs", type=int, default=21)
    p.add_argument("--tree", type=Path, help="an earlier checkout to measure in turn with this one")
    p.add_argument("--bytecode", default="env", help="env, cached, or env,cached (see above)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mdgate-bench-cli-pyc-") as pyc:
        return _measure(args, Path(pyc))


def _measure(args: argparse.Namespace, pyc: Path) -> int:
    here = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    trees = {"this tree": here}
    if args.tree is not None:
        t = args.tree.resolve()
        path = f"{t}/src:{t}/plugins/mdgate-yahoo/src:{t}/plugins/mdgate-dhan/src"
        trees[str(t)] = {**here, "PYTHONPATH": path}
    envs: dict[str, dict[str, str]] = {}
    for mode in args.bytecode.split(","):
        for i, (name, env) in enumerate(trees.items()):
            if mode == "cached":
                env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
                env["PYTHONPYCACHEPREFIX"] = str(pyc / str(i))
            envs[f"{name}, {mode}"] = env
    times: dict[str, list[float]] = {name: [] for name in envs}
    for env in envs.values():
        once(env)  # warm-up: the page cache, the .pyc files
    for _ in range(args.runs):
        for name, env in envs.items():  # in turn: a drifting machine affects both alike
            times[name].append(once(env))
    for name, ts in times.items():
        print(f"mdgate --help, {name}: median {statistics.median(ts) * 1000:.0f} ms "
              f"(min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f}, {len(ts)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
