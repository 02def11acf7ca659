"""
The shipped deployment files (deploy/) work, and say what the gateway does.

* ``deploy/systemd/mdgate.service``: ``systemd-analyze verify`` accepts it (when that tool can run
  here; the directives are asserted either way), its readiness wait (``ExecStartPost=``) is run for
  real against an in-process gateway, and its stop/limit settings fit mdgate's own figures.
* ``deploy/prometheus/``: ``promtool check config``, ``check rules`` and ``test rules`` (the rule
  unit tests in ``alerts_test.yml``); promtool missing is a failure, never a skip. Every metric an
  alert uses is in docs/operations.md's reference table and on a running gateway's ``/metrics``.
* ``deploy/vector/vector.toml``: reads the unit's journal and the fields mdgate's JSON log has.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import anyio
import httpx
import pytest
import structlog

from mdgate._config import LoggingSettings, RuntimeSettings, ServerSettings
from mdgate._logging import configure_logging
from mdgate._serve.limits import _needed_nofile
from mdgate.testing import GatewayClient, running_gateway

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "mdgate.service"
PROM = DEPLOY / "prometheus"
OPERATIONS = ROOT / "docs" / "operations.md"
#: Where the unit expects the virtual environment (docs/operations.md installs it there).
UNIT_EXE = "/opt/mdgate/venv/bin/mdgate"
PROMTOOL_MISSING = "promtool is not installed: apt-get install prometheus (.ci/run installs it)"


# -- systemd -----------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (continuation lines joined, like systemd)."""
    text = re.sub(r"\\\n", " ", text)
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line in {UNIT.name}: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def _one(unit: dict[str, dict[str, list[str]]], key: str, section: str = "Service") -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should be set once, got {values}"
    return values[0]


def _systemd_analyze_works(tmp: Path) -> bool:
    """Whether ``systemd-analyze verify`` runs in this container (it needs no running systemd)."""
    if shutil.which("systemd-analyze") is None:
        return False
    probe = tmp / "probe.service"
    probe.write_text("[Service]\nType=exec\nExecStart=/bin/true\n")
    done = subprocess.run(["systemd-analyze", "verify", str(probe)], capture_output=True, text=True)
    return done.returncode == 0 and "probe.service" not in done.stdout + done.stderr


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = parse_unit(UNIT.read_text())
    exec_start = shlex.split(_one(unit, "ExecStart"))
    assert exec_start[:4] == [UNIT_EXE, "run", "--config", "/etc/mdgate/mdgate.toml"]
    if not _systemd_analyze_works(tmp_path):
        # no usable systemd-analyze here: the directives test below is the whole check
        assert _one(unit, "Type") == "exec"
        return
    # verify checks that ExecStart's program exists: point it at this environment's mdgate
    mdgate = Path(sys.executable).with_name("mdgate")
    assert mdgate.is_file(), f"no mdgate executable beside {sys.executable}"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(UNIT_EXE, str(mdgate)))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


ROLE_UNIT = DEPLOY / "systemd" / "mdgate@.service"


