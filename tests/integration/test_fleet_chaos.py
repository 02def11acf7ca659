"""
The fleet chaos test, CI-sized: ``benchmarks/fleet_chaos.py`` (the committed driver) with a
3 s lease and 4 s phases: a real Redis Cluster (3 primaries + 3 replicas), a throw-away
PostgreSQL, the fake Dhan feed, two ingest and two fan-out ``mdgate run`` processes and
clients on both fan-out instances; kill -9 an ingest instance, kill -9 a Redis primary, stop a
fan-out instance. The driver checks each guarantee; this test asserts its JSON report.

The driver runs in its own session; if it hangs, the test kills its whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet_chaos.py"
LEASE_TTL = 3.0

#: Every check the driver makes; each must be there and pass.
CHECKS = (
    "slots_move_within_lease_ttl", "clients_get_gap_then_ticks", "redis_primary_failover",
    "fanout_stop_resume", "streams_each_seq_once", "no_acknowledged_tick_lost", "clients_every_seq_once",
    "sessions_per_credential_within_slots", "two_ingest_instances_shared_the_slots", "survivors_up",
)


@pytest.mark.timeout(300)
def test_fleet_survives_an_ingest_kill_a_redis_primary_kill_and_a_fanout_stop(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "--lease-ttl", str(LEASE_TTL), "--phase", "4", "--rate", "200",
         "--clients", "4", "--json", str(report_path), "--tmp", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=260)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the fleet chaos driver hung:\n{output[-4000:]}")
    assert report_path.exists(), f"driver failed (exit {proc.returncode}):\n{output[-4000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, output[-6000:]
    checks = report["checks"]
    assert set(CHECKS) <= set(checks), (sorted(checks), output[-4000:])
    failed = {name: c["detail"] for name, c in checks.items() if not c["ok"]}
    assert not failed, f"{failed}\n{output[-6000:]}"
    assert proc.returncode == 0, output[-4000:]
    assert report["timings"]["slot_move_s"] <= LEASE_TTL + 1.5
    ticks = report["ticks"]
    assert ticks["received"] > 1000 and ticks["stored"] > 500, ticks
