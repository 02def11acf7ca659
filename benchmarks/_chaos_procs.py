"""
The chaos soak's processes: ``mdgate run`` (the real executable) with its
configuration, and small loopback HTTP probes. Every process is started by
the soak and stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
#: The installed console script, as an operator runs it.
MDGATE: Final = str(Path(sys.executable).parent / "mdgate")
#: Source address of the soak's own probes (not the clients').
PROBE_ADDR: Final = "127.0.0.2"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


#: ``[server] max_clients_per_address`` of the soak's gateway.
MAX_CLIENTS_PER_ADDRESS: Final = 100


def gateway_config(*, port: int, redis_url: str, yahoo_url: str, dhan_url: str, token: str,
                   always: list[str], dhan_codes: dict[str, str]) -> str:
    """The soak's ``mdgate.toml``: both providers on the fakes, fast timings, tight client budget."""
    lines = [
        "[server]", 'host = "127.0.0.1"', f"port = {port}", f"tokens = [{json.dumps(token)}]",
        "drain_timeout = 4.0", f"max_clients_per_address = {MAX_CLIENTS_PER_ADDRESS}",
        "max_instruments_per_client = 1000", f"client_buffer_bytes = {1 << 20}", "",
        "[redis]", f'url = "{redis_url}"', "stream_maxlen = 50000000", "feed_maxlen = 50000000", "",
        "[runtime]", "backoff_initial = 0.05", "backoff_max = 1.0", "auth_retry = 2.0",
        "stall_timeout = 2.0", "failover_after = 2.0", "failback_after = 3.0", "stats_interval = 10.0",
        "shutdown_timeout = 10.0", "",
        "[subscriptions]", f"always = {json.dumps(always)}", "linger = 2.0", "",
        "[providers.yahoo]", f'url = "{yahoo_url}"', "stall_timeout = 2.0", "",
        "[providers.dhan]", f'url = "{dhan_url}"', "stall_timeout = 2.0", "",
        "[logging]", 'level = "info"', 'format = "json"', "",
        # no backfill: the fakes serve no REST, and the soak must reach loopback only
        "[backfill]", "enabled = false", "",
        # the fakes tick around the clock: stall detection must not wait for the markets to open
        *(line for x in ("NSE", "BSE", "NYSE", "NASDAQ")
          for line in (f"[calendars.{x}]", "always_open = true", "")),
    ]
    for name, code in dhan_codes.items():
        lines += [f'[instruments."{name}"]', f'dhan = "{code}"', ""]
    return "\n".join(lines)


class GatewayProcess:
    """``mdgate --config PATH run`` as a child process (dies with the soak)."""

    def __init__(self, config: str, tmp: Path, env: dict[str, str], *, name: str = "gateway",
                 args: tuple[str, ...] = ()) -> None:
        self.path = tmp / ("mdgate.toml" if name == "gateway" else f"{name}.toml")
        self.path.write_text(config)
        self.log = tmp / f"{name}.log"
        self.env = env
        #: Arguments after ``run`` (``--role ingest``).
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Spawn; return the PID."""
        with self.log.open("ab") as log:  # a restart appends
            self.proc = subprocess.Popen(
                [MDGATE, "--config", str(self.path), "run", *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                cwd=ROOT, preexec_fn=_die_with_parent,
            )
        return self.proc.pid

    @property
    def pid(self) -> int:
        """The gateway's PID."""
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit status, or None while running."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM, wait up to ``timeout`` s (then SIGKILL); return (exit status, seconds)."""
        if self.proc is None:
            return None, 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None, time.monotonic() - t0
        return self.proc.returncode, time.monotonic() - t0


def vm_rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def http_get(port: int, path: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on loopback from :data:`PROBE_ADDR`; (status, body). Raises on failure."""
    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(PROBE_ADDR, 0))
        try:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            return status, body
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.wait_for(go(), timeout)


async def status(port: int, token: str) -> dict[str, Any]:
    """The gateway's ``/status`` document."""
    code, body = await http_get(port, "/status", token, timeout=5.0)
    if code != 200:
        raise RuntimeError(f"/status answered HTTP {code}")
    doc: dict[str, Any] = json.loads(body)
    return doc


def gateway_env(client_id: str, token: str) -> dict[str, str]:
    """The gateway's environment: Dhan credentials, both plugins only, no inherited mdgate settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    env.update({"DHAN_CLIENT_ID": client_id, "DHAN_ACCESS_TOKEN": token, "MDGATE_LOAD_PLUGINS": "yahoo,dhan"})
    return env
