from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import psycopg
import pytest
from structlog.testing import capture_logs

from mdgate._cli.context import CommandContext
from mdgate._cli.root import adopt, invoke
from mdgate.plugins.pg_routes import cli, cli_common
from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, upgrade

from ._fakes import fake_registry

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture(autouse=True)
def _fake_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common, "registry", lambda settings: fake_registry())


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str) -> Result:
        # the root group: a global --config, then the commands (the core's error mapping)
        root = click.Group("mdgate")
        cli.add_commands(root)
        adopt(root)
        with capture_logs():  # logs go wherever the CLI configures them; not stdout
            code = invoke(root, argv, CommandContext())
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def test_cli_db_upgrade_then_status_then_rerun(run: Run, empty_dsn: str) -> None:
    r = run("db", "status", "--database-url", empty_dsn)
    assert r.code == 0
    assert f"schema version: 0 (this mdgate needs {SCHEMA_VERSION}; {SCHEMA_VERSION} pending" in r.out
    assert ["0001", "routing_tables", "pending"] in [ln.split() for ln in r.out.splitlines()]
    r = run("db", "upgrade", "--database-url", empty_dsn)
    assert r.code == 0 and "applied 0001 routing_tables" in r.out
    assert f"is now at version {SCHEMA_VERSION}" in r.out
    r = run("db", "upgrade", "--database-url", empty_dsn)
    assert r.code == 0 and f"up to date (version {SCHEMA_VERSION})" in r.out
    r = run("db", "status", "--database-url", empty_dsn)
    assert "up to date" in r.out and "pending" not in r.out.split("\n", 2)[2]


def test_cli_db_upgrade_of_a_missing_database_says_how_to_create_it(run: Run, empty_dsn: str) -> None:
    missing = empty_dsn.rsplit("/", 1)[0] + "/mdgate_not_created_yet"
    r = run("db", "upgrade", "--database-url", missing)
    assert r.code == 1 and r.err.count("\n") == 1
    assert 'database "mdgate_not_created_yet" does not exist; create it first (createdb ' in r.err


def test_cli_db_seed_twice_same_row_counts(run: Run, empty_dsn: str) -> None:
    run("db", "upgrade", "--database-url", empty_dsn)
    r = run("db", "seed", "--database-url", empty_dsn)
    assert r.code == 0
    assert "inserted 2 provider(s), 4 exchange(s), 6 exchange mapping(s)" in r.out
    r = run("db", "seed", "--database-url", empty_dsn)
    assert "inserted 0 provider(s), 0 exchange(s), 0 exchange mapping(s)" in r.out


def test_cli_command_schema_behind_says_run_upgrade(run: Run, empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn, target=1)
    r = run("routes", "--database-url", empty_dsn)
    assert r.code == 1
    assert r.err == (
        f"mdgate: error: schema is at version 1, this mdgate needs "
        f"{SCHEMA_VERSION}: run `mdgate db upgrade`\n"
    )


def test_cli_routes_without_database_shows_builtin_defaults(run: Run) -> None:
    r = run("routes")
    assert r.code == 0
    assert r.out.startswith("No database configured: these are the built-in defaults")
    lines = r.out.splitlines()
    assert lines[1].split() == ["EXCHANGE", "PRIORITY", "PROVIDER", "CODE", "PRIMARY", "ACTIVE"]
    assert lines[2:] and [ln.split() for ln in lines[2:4]] == [
        ["BSE", "0", "dhan", "DHAN", "yes", "yes"],
        ["BSE", "10", "yahoo", "YF", "no", "yes"],
    ]


def test_cli_routes_lists_database_rows_by_priority(run: Run, dsn: str) -> None:
    r = run("routes", "--database-url", dsn)
    assert r.code == 0
    rows = [ln.split() for ln in r.out.splitlines()[2:]]
    assert rows == [
        ["BSE", "0", "dhan", "DHAN", "yes", "yes"],
        ["BSE", "10", "yahoo", "YF", "no", "yes"],
        ["NASDAQ", "0", "yahoo", "YF", "yes", "yes"],
        ["NSE", "0", "dhan", "DHAN", "yes", "yes"],
        ["NSE", "10", "yahoo", "YF", "no", "yes"],
        ["NYSE", "0", "yahoo", "YF", "yes", "yes"],
    ]


