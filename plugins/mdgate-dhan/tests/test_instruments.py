"""Scrip master parsing and ``mdgate dhan import-instruments``."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import click
import psycopg
import pytest

from mdgate._cli.root import adopt, invoke
from mdgate_dhan.cli import add_commands, import_instruments
from mdgate_dhan.instruments import ScripMasterError, mappings_to_toml, parse_scrip_master

DATA = Path(__file__).parent / "data"
COMPACT = DATA / "scrip_master_compact.csv"
DETAILED = DATA / "scrip_master_detailed.csv"


def parse(path: Path):  # type: ignore[no-untyped-def]
    with open(path, newline="", encoding="utf-8") as fh:
        return parse_scrip_master(fh)


def test_parse_compact_maps_equities_and_indices_by_header_name() -> None:
    mappings, _ = parse(COMPACT)
    codes = {m.instrument: m.code for m in mappings}
    assert codes["NSE:RELIANCE"] == "NSE_EQ:2885"
    assert codes["BSE:RELIANCE"] == "BSE_EQ:500325"
    assert codes["NSE:HDFCBANK"] == "NSE_EQ:1333"
    assert codes["NSE:TCS"] == "NSE_EQ:11536"  # EQ preferred over the BE row
    assert codes["BSE:TCS"] == "BSE_EQ:532540"
    assert codes["NSE:M&M"] == "NSE_EQ:2031"
    assert codes["NSE:NIFTY"] == "IDX_I:13"
    assert codes["NSE:INDIAVIX"] == "IDX_I:21"  # blanks removed from index symbols
    assert codes["NSE:TTFSTOCK"] == "NSE_EQ:90001"  # BE-only symbol still imported
    assert "NSE:DEBTX" not in codes  # series N1 is not cash equity
    assert not any(c.startswith("NSE_FNO") for c in codes.values())  # derivatives skipped
    reliance = next(m for m in mappings if m.instrument == "NSE:RELIANCE")
    assert reliance.provider == "dhan"
    assert reliance.extra == {
        "segment": "NSE_EQ",
        "security_id": "2885",
        "tick_size": "0.05",
        "lot_size": "1",
        "series": "EQ",
        "instrument_type": "ES",
        "display_name": "Reliance Industries",
        "symbol_name": "RELIANCE INDUSTRIES LTD",
    }


def test_parse_compact_reports_bad_rows_with_line_numbers() -> None:
    _, bad = parse(COMPACT)
    assert [(b.line, b.reason.split(" ")[0]) for b in bad] == [
        (15, "bad"),
        (16, "expected"),
        (17, "unknown"),
        (18, "symbol"),
        (19, "duplicate"),
    ]
    assert "'abc'" in bad[0].reason
    assert "NSE_EQ:2885" in bad[4].reason


def test_parse_detailed_uses_underlying_symbol_and_keeps_isin() -> None:
    mappings, bad = parse(DETAILED)
    by_name = {m.instrument: m for m in mappings}
    assert by_name["NSE:RELIANCE"].code == "NSE_EQ:2885"
    assert by_name["NSE:RELIANCE"].extra["isin"] == "INE002A01018"
    assert by_name["NSE:SMEONE"].extra["series"] == "SM"
    assert by_name["NSE:SMEONE"].extra["lot_size"] == "1200"
    assert by_name["BSE:SENSEX"].code == "IDX_I:51"
    assert by_name["NSE:BANKNIFTY"].code == "IDX_I:25"
    assert not any(m.code.startswith("MCX") for m in mappings)
    assert [b.line for b in bad] == [11, 12, 13, 14]
    assert "columns" in bad[3].reason


def test_parse_not_a_scrip_master_raises() -> None:
    with pytest.raises(ScripMasterError, match="SECURITY_ID"):
        parse_scrip_master(io.StringIO("a,b,c\n1,2,3\n"))
    with pytest.raises(ScripMasterError, match="empty"):
        parse_scrip_master(io.StringIO(""))


def test_mappings_to_toml_is_valid_instruments_config() -> None:
    mappings, _ = parse(COMPACT)
    data = tomllib.loads(mappings_to_toml(mappings))
    assert data["instruments"]["NSE:RELIANCE"] == {"dhan": "NSE_EQ:2885"}
    assert data["instruments"]["NSE:M&M"] == {"dhan": "NSE_EQ:2031"}
    assert len(data["instruments"]) == len(mappings)


def _root() -> click.Group:
    """The ``mdgate`` group with only this plugin's commands (and mdgate's --config on each)."""
    root = click.Group("mdgate")
    add_commands(root)
    adopt(root)
    return root


def mdgate(*argv: str) -> int:
    """Run ``mdgate ARGV`` in-process: mdgate's one error line and exit code."""
    return invoke(_root(), argv)


