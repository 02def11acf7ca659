"""The sans-I/O boundary: protocol.py imports no I/O, logging or SDK library."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ["anyio", "websockets", "redis", "structlog", "httpx", "dhanhq", "asyncio"]


def test_protocol_import_loads_no_io_library() -> None:
    code = (
        "import json, sys\n"
        "import mdgate_dhan.protocol\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == []
