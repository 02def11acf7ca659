"""
``mdgate run`` under a low open-files limit, flooded with sockets: it lowers
``max_clients`` to what fits, keeps its sockets under the limit (no accept()
error storm in the log) and keeps answering ``/healthz``.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time

import httpx

NOFILE = 256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limit_files() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _healthz(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code


def test_socket_flood_at_the_file_limit_healthz_answers_log_stays_quiet(tmp_path):
    port = _free_port()
    config = tmp_path / "mdgate.toml"
    config.write_text(f'[server]\nport = {port}\n[providers.example]\nurl = "ws://127.0.0.1:9"\n'
                      '[logging]\nformat = "json"\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    environ["MDGATE_LOAD_PLUGINS"] = "example"
    log = tmp_path / "gateway.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mdgate", "--config", str(config), "run"],
                                stdout=subprocess.DEVNULL, stderr=err, env=environ, preexec_fn=_limit_files)
    flood: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if _healthz(port) == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(3 * NOFILE):  # far more sockets than the daemon has file descriptors
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))  # all at once; the kernel completes them
            flood.append(s)
        # while the daemon is still accepting the flood, a request can be the oldest socket that has
        # not spoken yet and be dropped with it: wait for the storm to pass (on a loaded machine it
        # takes longer than the second it takes here), then /healthz must answer every time
        settle = time.monotonic() + 15
        while True:
            try:
                assert _healthz(port) == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < settle, "the daemon never answered /healthz under the flood"
                time.sleep(0.2)
        for _ in range(5):
            assert _healthz(port) == 200
        status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=3).json()["server"]
        assert status["max_clients"] < NOFILE // 2
        assert status["refused"]["sockets"] > 0
        assert status["sockets"] <= NOFILE // 2
    finally:
        for s in flood:
            s.close()
        proc.terminate()
        proc.wait(10)
    events = [json.loads(line).get("event") for line in log.read_text().splitlines() if line.startswith("{")]
    assert "max_clients_lowered" in events
    assert events.count("client_socket_dropped") <= 2  # rate-limited: one line per 10 s
    assert "socket.accept() out of system resource" not in log.read_text()
    assert events.count("accept_failed") <= 1
    assert len(events) < 30
