"""
``mdgate install`` / ``mdgate uninstall`` in-process: what reaches pip, the
refusal when mdgate's environment is not writable, pip's failure.
(tests/integration/test_install.py runs them for real in a throw-away venv.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from mdgate._cli import install as install_module
from mdgate._cli.context import CommandContext
from mdgate._cli.root import build_cli, invoke


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """An in-process ``invoke`` points structlog at this test's captured stderr: put it back after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` not writable, even for root (the immutable attribute), for the block's duration."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)


@pytest.fixture
def pip_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """pip is not run: each command line is recorded; the install directories are writable tmp dirs."""
    calls: list[list[str]] = []

    def call(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(install_module.subprocess, "call", call)
    monkeypatch.setattr(install_module, "install_dirs", lambda: [tmp_path / "site", tmp_path / "bin"])
    (tmp_path / "site").mkdir()
    return calls


def run(*argv: str) -> int:
    return invoke(build_cli(), list(argv), CommandContext({}))


@pytest.mark.parametrize(
    ("argv", "pip_args"),
    [
        (["install", "mdgate-foo"], ["install", "mdgate-foo"]),
        (["install", "-U", "mdgate-foo", "mdgate-bar==1.2"],
         ["install", "--upgrade", "mdgate-foo", "mdgate-bar==1.2"]),
        (["install", "--upgrade", "-e", "./src/foo"], ["install", "--upgrade", "--editable", "./src/foo"]),
        (["install", "-e", "./foo", "mdgate-bar"], ["install", "--editable", "./foo", "mdgate-bar"]),
        (["uninstall", "mdgate-foo"], ["uninstall", "mdgate-foo"]),
        (["uninstall", "-y", "mdgate-foo", "mdgate-bar"], ["uninstall", "--yes", "mdgate-foo", "mdgate-bar"]),
    ],
)
def test_pip_runs_in_mdgates_interpreter_with_the_options_passed_through(
    pip_calls: list[list[str]], argv: list[str], pip_args: list[str]
) -> None:
    assert run(*argv) == 0
    assert pip_calls == [[sys.executable, "-m", "pip", *pip_args]]


def test_install_without_packages_is_a_usage_error(
    pip_calls: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("install") == 2 and run("uninstall") == 2
    err = capsys.readouterr().err
    assert "mdgate: error: nothing to install: give PACKAGE... or -e PATH" in err and pip_calls == []


def test_pip_failing_is_exit_1(monkeypatch: pytest.MonkeyPatch, pip_calls: list[list[str]],
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(install_module.subprocess, "call", lambda argv: 3)
    assert run("install", "mdgate-nope") == 1
    assert capsys.readouterr().err == "mdgate: error: pip install failed (exit code 3; its output is above)\n"


def test_pip_that_cannot_start_is_exit_1(monkeypatch: pytest.MonkeyPatch, pip_calls: list[list[str]],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    def missing(argv: list[str]) -> int:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(install_module.subprocess, "call", missing)
    assert run("uninstall", "-y", "x") == 1
    assert capsys.readouterr().err.startswith("mdgate: error: cannot run pip")


@pytest.mark.parametrize("argv", [["install", "-e", ".", "mdgate-foo"], ["uninstall", "-y", "mdgate-foo"]])
def test_a_site_packages_that_is_not_writable_is_refused_before_pip_runs(
    pip_calls: list[list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with read_only(tmp_path / "site"):
        code = run(*argv)
    err = capsys.readouterr().err
    assert code == 1 and pip_calls == []
    action = "install into" if argv[0] == "install" else "uninstall from"
    assert err.count("\n") == 1 and err.startswith(f"mdgate: error: cannot {action} {tmp_path / 'site'}: ")
    assert "not writable" in err and "virtual environment" in err


def test_a_missing_directory_is_judged_by_its_nearest_parent(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        found = install_module.unwritable([tmp_path / "new" / "bin", ro / "new" / "bin"])
    assert found == [ro / "new" / "bin"]


def test_the_install_directories_are_this_interpreters() -> None:
    import sysconfig

    dirs = install_module.install_dirs()
    assert Path(sysconfig.get_paths()["purelib"]) in dirs and Path(sysconfig.get_paths()["scripts"]) in dirs
    assert len(dirs) == len(set(dirs))
