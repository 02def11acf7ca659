"""
``mdgate new-provider``: the plugin author's path, proven end to end.

The generated package is installed the way an author installs it, into a
fresh virtual environment: ``python -m venv``, whose site-packages sees this
project's ``.venv`` through a ``.pth`` file (nothing is downloaded:
``PIP_NO_INDEX``), then ``mdgate install -e PATH`` run from that venv. There:

* the generated tests (protocol tests and the whole conformance suite) pass
  with that venv's pytest;
* the scaffold's fake feed, run standalone (``python -m mdgate_NAME.testing``),
  feeds ``mdgate run`` (config: ``[exchanges]`` routes the provider's
  exchange to it, ``[providers.NAME]`` points at the fake), and
  ``mdgate tail`` reads its synthetic ticks.

The cheaper tests pin the command's contract: the name rule, never
overwriting, one ``mdgate: error:`` line and exit 2, the shape of the built-in
providers, imports of the public API only, and the templates shipped in the
core wheel.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from mdgate._cli.context import CommandContext
from mdgate._cli.root import build_cli, invoke
from mdgate._scaffold import FILES, NAME_RE, Names, ScaffoldError, render, write_provider

ROOT = Path(__file__).resolve().parents[2]
NAME = "acme_fx"
PACKAGE = f"mdgate_{NAME}"
EXCHANGE = NAME.upper()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(plugins: str = NAME) -> dict[str, str]:
    """The environment of the venv's processes: only ``plugins`` load, pip never downloads."""
    # No PYTHONPATH (the suite's example-provider site), no MDGATE_* of the caller. pip never downloads:
    # no index, and no isolated build environment (it would fetch hatchling; pip reads this boolean
    # inverted: PIP_NO_BUILD_ISOLATION=0 is --no-build-isolation). hatchling comes from the .venv.
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("MDGATE_", "PIP_", "DHAN_"))}
    env.update({"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "MDGATE_LOAD_PLUGINS": plugins})
    return env


# -- the command's contract (fast) -------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Run ``mdgate ARGV`` in-process; the test process keeps its logging (as in tests/unit/test_cli.py)."""
    obj = CommandContext({})
    obj._logging = "test"
    return invoke(build_cli(), argv, obj)


@pytest.mark.parametrize("name", ["acme", "acme_fx", "a", "x2", "a" * 16])
def test_valid_names(name: str) -> None:
    assert NAME_RE.match(name)
    assert Names.of(name).exchange == name.upper()


@pytest.mark.parametrize("name", ["Acme", "acme-fx", "2acme", "_acme", "", "a" * 17, "acme fx", "acmé"])
def test_invalid_names_exit_2_with_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-provider", name, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mdgate: error: invalid provider name"), err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-provider", NAME, "--dir", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / f'mdgate-{NAME}'}" in capsys.readouterr().out
    plugin = tmp_path / f"mdgate-{NAME}" / "src" / PACKAGE / "plugin.py"
    plugin.write_text("# mine\n")
    assert main(["new-provider", NAME, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mdgate: error: ") and "already exists" in err[0], err
    assert plugin.read_text() == "# mine\n"
    (tmp_path / "mdgate-other").write_text("a file")  # a file of that name counts too
    with pytest.raises(ScaffoldError):
        write_provider("other", tmp_path)


def test_a_directory_that_cannot_be_made_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a directory")
    assert main(["new-provider", NAME, "--dir", str(tmp_path / "file" / "sub")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mdgate: error: cannot write the provider package"), err


def test_every_template_token_is_known_and_rendered() -> None:
    names = Names.of(NAME)
    from importlib.resources import files

    templates = files("mdgate._scaffold").joinpath("templates")
    shipped = sorted(p.name for p in templates.iterdir() if p.name.endswith(".tmpl"))
    assert sorted(FILES.values()) == shipped  # no stray template, none missing
    for tmpl in shipped:
        text = render(templates.joinpath(tmpl).read_text("utf-8"), names)
        assert "{{" not in text and "}}" not in text, tmpl


def test_the_package_has_the_shape_of_the_built_in_providers(tmp_path: Path) -> None:
    root = write_provider(NAME, tmp_path)
    modules = {p.stem for p in (root / "src" / PACKAGE).glob("*.py")}
    example = {p.stem for p in (ROOT / "tests" / "example_provider" / "src" / "mdgate_example").glob("*.py")}
    assert modules == example - {"backfill"}  # backfill.py only when the provider has REST bars
    pyproject = (root / "pyproject.toml").read_text()
    assert f'[project.entry-points.mdgate]\n{NAME} = "{PACKAGE}.plugin"' in pyproject
    assert '"mdgate>=0.1,<1"' in pyproject
    plugin = (root / "src" / PACKAGE / "plugin.py").read_text()
    assert re.search(r'^MDGATE_PLUGIN_API: Final = "1\.0"$', plugin, re.MULTILINE)
    assert (root / "tests" / "golden" / "ticks.json").is_file() and (root / "README.md").is_file()


def test_generated_code_imports_only_the_public_api(tmp_path: Path) -> None:
    root = write_provider(NAME, tmp_path)
    public = {"mdgate", "mdgate.testing", "mdgate.testing.conformance"}
    for path in sorted(root.rglob("*.py")):
        compile(path.read_text(), str(path), "exec")  # valid Python
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for mod in names:
                if mod.split(".")[0] == "mdgate":
                    assert mod in public, f"{path.relative_to(root)} imports {mod}"


def test_protocol_module_imports_no_io_library(tmp_path: Path) -> None:
    root = write_provider(NAME, tmp_path)
    tree = ast.parse((root / "src" / PACKAGE / "protocol.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"anyio", "asyncio", "websockets", "httpx", "structlog", "socket"}


def test_the_core_wheel_ships_the_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, env=clean_env(), timeout=120,
    )
    (wheel,) = tmp_path.glob("mdgate-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mdgate/_scaffold/templates/{t}" for t in FILES.values()} <= shipped


# -- the author's path, end to end ---------------------------------------------------------------


class Venv:
    """A fresh virtual environment seeing the project's .venv packages through a .pth file."""

    def __init__(self, where: Path, plugins: str = NAME) -> None:
        self.bin = where / "bin"
        self.env = clean_env(plugins)
        self.env["PATH"] = os.pathsep.join([str(self.bin), self.env.get("PATH", "")])
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
        self.python = where / "bin" / "python"
        purelib = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        # addsitedir (not a bare path line) so that the .venv's own .pth files (editable installs) apply
        Path(purelib, "_mdgate_dev.pth").write_text(
            f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
        )
        # the `mdgate` command of this venv (the console script lives in the .venv's bin)
        script = self.bin / "mdgate"
        script.write_text(f"#!{self.python}\nimport sys\nfrom mdgate._cli import main\nsys.exit(main())\n")
        script.chmod(0o755)

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen([str(self.python), *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Venv, Path]:
    """The scaffold, written by the CLI and installed with ``mdgate install -e`` into a fresh venv."""
    base = tmp_path_factory.mktemp("scaffold")
    venv = Venv(base / "venv")
    made = venv.run("-m", "mdgate", "new-provider", NAME, "--dir", str(base))
    assert made.returncode == 0, made.stderr
    package = base / f"mdgate-{NAME}"
    done = venv.run("-m", "mdgate", "install", "-e", str(package))
    assert done.returncode == 0, done.stdout + done.stderr
    listed = venv.run("-m", "mdgate", "plugins", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == NAME]
    # loaded through its entry point, declaring the plugin API it was built for: no warning
    assert (row["status"], row["api"], row["warnings"], row["error"]) == ("loaded", "1.0", [], None), row
    assert row["distribution"] == f"mdgate-{NAME}" or row["distribution"] == f"mdgate_{NAME}", row
    return venv, package


@pytest.mark.timeout(300)
def test_the_generated_tests_pass_in_the_new_venv(installed: tuple[Venv, Path]) -> None:
    venv, package = installed
    result = venv.run("-m", "pytest", "-q", "-p", "no:randomly", cwd=package, timeout=280)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"\b(\d+) passed\b", out) and " skipped" not in out and "failed" not in out, out
    listed = venv.run("-m", "pytest", "-q", "--collect-only", cwd=package)
    assert "test_conformance.py::TestConformance::test_reconnect_resubscribes_everything" in listed.stdout
    assert "test_conformance.py::TestConformance::test_normalization_golden" in listed.stdout


def test_the_generated_package_is_ruff_and_mypy_strict_clean(
    installed: tuple[Venv, Path], tmp_path: Path
) -> None:
    venv, package = installed
    ruff = venv.run("-m", "ruff", "check", "--no-cache", ".", cwd=package)  # its own [tool.ruff]
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = venv.run("-m", "mypy", "--cache-dir", str(tmp_path / "mypy"), "src", "tests", cwd=package)
    assert mypy.returncode == 0 and "strict = true" in (package / "pyproject.toml").read_text(), mypy.stdout


def test_the_fake_feeds_mdgate_run_and_tail_reads_ticks(installed: tuple[Venv, Path], tmp_path: Path) -> None:
    venv, _ = installed
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fake_log = tmp_path / "fake.log"
        procs.append(venv.start("-m", f"{PACKAGE}.testing", "--port", "0", "--interval", "0.1", log=fake_log))
        url = _wait_for(r"ws://127\.0\.0\.1:\d+", fake_log, procs[0])
        config = tmp_path / "mdgate.toml"
        config.write_text(
            f'[providers.{NAME}]\nurl = "{url.group(0)}"\n'
            f'[exchanges]\n{EXCHANGE} = ["{NAME}"]\n'
            '[runtime]\nbackoff_initial = 0.05\n[logging]\nformat = "json"\n'
        )
        port = _free_port()
        run_log = tmp_path / "run.log"
        procs.append(venv.start("-m", "mdgate", "--config", str(config), "run", "--port", str(port),
                                log=run_log))
        _wait_for("gateway_started", run_log, procs[1])
        tail = venv.run("-m", "mdgate", "tail", f"{EXCHANGE}:ALPHA", "--url", f"http://127.0.0.1:{port}",
                        "--count", "2", "--seconds", "30", timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    assert tail.returncode == 0, tail.stdout + tail.stderr
    tick = re.compile(rf"{EXCHANGE}:ALPHA\s+\d+\.\d+ {EXCHANGE}\b")
    ticks = [line for line in tail.stdout.splitlines() if tick.search(line)]
    assert ticks, tail.stdout
    assert f"subscribed: {EXCHANGE}:ALPHA" in tail.stdout


def _wait_for(pattern: str, log: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> re.Match[str]:
    """The first match of ``pattern`` in the process's log, once it appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {pattern!r}: {log.read_text()}")
