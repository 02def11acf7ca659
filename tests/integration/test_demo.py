"""
``mdgate demo``, the first run: the real ``.venv/bin/mdgate`` as a subprocess, fed by the bundled
recording, serves ticks of US (Yahoo) and Indian (Dhan) instruments within seconds, without
network or credentials, and stops cleanly on SIGTERM/SIGINT; ``make demo`` is the README's
first command and installs the runtime only.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mdgate.testing import GatewayClient

ROOT = Path(__file__).resolve().parents[2]
MDGATE_EXE = str(Path(sys.executable).with_name("mdgate"))
#: From the process start to ticks of both instruments on a client.
TICKS_WITHIN = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_env() -> dict[str, str]:
    """No MDGATE_* (a demo reads none) and no Dhan credentials (a demo needs none)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, float]]:
    """``mdgate demo --port P`` started in an empty directory; killed by PID if a test left it running."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [MDGATE_EXE, "demo", "--port", str(port)], cwd=tmp_path, env=demo_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield proc, port, started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _alive(proc: subprocess.Popen[str]) -> None:
    """Fail at once (with its stderr) when the demo exited instead of serving."""
    if proc.poll() is not None:
        assert proc.stderr is not None
        pytest.fail(f"mdgate demo exited {proc.returncode}: {proc.stderr.read()}")


async def _ticks_of(
    proc: subprocess.Popen[str], port: int, instruments: set[str], deadline: float
) -> dict[str, dict[str, object]]:
    """Connect (retrying until the demo listens), subscribe, and return the first tick of each instrument."""
    url = f"ws://127.0.0.1:{port}/ws"
    with anyio.fail_after(max(0.0, deadline - time.monotonic())):
        while True:
            try:
                async with GatewayClient.connect(url) as client:
                    await client.subscribe(*sorted(instruments))
                    first: dict[str, dict[str, object]] = {}
                    while set(first) != instruments:
                        for tick in await client.ticks(1, timeout=TICKS_WITHIN):
                            first.setdefault(str(tick["instrument"]), tick)
                    return first
            except OSError:
                _alive(proc)
                await anyio.sleep(0.1)  # not listening yet


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_demo_serves_recorded_ticks_of_both_providers_and_stops_cleanly(
    demo: tuple[subprocess.Popen[str], int, float], stop: signal.Signals
) -> None:
    proc, port, started = demo
    # ICICIBANK has no built-in Dhan code: the demo supplies it ([instruments])
    wanted = {"NASDAQ:AAPL", "NSE:RELIANCE", "NSE:ICICIBANK"}
    first = anyio.run(_ticks_of, proc, port, wanted, started + TICKS_WITHIN)
    assert set(first) == wanted
    assert first["NSE:ICICIBANK"]["provider"] == "DHAN"
    assert first["NASDAQ:AAPL"]["provider"] == "YF" and first["NSE:RELIANCE"]["provider"] == "DHAN"
    assert 150 < float(first["NASDAQ:AAPL"]["price"]) < 250  # type: ignore[arg-type]
    assert 1200 < float(first["NSE:RELIANCE"]["price"]) < 1700  # type: ignore[arg-type]
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, (proc.returncode, err)
    # where to look, and that it is a recording
    assert f"http://127.0.0.1:{port}/" in out
    assert "mdgate tail NASDAQ:AAPL NSE:RELIANCE" in out
    assert f"curl 127.0.0.1:{port}/status" in out
    assert "RECORDING" in out and "not live market data" in out
    assert "Traceback" not in err


async def _restarts_seen(proc: subprocess.Popen[str], port: int, deadline: float) -> int:
    """Follow NASDAQ:AAPL until its day volume drops back: the recording started again."""
    url = f"ws://127.0.0.1:{port}/ws"
    with anyio.fail_after(max(0.0, deadline - time.monotonic())):
        while True:
            try:
                async with GatewayClient.connect(url) as client:
                    await client.subscribe("NASDAQ:AAPL")
                    last = 0
                    while True:
                        for tick in await client.ticks(1):
                            volume = int(tick["volume"])
                            if volume < last:
                                return volume
                            last = volume
            except OSError:
                _alive(proc)
                await anyio.sleep(0.1)  # not listening yet


def test_demo_plays_the_recording_on_loop_and_ignores_the_working_directory_config(tmp_path: Path) -> None:
    # at 200x the three-minute recording lasts under a second: it must start again, not end;
    # and ./mdgate.toml is not the demo's (only an explicit --config is read)
    (tmp_path / "mdgate.toml").write_text('[logging]\nlevel = "not-a-level"\n')
    port = free_port()
    proc = subprocess.Popen(
        [MDGATE_EXE, "demo", "--port", str(port), "--speed", "200"], cwd=tmp_path, env=demo_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert anyio.run(_restarts_seen, proc, port, time.monotonic() + 20) > 0
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_readme_starts_with_make_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    fenced = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    assert fenced[0].strip() == "make demo"
    assert [block.strip() for block in fenced[1:3]] == ["make run", "make test"]


def _targets(makefile: str) -> dict[str, tuple[str, list[str]]]:
    """Makefile target -> (prerequisites, recipe lines)."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in makefile.splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
            continue
        m = re.match(r"^([$()A-Za-z_./-]+):(?!=)\s*([^#]*)", line)
        current = None
        if m:
            current = []
            out[m.group(1)] = (m.group(2).strip(), current)
    return out


def test_make_demo_runs_the_demo_on_the_runtime_only() -> None:
    targets = _targets((ROOT / "Makefile").read_text())
    prereqs, recipe = targets["demo"]
    assert prereqs == "$(RUNTIME)" and recipe == ["$(BIN)/mdgate demo"]
    assert targets["run"][0] == "$(RUNTIME)"
    runtime = targets["$(RUNTIME)"][1]
    install = [line for line in runtime if "pip install" in line and "-e" in line]
    assert install == ["$(BIN)/python -m pip install -q -e . -e plugins/mdgate-yahoo -e plugins/mdgate-dhan"]
    # the dev extras come with `make install` / `make test`, under their own stamp
    assert "[dev]" in " ".join(targets["$(STAMP)"][1])
    test_recipe = targets["test"][1]
    assert test_recipe[0] == "scripts/system-deps" and test_recipe[-1] == "$(BIN)/pytest"
