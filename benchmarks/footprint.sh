#!/usr/bin/env bash
# The runtime footprint README.md quotes: a fresh virtual environment with what
# `make demo` / `make run` install (the core and both plugins, no extras), in MB.
# Usage: benchmarks/footprint.sh   (run from the repository root; about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/mdgate-footprint-XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip 2>/dev/null
"$venv/bin/python" -m pip install -q -e . -e plugins/mdgate-yahoo -e plugins/mdgate-dhan 2>/dev/null
echo "runtime venv: $(du -sm "$venv" | cut -f1) MB ($(python3 --version), $(uname -m))"
echo "largest packages (MB):"
du -sm "$venv"/lib/python3*/site-packages/* | sort -rn | head -8
