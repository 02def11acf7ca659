"""
``mdgate install`` / ``uninstall`` for real, in a throw-away virtual environment.

The venv sees this project's environment (a ``.pth`` file that adds its
site-packages), so mdgate, pip and hatchling come from there and nothing is
downloaded; pip runs offline (``PIP_NO_INDEX``, ``PIP_NO_DEPS``, no build
isolation). The example provider is installed from a copy whose editable
build needs no ``editables`` package (``dev-mode-dirs``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.unit.test_install import read_only

EXAMPLE = Path(__file__).resolve().parents[1] / "example_provider"


class Venv:
    def __init__(self, root: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        self.python = root / "bin" / "python"
        purelib = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        self.site = Path(purelib)
        parent = sysconfig.get_paths()["purelib"]  # this project's environment, .pth files included
        (self.site / "_mdgate_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "PIP_", "PYTHON"))}
        # offline pip; PIP_NO_BUILD_ISOLATION=0 means --no-build-isolation (pip's inverted switch)
        self.env.update(PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0",
                        PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_FIND_LINKS="")

    def mdgate(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), "-m", "mdgate", *argv], env=self.env, capture_output=True,
                              text=True, check=False, timeout=120)

    def plugins(self) -> dict[str, dict[str, object]]:
        res = self.mdgate("plugins", "--json")
        assert res.returncode == 0, res.stderr
        return {row["name"]: row for row in json.loads(res.stdout)}


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    return Venv(tmp_path / "venv")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example provider whose editable build needs no ``editables`` (offline)."""
    copy = tmp_path / "example_provider"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info"))
    with (copy / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write('\n[tool.hatch.build]\ndev-mode-dirs = ["src"]\n')
    return copy


def test_the_venv_sees_mdgate_but_not_the_example(venv: Venv) -> None:
    rows = venv.plugins()
    assert "yahoo" in rows and "example" not in rows


def test_install_editable_lists_the_plugin_and_uninstall_removes_it(venv: Venv, example: Path) -> None:
    res = venv.mdgate("install", "-e", str(example))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Successfully installed mdgate-example-0.1.0" in res.stdout  # pip's own output is shown
    row = venv.plugins()["example"]
    assert row["status"] == "loaded" and row["distribution"] == "mdgate-example" and row["api"] == "1.0"
    assert [p["name"] for p in row["providers"]] == ["example"]  # type: ignore[attr-defined]
    assert list(venv.site.glob("mdgate_example-*.dist-info"))  # in the venv, not elsewhere

    res = venv.mdgate("uninstall", "-y", "mdgate-example")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Successfully uninstalled mdgate-example-0.1.0" in res.stdout
    assert "example" not in venv.plugins() and not list(venv.site.glob("mdgate_example-*.dist-info"))


def test_upgrade_is_passed_to_pip(venv: Venv, example: Path, tmp_path: Path) -> None:
    """0.1.0 installed, 0.2.0 offered: without -U pip keeps 0.1.0; with -U it upgrades."""
    newer = tmp_path / "example_0_2"
    shutil.copytree(example, newer)
    meta = newer / "pyproject.toml"
    meta.write_text(meta.read_text(encoding="utf-8").replace('version = "0.1.0"', 'version = "0.2.0"'))
    links = tmp_path / "links"
    wheel = [str(venv.python), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(links), str(newer)]
    subprocess.run(wheel, env=venv.env, check=True, timeout=120)
    assert venv.mdgate("install", str(example)).returncode == 0
    venv.env["PIP_FIND_LINKS"] = str(links)

    res = venv.mdgate("install", "mdgate-example")
    assert res.returncode == 0 and "Requirement already satisfied" in res.stdout, res.stdout + res.stderr
    assert venv.plugins()["example"]["version"] == "0.1.0"
    res = venv.mdgate("install", "-U", "mdgate-example")
    assert res.returncode == 0 and "Successfully installed mdgate-example-0.2.0" in res.stdout, res.stderr
    assert venv.plugins()["example"]["version"] == "0.2.0"


def test_pip_failing_is_exit_1_with_pips_output(venv: Venv, tmp_path: Path) -> None:
    res = venv.mdgate("install", str(tmp_path / "no-such-project"))
    assert res.returncode == 1
    assert "no-such-project" in res.stdout + res.stderr.split("mdgate: error:")[0]  # pip said why
    assert res.stderr.rstrip().splitlines()[-1].startswith("mdgate: error: pip install failed (exit code ")


def test_a_read_only_site_packages_is_refused_before_pip_runs(venv: Venv, example: Path) -> None:
    with read_only(venv.site):
        res = venv.mdgate("install", "-e", str(example))
    assert res.returncode == 1 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"mdgate: error: cannot install into {venv.site}: not writable")
    assert "virtual environment" in line
    assert "example" not in venv.plugins()
