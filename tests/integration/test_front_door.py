"""
The documented command line, run as an operator runs it: the real
``.venv/bin/mdgate`` executable as a subprocess.

* ``--config PATH`` after the sub-command (the documented form) as well as
  before it, for ``run`` and for the commands that read the config;
* every start-up failure is ONE line on stderr (``mdgate: error: ...``) and an
  exit code: 2 for what the operator wrote, 1 for the state of the machine;
* shell completion (click's) and a light ``mdgate --help``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

#: The console script pip installed next to this interpreter (``.venv/bin/mdgate``).
MDGATE_EXE = str(Path(sys.executable).with_name("mdgate"))
EXIT_RUNTIME, EXIT_CONFIG = 1, 2


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without MDGATE_* / DHAN_*, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    env.update({"MDGATE_LOAD_PLUGINS": "example", **extra})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mdgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``mdgate ARGS`` to completion."""
    return subprocess.run(
        [MDGATE_EXE, *args], capture_output=True, text=True, env=env or clean_env(), timeout=30, check=False
    )


def one_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    """Assert ``res`` failed with ``code`` and exactly one ``mdgate: error: ...`` stderr line; return it."""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("mdgate: error: "), res.stderr
    assert res.returncode == code, (res.returncode, res.stderr)
    return lines[0]