def test_cli_routes_uses_database_url_from_environment(
    run: Run, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDGATE_DATABASE_URL", dsn)
    r = run("routes")
    assert r.code == 0 and r.out.startswith("Routes in postgresql://")


def test_cli_routes_uses_database_url_from_config_file(run: Run, dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'[database]\nurl = "{dsn}"\n', encoding="utf-8")
    r = run("--config", str(config), "routes")
    assert r.code == 0 and r.out.startswith("Routes in postgresql://")


def test_cli_routes_set_backup_primary_and_inactive(run: Run, dsn: str) -> None:
    r = run("routes", "set", "NSE", "yahoo", "--priority", "0", "--primary", "--database-url", dsn)
    assert r.code == 0
    assert "dhan is no longer primary for NSE" in r.out and "updated NSE -> yahoo" in r.out
    r = run("routes", "set", "nse", "dhan", "--priority", "5", "--inactive", "--database-url", dsn)
    assert r.code == 0
    rows = [ln.split() for ln in r.out.splitlines() if ln.startswith("  NSE")]
    assert rows == [["NSE", "0", "yahoo", "YF", "yes", "yes"], ["NSE", "5", "dhan", "DHAN", "no", "no"]]


def test_cli_routes_set_unknown_provider_one_line_error(run: Run, dsn: str) -> None:
    r = run("routes", "set", "NSE", "alpaca", "--priority", "1", "--database-url", dsn)
    assert r.code == 1
    assert r.err == "mdgate: error: unknown provider 'alpaca' (known: dhan, yahoo)\n"


def test_cli_routes_set_unknown_exchange_one_line_error(run: Run, dsn: str) -> None:
    r = run("routes", "set", "LSE", "yahoo", "--database-url", dsn)
    assert r.code == 1
    assert r.err == "mdgate: error: unknown exchange 'LSE' (known: BSE, NASDAQ, NSE, NYSE)\n"
    r = run("routes", "set", "LSE", "yahoo", "--primary", "--create-exchange", "--database-url", dsn)
    assert r.code == 0 and "added exchange LSE" in r.out and "added LSE -> yahoo" in r.out


def test_cli_route_explains_explicit_and_derived_codes(run: Run, dsn: str) -> None:
    r = run("instruments", "add", "NSE:RELIANCE", "dhan", "NSE_EQ:2885", "--database-url", dsn)
    assert r.code == 0 and r.out == "NSE:RELIANCE -> dhan NSE_EQ:2885\n"
    r = run("route", "NSE:RELIANCE", "--database-url", dsn)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith("NSE:RELIANCE (routes from postgresql://")
    assert lines[1].split() == ["#", "PROVIDER", "PCODE", "CODE", "WHY", "STATE"]
    assert lines[2].split()[:5] == ["1", "dhan", "DHAN", "NSE_EQ:2885", "primary;"]
    assert "explicit mapping" in lines[2]
    assert "disabled: DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN not set" in lines[2]
    assert lines[3].split()[:4] == ["2", "yahoo", "YF", "RELIANCE.NS"]
    assert "backup (priority 10); derived by the provider's rule" in lines[3]
    assert lines[4] == "served by yahoo as RELIANCE.NS"


def test_cli_route_enabled_primary_serves_with_failover(
    run: Run, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHAN_CLIENT_ID", "1000000001")
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", "token")
    run("instruments", "add", "NSE:RELIANCE", "dhan", "NSE_EQ:2885", "--database-url", dsn)
    r = run("route", "nse:reliance", "--database-url", dsn)
    assert r.code == 0
    assert r.out.splitlines()[-1] == "served by dhan as NSE_EQ:2885; failover to yahoo"
    assert "token" not in r.out


def test_cli_route_no_code_for_dhan_skips_it_and_says_why(run: Run, dsn: str) -> None:
    r = run("route", "NSE:INFY", "--database-url", dsn)
    assert r.code == 0
    assert "  not a candidate: dhan (no explicit mapping and its rule derives no code for NSE:INFY)" in r.out
    assert "served by yahoo as INFY.NS" in r.out


def test_cli_route_unknown_exchange_names_it(run: Run, dsn: str) -> None:
    r = run("route", "LSE:VOD", "--database-url", dsn)
    assert r.code == 1
    assert r.err == "mdgate: error: no provider serves exchange 'LSE' (LSE:VOD)\n"


def test_cli_route_all_inactive_no_route(run: Run, dsn: str) -> None:
    run("routes", "set", "NYSE", "yahoo", "--inactive", "--database-url", dsn)
    r = run("route", "NYSE:IBM", "--database-url", dsn)
    assert r.code == 1
    assert r.err == "mdgate: error: no provider can serve NYSE:IBM on NYSE: yahoo inactive\n"


def test_cli_route_without_database_uses_defaults_and_config(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[instruments."NSE:RELIANCE"]\ndhan = "NSE_EQ:2885"\n', encoding="utf-8")
    r = run("--config", str(config), "route", "NSE:RELIANCE")
    assert r.code == 0
    assert "built-in defaults and the config file (no database configured)" in r.out
    assert "NSE_EQ:2885" in r.out and "RELIANCE.NS" in r.out


def test_cli_route_bad_provider_table_is_config_error(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mdgate._errors import ConfigError

    def bad(registry: object, settings: object) -> None:
        raise ConfigError("providers.yahoo.bogus", "unknown key")

    monkeypatch.setattr("mdgate._routing.router.parse_provider_configs", bad)
    r = run("route", "NSE:RELIANCE")
    assert r.code == 2
    assert r.err == "mdgate: error: providers.yahoo.bogus: unknown key\n"


def test_cli_instruments_add_unknown_names_and_unused_note(run: Run, dsn: str) -> None:
    r = run("instruments", "add", "NSE:RELIANCE", "alpaca", "X", "--database-url", dsn)
    assert (r.code, r.err) == (1, "mdgate: error: unknown provider 'alpaca' (known: dhan, yahoo)\n")
    r = run("instruments", "add", "LSE:VOD", "yahoo", "VOD.L", "--database-url", dsn)
    assert r.code == 1 and "unknown exchange 'LSE'" in r.err
    r = run("instruments", "add", "RELIANCE", "dhan", "X", "--database-url", dsn)
    assert r.code == 2 and "bad instrument 'RELIANCE'" in r.err
    r = run("instruments", "add", "NYSE:IBM", "dhan", "X:1", "--extra", "segment=X", "--database-url", dsn)
    assert r.code == 0
    assert "note: dhan has no route for NYSE" in r.out


def test_cli_instruments_list_filters(run: Run, dsn: str) -> None:
    run(
        "instruments",
        "add",
        "NSE:RELIANCE",
        "dhan",
        "NSE_EQ:2885",
        "--extra",
        "lot_size=1",
        "--database-url",
        dsn,
    )
    run("instruments", "add", "NASDAQ:AAPL", "yahoo", "AAPL", "--database-url", dsn)
    r = run("instruments", "list", "--database-url", dsn)
    assert [ln.split() for ln in r.out.splitlines()] == [
        ["INSTRUMENT", "PROVIDER", "CODE", "EXTRA"],
        ["NASDAQ:AAPL", "yahoo", "AAPL"],
        ["NSE:RELIANCE", "dhan", "NSE_EQ:2885", '{"lot_size":"1"}'],
    ]
    r = run("instruments", "list", "--exchange", "nse", "--database-url", dsn)
    assert len(r.out.splitlines()) == 2 and "NSE:RELIANCE" in r.out
    r = run("instruments", "list", "--provider", "yahoo", "--exchange", "NSE", "--database-url", dsn)
    assert r.out == "no instrument mappings match\n"


def test_cli_instruments_import_csv(run: Run, dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text(
        "instrument,code,lot_size\nNSE:RELIANCE,NSE_EQ:2885,1\nBSE:TCS,BSE_EQ:532540,1\n", encoding="utf-8"
    )
    r = run("instruments", "import", "--csv", str(path), "--provider", "dhan", "--database-url", dsn)
    assert r.code == 0 and r.out == f"imported 2 mapping(s) for dhan from {path}\n"
    r = run("instruments", "list", "--provider", "dhan", "--database-url", dsn)
    assert "BSE:TCS" in r.out and "NSE:RELIANCE" in r.out
    bad = tmp_path / "bad.csv"
    bad.write_text("instrument,code\nNSE:A,1\nnope,2\n", encoding="utf-8")
    r = run("instruments", "import", "--csv", str(bad), "--provider", "dhan", "--database-url", dsn)
    assert r.code == 1
    assert r.err == (
        f"mdgate: error: {bad}:3: bad instrument 'nope': expected EXCHANGE:SYMBOL, e.g. NSE:RELIANCE\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("db", "upgrade"),
        ("db", "seed"),
        ("db", "status"),
        ("routes",),
        ("routes", "set", "NSE", "dhan"),
        ("route", "NSE:RELIANCE"),
        ("instruments", "add", "NSE:A", "dhan", "1"),
        ("instruments", "list"),
    ],
)
def test_cli_unreachable_database_one_line_error_no_password(
    run: Run, unused_dsn: str, argv: tuple[str, ...]
) -> None:
    r = run(*argv, "--database-url", unused_dsn)
    assert r.code == 1
    assert r.err.startswith(
        "mdgate: error: cannot reach the database at postgresql://postgres:***@127.0.0.1:"
    )
    assert r.err.count("\n") == 1 and "s3cret" not in r.err and "Traceback" not in r.err


def test_cli_no_database_configured_is_usage_error(run: Run) -> None:
    r = run("instruments", "list")
    assert r.code == 2
    assert r.err.startswith("mdgate: error: no database configured: pass --database-url")


def test_cli_subprocess_mdgate_with_installed_plugins(empty_dsn: str, tmp_path: Path) -> None:
    """The real entry point, the real provider plugins, a real database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}

    def mdgate(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mdgate", *argv, "--database-url", empty_dsn],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    assert mdgate("db", "upgrade").returncode == 0
    assert mdgate("db", "seed").returncode == 0
    assert mdgate("instruments", "add", "NSE:RELIANCE", "dhan", "NSE_EQ:2885").returncode == 0
    r = mdgate("route", "NSE:RELIANCE")
    assert r.returncode == 0, r.stderr
    rows = [ln.split()[:4] for ln in r.stdout.splitlines()[2:4]]
    assert rows == [["1", "dhan", "DHAN", "NSE_EQ:2885"], ["2", "yahoo", "YF", "RELIANCE.NS"]]
    r = mdgate("route", "LSE:VOD")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "mdgate: error: no provider serves exchange 'LSE' (LSE:VOD)"


def test_cli_providers_list_add_set(run: Run, dsn: str) -> None:
    r = run("providers", "--database-url", dsn)
    assert r.code == 0
    assert [ln.split() for ln in r.out.splitlines()[2:]] == [
        ["dhan", "DHAN", "Dhan", "-", "yes", "yes"],
        ["yahoo", "YF", "Yahoo", "Finance", "-", "yes", "yes"],
    ]
    r = run(
        "providers",
        "add",
        "alpaca",
        "ALP",
        "--display-name",
        "Alpaca",
        "--rate-limit",
        "200",
        "--database-url",
        dsn,
    )
    assert r.code == 0 and r.out.startswith("added provider alpaca (code ALP)")
    r = run("providers", "add", "alpaca2", "ALP", "--database-url", dsn)
    assert (r.code, r.err) == (2, "mdgate: error: provider 'alpaca' (code 'ALP') already exists\n")
    r = run("providers", "add", "Bad-Name", "X", "--database-url", dsn)
    assert r.code == 2 and "bad provider name 'Bad-Name'" in r.err
    r = run("routes", "set", "NYSE", "alpaca", "--priority", "5", "--database-url", dsn)
    assert r.code == 0
    r = run("providers", "set", "dhan", "--inactive", "--database-url", dsn)
    assert (r.code, r.out) == (0, "dhan (code DHAN): active no, rate limit -\n")
    r = run("providers", "--database-url", dsn)
    rows = {ln.split()[0]: ln.split() for ln in r.out.splitlines()[2:]}
    assert rows["alpaca"] == ["alpaca", "ALP", "Alpaca", "200", "yes", "no"]
    assert rows["dhan"][-2:] == ["no", "yes"]
    r = run("routes", "--database-url", dsn)
    assert ["NSE", "0", "dhan", "DHAN", "yes", "no", "(provider", "inactive)"] in [
        ln.split() for ln in r.out.splitlines()
    ]
    r = run("providers", "set", "nobody", "--active", "--database-url", dsn)
    assert (r.code, r.err) == (1, "mdgate: error: unknown provider 'nobody' (known: alpaca, dhan, yahoo)\n")


def test_cli_route_malformed_instrument_is_usage_error(run: Run) -> None:
    r = run("route", "RELIANCE")
    assert r.code == 2
    assert r.err == "mdgate: error: bad instrument 'RELIANCE': expected EXCHANGE:SYMBOL, e.g. NSE:RELIANCE\n"


def test_cli_json_of_every_database_command(run: Run, empty_dsn: str, tmp_path: Path) -> None:
    """``--json``: each command that prints data prints one JSON document (nothing else on stdout)."""

    def doc(*argv: str) -> object:
        r = run(*argv, "--json", "--database-url", empty_dsn)
        assert r.code == 0, r.err
        return json.loads(r.out)

    status = doc("db", "status")
    assert status["schema_version"] == 0 and status["needed"] == SCHEMA_VERSION
    assert status["migrations"][0]["state"] == "pending" and status["database"].startswith("postgresql://")
    upgraded = doc("db", "upgrade")
    assert upgraded["applied"][0] == {"version": 1, "name": "routing_tables"}
    assert doc("db", "status")["pending"] == 0
    seeded = doc("db", "seed")
    assert (seeded["providers"], seeded["exchanges"], seeded["mappings"], seeded["reset"]) == (2, 4, 6, False)
    assert doc("db", "seed") == {**seeded, "providers": 0, "exchanges": 0, "mappings": 0}
    routes = doc("routes")
    assert routes["source"] == "database"
    assert {"exchange": "NSE", "priority": 0, "provider": "dhan", "code": "DHAN", "primary": True,
            "active": True} in routes["routes"]
    changed = doc("routes", "set", "NYSE", "yahoo", "--priority", "3")
    assert changed["created"] is False and changed["routes"][0]["priority"] == 3
    providers = doc("providers")["providers"]
    assert [p["name"] for p in providers] == ["dhan", "yahoo"] and providers[0]["installed"] is True
    assert doc("providers", "set", "dhan", "--rate-limit", "5")["rate_limit"] == 5
    assert doc("providers", "add", "acme", "AC")["code"] == "AC"
    added = doc("instruments", "add", "NSE:RELIANCE", "dhan", "NSE_EQ:2885", "--extra", "lot_size=1")
    assert added == {"instrument": "NSE:RELIANCE", "provider": "dhan", "code": "NSE_EQ:2885",
                     "extra": {"lot_size": "1"}, "note": None}
    csv = tmp_path / "codes.csv"
    csv.write_text("instrument,code\nNSE:TCS,NSE_EQ:11536\n", encoding="utf-8")
    assert doc("instruments", "import", "--csv", str(csv), "--provider", "dhan")["imported"] == 1
    listed = doc("instruments", "list", "--provider", "dhan")
    assert [m["instrument"] for m in listed] == ["NSE:RELIANCE", "NSE:TCS"]
    route = doc("route", "NSE:RELIANCE")
    assert route["candidates"][0]["code"] == "NSE_EQ:2885" and route["served_by"] == {
        "provider": "yahoo", "code": "RELIANCE.NS"}


def test_cli_json_routes_without_database(run: Run) -> None:
    r = run("routes", "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    assert doc["source"] == "defaults" and doc["database"] is None
    assert doc["routes"][0] == {"exchange": "BSE", "priority": 0, "provider": "dhan", "code": "DHAN",
                                "primary": True, "active": True}