@pytest.mark.parametrize("role", ["ingest", "fanout"])
def test_role_template_unit_runs_its_role_and_passes_verify(tmp_path: Path, role: str) -> None:
    text = ROLE_UNIT.read_text()
    unit = parse_unit(text)
    assert shlex.split(_one(unit, "ExecStart")) == [
        UNIT_EXE, "run", "--config", "/etc/mdgate/mdgate-%i.toml", "--role", "%i"]
    assert _one(unit, "EnvironmentFile") == "/etc/mdgate/mdgate-%i.env"
    # the same service settings as the single unit, but for the role's own files
    single = parse_unit(UNIT.read_text())
    for key in set(single["Service"]) - {"ExecStart", "EnvironmentFile"}:
        assert unit["Service"].get(key) == single["Service"][key], key
    from mdgate._cli.run import run

    role_option = next(p for p in run.params if p.name == "role")
    assert role in role_option.type.choices  # type: ignore[attr-defined]  # the role the unit names exists
    if not _systemd_analyze_works(tmp_path):
        return
    mdgate = Path(sys.executable).with_name("mdgate")
    copy = tmp_path / f"mdgate@{role}.service"
    copy.write_text(text.replace(UNIT_EXE, str(mdgate)))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if copy.name in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def test_systemd_unit_directives_fit_mdgate() -> None:
    unit = parse_unit(UNIT.read_text())
    svc = unit["Service"]
    assert _one(unit, "Type") == "exec"  # mdgate has no sd_notify: Type=notify would never start
    assert _one(unit, "Restart") == "on-failure" and float(_one(unit, "RestartSec")) > 0
    assert "2" in _one(unit, "RestartPreventExitStatus").split()  # a config error: no restart loop
    assert _one(unit, "KillSignal") == "SIGTERM"
    assert float(_one(unit, "TimeoutStopSec")) >= RuntimeSettings().shutdown_timeout + 2
    assert _one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert int(_one(unit, "LimitNOFILE")) >= _needed_nofile(ServerSettings().max_clients)
    assert _one(unit, "EnvironmentFile") == "/etc/mdgate/mdgate.env"
    # the Dhan token: a credential, handed to mdgate as the file DHAN_ACCESS_TOKEN_FILE names
    cred_name, _, cred_path = _one(unit, "LoadCredential").partition(":")
    assert cred_path == "/etc/mdgate/dhan.token"
    assert f"DHAN_ACCESS_TOKEN_FILE=%d/{cred_name}" in svc["Environment"]
    assert not any(v.startswith("DHAN_ACCESS_TOKEN=") for v in svc["Environment"])
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("DynamicUser", "yes"), ("ProtectHome", "yes")]:
        assert _one(unit, key) == value, key
    assert "/readyz" in _one(unit, "ExecStartPost")
    assert float(_one(unit, "TimeoutStartSec")) > 60  # longer than the readiness wait's default
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def readiness_command() -> list[str]:
    """The unit's ExecStartPost= as argv, with systemd's ``$$`` unescaped."""
    value = _one(parse_unit(UNIT.read_text()), "ExecStartPost")
    assert "%" not in value.replace("%%", "")  # no specifier systemd would expand
    assert "$" not in value.replace("$$", ""), "a shell $ must be written $$ (systemd expands $NAME)"
    return shlex.split(value.replace("$$", "$").replace("%%", "%"))


async def _wait_ready(port: int, timeout: int = 1) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "MDGATE_SERVER__PORT": str(port), "MDGATE_READY_TIMEOUT": str(timeout)}
    return await anyio.run_process(readiness_command(), env=env, check=False)


@pytest.mark.anyio
async def test_readiness_wait_passes_once_ready(feed, make_settings) -> None:
    assert shutil.which("curl"), "curl is not installed (the unit's readiness wait uses it)"
    async with running_gateway(make_settings(feed.url)) as gw:
        done = await _wait_ready(gw.port)
    assert done.returncode == 0 and done.stderr == b"", done.stderr


@pytest.mark.anyio
async def test_readiness_wait_settles_for_live_when_not_ready_and_fails_when_dead(make_settings) -> None:
    assert shutil.which("curl"), "curl is not installed (the unit's readiness wait uses it)"
    # an instrument always subscribed, its only provider unreachable: live, not ready
    dead = make_settings("ws://127.0.0.1:9/", '[subscriptions]\nalways = ["EXAMPLE:ACME"]\n')
    async with running_gateway(dead) as gw:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{gw.http_url}/readyz")).status_code == 503
        done = await _wait_ready(gw.port)
        port = gw.port
    assert done.returncode == 0, done.stderr
    assert b"mdgate not ready after 1 s" in done.stderr and b'"ready":false' in done.stderr.replace(b" ", b"")
    done = await _wait_ready(port)  # nothing listens there now: the start fails
    assert done.returncode != 0 and b"not ready" in done.stderr


# -- Prometheus --------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    """Run promtool; its absence fails the test with how to install it."""
    exe = shutil.which("promtool")
    assert exe is not None, PROMTOOL_MISSING
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)