def test_cli_toml_output_writes_snippet_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dhan.toml"
    dhan = _root().commands["dhan"]
    assert isinstance(dhan, click.Group) and dhan.commands["import-instruments"] is import_instruments
    assert mdgate("dhan", "import-instruments", "--csv", str(COMPACT), "--toml", str(out)) == 0
    assert tomllib.loads(out.read_text())["instruments"]["BSE:TCS"] == {"dhan": "BSE_EQ:532540"}
    printed = capsys.readouterr().out
    assert "imported 10 Dhan instrument mappings" in printed
    assert "skipped 5 bad rows" in printed
    assert "line 15: bad security id 'abc'" in printed


def test_cli_without_database_fails_with_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MDGATE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./mdgate.toml
    assert mdgate("dhan", "import-instruments", "--csv", str(COMPACT)) == 2
    err = capsys.readouterr().err
    assert "--toml" in err and err.startswith("mdgate: error: ") and err.count("\n") == 1


def test_cli_missing_file_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert mdgate("dhan", "import-instruments", "--csv", "/nonexistent/x.csv", "--toml", "-") == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_csv_or_url_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert mdgate("dhan", "import-instruments", "--toml", "-") == 2
    assert capsys.readouterr().err == "mdgate: error: give one of --csv PATH or --url [URL]\n"


def test_cli_url_default_is_compact_master() -> None:
    ctx = import_instruments.make_context("import-instruments", ["--url"])
    assert ctx.params["url"] == "https://images.dhan.co/api-data/api-scrip-master.csv"


def test_cli_database_import_upserts_mappings(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mdgate("dhan", "import-instruments", "--csv", str(DETAILED), "--database-url", pg_dsn) == 0
    assert "imported 7 Dhan instrument mappings (database)" in capsys.readouterr().out
    # Importing the compact file too updates and extends them.
    assert mdgate("dhan", "import-instruments", "--csv", str(COMPACT), "--database-url", pg_dsn) == 0
    from mdgate.plugins.pg_routes.instruments import list_instrument_mappings

    with psycopg.connect(pg_dsn) as conn:
        rows = {r.instrument: r for r in list_instrument_mappings(conn, provider="dhan")}
    assert rows["NSE:RELIANCE"].code == "NSE_EQ:2885"
    assert rows["BSE:SENSEX"].code == "IDX_I:51"
    assert rows["NSE:INDIAVIX"].code == "IDX_I:21"
    assert len(rows) == 13


def test_cli_url_downloads_from_local_http_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(DATA)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/scrip_master_detailed.csv"
        out = tmp_path / "out.toml"
        assert mdgate("dhan", "import-instruments", "--url", url, "--toml", str(out)) == 0
        assert "imported 7" in capsys.readouterr().out
        assert tomllib.loads(out.read_text())["instruments"]["BSE:SENSEX"] == {"dhan": "IDX_I:51"}
        missing = url.replace("detailed", "missing")
        assert mdgate("dhan", "import-instruments", "--url", missing, "--toml", str(out)) == 1
        assert "404" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
