"""protocol.py stays sans-I/O: importing it loads no I/O or logging library."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("anyio", "websockets", "redis", "structlog", "yfinance", "pandas")


def test_protocol_import_loads_no_io_libraries() -> None:
    code = (
        "import json, sys\n"
        "import mdgate_yahoo.protocol\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == []


def test_plugin_import_loads_no_yfinance() -> None:
    code = (
        "import json, sys\n"
        "import mdgate_yahoo.plugin\n"
        "print(json.dumps([m for m in ('yfinance', 'pandas') if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == []
