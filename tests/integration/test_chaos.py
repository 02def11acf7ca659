"""
The chaos soak, CI-sized: ``benchmarks/soak_chaos.py`` (the committed
driver, unchanged) for 25 s with every fault kind at least once, asserting
the soak's guarantees from its JSON report.

The driver runs as its own process in its own session: it starts the real
``mdgate run``, a throw-away ``redis-server`` and the fakes, and stops them
itself; if it hangs, the test kills its whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak_chaos.py"

#: Every fault kind of the driver; each must have been injected at least once.
FAULT_KINDS = (
    "yahoo_drop", "yahoo_refuse", "yahoo_stall", "yahoo_malformed",
    "dhan_drop", "dhan_auth_807", "dhan_stall", "dhan_malformed",
    "redis_kill", "redis_pause",
    "client_garbage", "client_huge", "client_nesting", "client_flood", "client_made_up", "client_slow",
)
#: Malformed frames the fakes must have sent (besides the far-future ``bad_ts`` ticks).
MALFORMED = (
    "yahoo:bad_json", "yahoo:bad_envelope", "yahoo:bad_base64", "yahoo:bad_protobuf", "yahoo:unknown_symbol",
    "dhan:short_packet", "dhan:bad_length", "dhan:unknown_code", "dhan:unknown_symbol", "dhan:text_frame",
    "dhan:stacked_bad_tail",
)


@pytest.mark.timeout(240)
def test_chaos_soak_keeps_every_tick_once_memory_flat_daemon_up(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, str(SOAK), "--duration", "25", "--seed", "7", "--rss-limit-mb", "10",
         "--json", str(report_path), "--tmp", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's session: it and everything it started
        output, _ = proc.communicate()
        pytest.fail(f"the soak driver hung:\n{output[-4000:]}")
    assert report_path.exists(), f"driver failed (exit {proc.returncode}):\n{output[-4000:]}"
    report = json.loads(report_path.read_text())
    failed = {name: c["detail"] for name, c in report["checks"].items() if not c["ok"]}
    assert not failed, f"{failed}\n{output}"
    assert proc.returncode == 0, output

    faults = report["faults"]
    assert {k: faults.get(k, 0) for k in FAULT_KINDS if not faults.get(k)} == {}, output
    assert set(faults) == set(FAULT_KINDS)
    assert not [f for f in report["fault_log"] if "error" in f], output
    assert all(report["malformed_sent"].get(k) for k in MALFORMED), report["malformed_sent"]

    ticks = report["ticks"]
    assert ticks["sent"] > 5_000 and ticks["sent_by_provider"]["YF"] and ticks["sent_by_provider"]["DHAN"]
    assert (ticks["missing"], ticks["duplicates"], ticks["phantom"]) == (0, 0, 0), ticks
    assert (ticks["feed_missing"], ticks["feed_duplicates"]) == (0, 0), ticks
    # the excuses are rare and each one is explained by the gateway's own counters
    excused = ticks["excused_in_flight_at_abort"] + ticks["excused_in_flight_at_unsubscribe"]
    assert ticks["stored"] + excused == ticks["sent"]
    assert excused < ticks["sent"] / 100
    assert ticks["excused_unsubscribe_unexplained"] == 0
    assert ticks["bad_ts_sent"] >= 2 and ticks["bad_ts_stored"] == 0
    # Redis really went away and came back, and the provider sessions really reconnected
    assert report["provider_connections"]["yahoo"] >= 3 and report["provider_connections"]["dhan"] >= 3

    assert report["exited_during_soak"] is None
    assert report["healthz"]["failures"] == 0 and report["healthz"]["checks"] >= 20
    rss = report["rss"]
    assert rss["last_mb"] - rss["first_after_warmup_mb"] <= 10, rss
    assert report["stop"]["rc"] == 0
    assert report["log"]["secrets_found"] == 0