class GatewayProcess:
    """``mdgate run --config PATH`` in its own process, its stderr in a log file."""

    def __init__(self, config: Path, env: dict[str, str], *extra: str) -> None:
        self.log = config.with_suffix(".log")
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [MDGATE_EXE, "run", "--config", str(config), *extra],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )

    def wait_healthy(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no /healthz within {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mdgate.toml"
    path.write_text('[logging]\nformat = "json"\n')
    return path


# -- --config after the sub-command ------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A gateway started with the documented `mdgate run --config PATH`; its port only in the file."""
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[server]\nport = {port}\n[logging]\nformat = "json"\n')
    gw = GatewayProcess(cfg, clean_env())
    try:
        gw.wait_healthy(port)
        yield cfg, port
    finally:
        assert gw.stop() == 0, gw.log.read_text()


def test_config_option_after_every_subcommand(gateway: tuple[Path, int], tmp_path: Path) -> None:
    cfg, _ = gateway  # `run --config` started it on the file's port (not the default 8765)
    missing = str(tmp_path / "missing.toml")
    commands = {
        "status": ["status", "--config", str(cfg), "--json"],
        "tail": ["tail", "EXAMPLE:AAA", "--config", str(cfg), "--seconds", "0.3"],
        "history": ["history", "EXAMPLE:AAA", "--config", str(cfg), "--json"],
        # both places: the one after the sub-command wins
        "both": ["--config", missing, "status", "-c", str(cfg), "--json"],
        # plugin commands too, nested ones included: the option is parsed, the directory refused
        "db": ["db", "status", "--config", str(tmp_path)],
    }
    res = run_all(commands)
    for name in ("status", "tail", "history", "both"):
        assert res[name].returncode == 0, (name, res[name].stderr)  # each reached the file's port
    assert json.loads(res["status"].stdout)["status"] in ("ok", "degraded")
    assert json.loads(res["both"].stdout)["status"] in ("ok", "degraded")
    assert json.loads(res["history"].stdout) == []
    assert res["db"].returncode == EXIT_CONFIG and "unrecognized" not in res["db"].stderr, res["db"].stderr
    assert "Is a directory" in res["db"].stderr


# -- failures: one line and an exit code -------------------------------------------------


def run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several ``mdgate`` commands at once (most of each one's time is start-up)."""
    procs = {
        name: subprocess.Popen([MDGATE_EXE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=clean_env())
        for name, argv in commands.items()
    }
    res = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=30)
        res[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return res


def test_start_up_failures_are_one_line_and_an_exit_code(config: Path, tmp_path: Path) -> None:
    bad_host_file = tmp_path / "bad-host.toml"
    bad_host_file.write_text('[server]\nhost = "192.0.2.1"\n')  # TEST-NET-1: never local
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"# caf\xe9\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        res = run_all({
            "port in use": ["run", "--config", str(config), "--port", str(port)],
            # .invalid never resolves (RFC 2606)
            "unresolvable host": ["run", "--config", str(config), "--host", "nosuch.invalid", "--port", "0"],
            "host not local": ["--config", str(bad_host_file), "run"],
            "directory": ["--config", str(tmp_path), "run"],
            # a file whose read fails for any user, root included: EIO
            "unreadable": ["run", "--config", "/proc/self/mem"],
            "not UTF-8": ["run", "--config", str(latin1)],
        })
    host_error, file_error = "mdgate: error: server.host:", "mdgate: error: --config:"
    expected = {
        "port in use": (
            EXIT_RUNTIME, f"mdgate: error: cannot listen on 127.0.0.1:{port}: address already in use"
        ),
        "unresolvable host": (EXIT_CONFIG, f"{host_error} cannot resolve 'nosuch.invalid'"),
        "host not local": (EXIT_CONFIG, f"{host_error} '192.0.2.1' is not an address of this machine"),
        "directory": (EXIT_CONFIG, f"{file_error} {tmp_path}: Is a directory"),
        "unreadable": (EXIT_CONFIG, f"{file_error} /proc/self/mem: Input/output error"),
        "not UTF-8": (EXIT_CONFIG, f"{file_error} {latin1}: not UTF-8 text"),
    }
    for case, (code, start) in expected.items():
        line = one_line(res[case], code)
        assert line.startswith(start), (case, line)
        assert "Traceback" not in res[case].stderr


def test_usage_errors_are_one_line_and_exit_2_for_core_and_plugin_commands() -> None:
    res = run_all({
        "unknown option": ["run", "--bogus"],
        "unknown command": ["nosuch"],
        "missing argument": ["tail"],
        "bad choice": ["history", "NSE:X", "--bars", "7m"],
        "plugin group without command": ["db"],
        "plugin option": ["routes", "set", "NSE"],
        "dhan": ["dhan", "import-instruments", "--toml", "-"],
    })
    for case, result in res.items():
        line = one_line(result, EXIT_CONFIG)
        assert "Traceback" not in result.stderr and result.stdout == "", (case, result.stdout)
        assert "usage" not in line.lower() or case == "plugin group without command", (case, line)
    assert "No such option '--bogus'" in res["unknown option"].stderr
    assert "missing command: one of seed, status, upgrade" in res["plugin group without command"].stderr


def test_shell_completion_script_and_completions() -> None:
    script = mdgate(env=clean_env(_MDGATE_COMPLETE="bash_source"))
    assert script.returncode == 0 and "_mdgate_completion()" in script.stdout, script.stderr
    assert "complete -o nosort -F _mdgate_completion mdgate" in script.stdout
    words = subprocess.run(
        [MDGATE_EXE], capture_output=True, text=True, timeout=30, check=False,
        env=clean_env(_MDGATE_COMPLETE="bash_complete", COMP_WORDS="mdgate ro", COMP_CWORD="1"),
    )
    assert words.returncode == 0
    assert {"plain,route", "plain,routes"} <= set(words.stdout.splitlines()), words.stdout


HEAVY = ("redis", "psycopg", "websockets", "httpx", "yfinance", "dhanhq", "google.protobuf")


def test_help_imports_no_heavy_module() -> None:
    """``mdgate --help`` (every plugin loaded, their commands listed) imports no client library."""
    probe = (
        "import sys\n"
        "from mdgate._cli import main\n"
        "code = main(['--help'])\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                         env=clean_env(MDGATE_LOAD_PLUGINS="yahoo,dhan,example"), check=False)
    assert res.returncode == 0, res.stderr
    assert "usage: mdgate" in res.stdout and "routes" in res.stdout and "dhan" in res.stdout
    assert res.stdout.splitlines()[-1] == "HEAVY []", res.stdout
