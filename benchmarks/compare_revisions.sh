#!/usr/bin/env bash
# Run the decoder and end-to-end benchmarks of an earlier commit and of the
# working tree in turn, ROUNDS times, on the same machine and venv.
#
#   benchmarks/compare_revisions.sh REV [ROUNDS] [OUT_DIR]
#
# The earlier commit is checked out in a temporary git worktree and run with
# PYTHONPATH pointing at its sources (core and both plugins), so one .venv
# serves both. Outputs: OUT_DIR/{dhan,yahoo,store_write,e2e}_{old,new}N.txt (default
# OUT_DIR: bench-compare/ in the working tree, git-ignored). Compare the
# same cell across rounds: on a shared 2-core machine one run's noise can be
# 20 % and more, so read the spread, not one pair.
set -euo pipefail
rev=${1:?usage: compare_revisions.sh REV [ROUNDS] [OUT_DIR]}
rounds=${2:-2}
root=$(git rev-parse --show-toplevel)
out=${3:-$root/bench-compare}
py=$root/.venv/bin/python
old=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$old" >/dev/null 2>&1 || true' EXIT
git -C "$root" worktree add --detach --force "$old" "$rev" >/dev/null
oldpath=$old/src:$old/plugins/mdgate-yahoo/src:$old/plugins/mdgate-dhan/src
mkdir -p "$out"
for n in $(seq 1 "$rounds"); do
  for which in old new; do
    if [ "$which" = old ]; then pp=$oldpath; bench=$old/benchmarks; else pp=; bench=$root/benchmarks; fi
    echo "round $n: $which" >&2
    PYTHONPATH=$pp "$py" "$bench/bench_dhan_decode.py" >"$out/dhan_$which$n.txt" 2>&1
    PYTHONPATH=$pp "$py" "$bench/bench_yahoo_decode.py" >"$out/yahoo_$which$n.txt" 2>&1
    # this tree's script for both: it imports either layout
    PYTHONPATH=$pp "$py" "$root/benchmarks/bench_store_write.py" >"$out/store_write_$which$n.txt" 2>&1
    PYTHONPATH=$pp "$py" "$bench/bench_e2e.py" --quick --no-alt >"$out/e2e_$which$n.txt" 2>&1
  done
done
echo "results in $out" >&2