def test_promtool_accepts_the_alert_rules() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    text = (PROM / "prometheus.yml").read_text()
    token_path = "/etc/prometheus/mdgate.token"
    assert f"credentials_file: {token_path}" in text and "metrics_path: /metrics" in text
    # promtool stats the token file: check a copy whose token file exists
    token = tmp_path / "mdgate.token"
    token.write_text("a-token\n")
    (tmp_path / "prometheus.yml").write_text(text.replace(token_path, str(token)))
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    done = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def test_alert_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def alert_rules() -> dict[str, dict[str, str]]:
    """alerts.yml as {alert: {"expr": ..., "runbook": ...}} (one-line values, checked)."""
    text = (PROM / "alerts.yml").read_text()
    rules: dict[str, dict[str, str]] = {}
    for block in re.split(r"^\s*- alert: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        fields = dict(re.findall(r"^\s*(expr|runbook): *(.+)$", body, flags=re.M))
        assert set(fields) == {"expr", "runbook"}, f"{name}: a one-line expr and a runbook annotation"
        rules[name.strip()] = {k: v.strip().strip('"') for k, v in fields.items()}
    assert len(rules) == text.count("- alert: ") >= 8
    return rules


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression uses (mdgate's, process_*, and Prometheus' ``up``)."""
    return set(re.findall(r"\b(?:mdgate|process)_[a-z0-9_]+\b", expr)) | set(re.findall(r"\bup(?=\{)", expr))


def documented_metrics() -> set[str]:
    """The first-column names of docs/operations.md's metrics reference table."""
    text = OPERATIONS.read_text()
    table = text.split("### Metrics reference", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)(?:\{[^`]*\})?` \|", table, flags=re.M))


def test_every_alert_has_a_documented_metric_and_a_runbook() -> None:
    documented = documented_metrics()
    headings = {m.lower() for m in re.findall(r"^#### (Mdgate\w+)$", OPERATIONS.read_text(), flags=re.M)}
    for name, rule in alert_rules().items():
        used = metric_names(rule["expr"])
        assert used, f"{name} uses no metric"
        assert used <= documented, f"{name} uses {sorted(used - documented)}, not in the metrics table"
        assert rule["runbook"] == f"docs/operations.md#{name.lower()}" and name.lower() in headings, name


@pytest.mark.anyio
async def test_alerts_use_only_metrics_the_gateway_exports(feed, make_settings) -> None:
    settings = make_settings(feed.url, '[server]\ntokens = ["t0ken"]\n')
    async with running_gateway(settings) as gw, GatewayClient.connect(f"{gw.ws_url}?token=t0ken") as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        await feed.send_tick("ACME", 5.0)
        assert (await c.ticks(1))[0]["instrument"] == "EXAMPLE:ACME"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{gw.http_url}/metrics")).status_code == 401  # a token, like /status
            page = await http.get(f"{gw.http_url}/metrics", headers={"Authorization": "Bearer t0ken"})
    assert page.status_code == 200, page.text
    exported = set(re.findall(r"^# TYPE (\S+) ", page.text, flags=re.M))
    used = set().union(*(metric_names(r["expr"]) for r in alert_rules().values())) - {"up"}
    assert used <= exported, f"alerts.yml uses metrics /metrics does not have: {sorted(used - exported)}"
    ours, documented = {n for n in exported if n.startswith("mdgate_")}, documented_metrics()
    assert ours <= documented, f"undocumented in docs/operations.md: {sorted(ours - documented)}"
    # and the table names nothing the gateway lacks (the memory store measures no write latency)
    missing = {n for n in documented if n.startswith("mdgate_")} - ours - {"mdgate_store_write_seconds"}
    assert not missing, f"docs/operations.md documents metrics /metrics lacks: {sorted(missing)}"


# -- logs --------------------------------------------------------------------------------------


def test_vector_reads_the_units_journal_and_fields_mdgate_logs() -> None:
    conf = tomllib.loads((DEPLOY / "vector" / "vector.toml").read_text())
    (source_name, source), = conf["sources"].items()
    assert source["type"] == "journald" and source["include_units"] == [UNIT.name]
    (remap_name, remap), = conf["transforms"].items()
    assert remap["type"] == "remap" and remap["inputs"] == [source_name]
    assert "parse_json(.message)" in remap["source"]
    (sink,) = conf["sinks"].values()
    assert sink["inputs"] == [remap_name]
    # the fields the pipeline relies on are in a JSON line mdgate writes (format "json")
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(LoggingSettings(level="info", format="json"), stream=out)
        structlog.get_logger("mdgate").warning("provider_disconnected", provider="dhan")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    line = json.loads(out.getvalue().splitlines()[-1])
    assert {"event", "level", "timestamp", "provider"} <= set(line)
    assert "{{ level }}" in sink["labels"].values()
    assert re.search(r"parse_timestamp\(\.timestamp, \"%\+\"\)", remap["source"])
