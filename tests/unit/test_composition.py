"""
The composition root and the parts it hands out: one owner per concern.

The latest tick has one rule (``mdgate._latest``), the client server is
built from its settings slice and narrow collaborators (never the gateway),
provider configurations are held in one place (the sessions; the router
reads them through), and a reload has each part apply its own slice.
The ``/status`` document is tested in ``test_stats.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from mdgate._app import Gateway
from mdgate._config import Settings, load_settings
from mdgate._latest import LatestTicks
from mdgate._model import Tick
from mdgate._providers.registry import load_registry
from mdgate._routing.router import live_configs
from mdgate._serve.backends import Backends
from mdgate._serve.server import ClientServer

BASE = 1_700_000_000_000


def tick(ts: int, price: float, instrument: str = "NSE:RELIANCE") -> Tick:
    return Tick(instrument, price, ts, ts + 1, "DHAN")


# -- the latest tick ---------------------------------------------------------------------------


def test_merged_with_the_store_keeps_the_newer_tick_and_on_a_tie_the_own() -> None:
    latest = LatestTicks([tick(BASE + 5, 1.0), tick(BASE, 2.0, "NSE:TCS"), tick(BASE, 3.0, "NSE:INFY")])
    stored = {t.instrument: t for t in [
        tick(BASE + 9, 9.0),  # the store's is newer: it wins
        tick(BASE - 1, 8.0, "NSE:TCS"),  # older: the own stays
        tick(BASE, 7.0, "NSE:INFY"),  # same ts: the own (the later arrival) wins
        tick(BASE, 6.0, "NSE:SBIN"),  # only the store has it
    ]}
    got = latest.merged(["NSE:SBIN", "NSE:RELIANCE", "NSE:TCS", "NSE:INFY", "NSE:NONE"], stored)
    assert [(t.instrument, t.price) for t in got] == [
        ("NSE:SBIN", 6.0), ("NSE:RELIANCE", 9.0), ("NSE:TCS", 2.0), ("NSE:INFY", 3.0)]


@pytest.mark.anyio
async def test_snapshot_asks_the_store_only_for_what_it_lacks_and_survives_its_failure() -> None:
    latest = LatestTicks([tick(BASE, 1.0)])
    asked: list[list[str]] = []

    async def stored(names: Any) -> dict[str, Tick]:
        asked.append(list(names))
        return {"NSE:TCS": tick(BASE, 2.0, "NSE:TCS")}

    snap = await latest.snapshot(["NSE:RELIANCE", "NSE:TCS"], stored)
    assert [t.price for t in snap] == [1.0, 2.0] and asked == [["NSE:TCS"]]

    async def broken(names: Any) -> dict[str, Tick]:
        raise OSError("store down")

    with capture_logs() as logs:
        snap = await latest.snapshot(["NSE:RELIANCE", "NSE:TCS"], broken)
    assert [t.price for t in snap] == [1.0]
    assert [e["event"] for e in logs] == ["snapshot_store_failed"]
    assert [t.price for t in await latest.snapshot(["NSE:RELIANCE", "NSE:TCS"], None)] == [1.0]


# -- the client server's collaborators ---------------------------------------------------------


def test_client_server_is_handed_its_slice_and_collaborators_not_the_gateway() -> None:
    gw = Gateway(Settings(), load_registry({}, entry_points=False))
    backends = gw.server.backends
    assert isinstance(backends, Backends)
    assert backends.fanout is gw.fanout and backends.interest is gw.subs and backends.history is gw.store
    assert gw.server.settings is gw.settings.server
    assert not any(v is gw for v in vars(gw.server).values())
    # on its own (unit tests), a server has no routes, no history and an empty status
    alone = ClientServer(Settings().server)
    assert alone.backends.status() == {}


# -- provider configurations: one place ---------------------------------------------------------


def test_router_reads_the_configs_the_sessions_hold() -> None:
    a = SimpleNamespace(config={"token": "one"}, disabled_reason=None)
    b = SimpleNamespace(config=None, disabled_reason="no token")
    configs = live_configs({"a": a, "b": b})
    assert dict(configs.configs) == {"a": {"token": "one"}} and dict(configs.disabled) == {"b": "no token"}
    a.config, b.config, b.disabled_reason = {"token": "two"}, {"token": "b"}, None  # a reload applied
    assert dict(configs.configs) == {"a": {"token": "two"}, "b": {"token": "b"}}
    assert dict(configs.disabled) == {} and configs.configs.get("c") is None


# -- reload: each part applies its own slice ---------------------------------------------------


def test_reload_has_each_part_apply_its_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MDGATE_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "mdgate.toml"
    path.write_text("[server]\nport = 9001\ndrain_timeout = 5\n[subscriptions]\nlinger = 7\n")
    gw = Gateway(load_settings(path, {}), load_registry({}, entry_points=False), config_path=str(path))
    assert (gw.subs.linger, gw.server.settings.drain_timeout) == (7, 5)
    path.write_text("[server]\nport = 9002\ndrain_timeout = 9\n[subscriptions]\nlinger = 3\n")
    with capture_logs() as logs:
        assert gw.reload()
    assert gw.subs.linger == 3
    assert gw.server.settings.drain_timeout == 9 and gw.server.settings.port == 9001  # port: restart
    assert {"event": "config_change_needs_restart", "key": "server.port", "log_level": "warning"} in logs
    assert gw.settings.server.port == 9002  # what the file says now; the server keeps listening where it is
