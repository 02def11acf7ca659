"""The cheap histograms, the provider-latency counting, store readiness and the collector's names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mdgate._app import store_unready
from mdgate._histogram import MS_BOUNDS, Histogram
from mdgate._metrics import GatewayCollector, MetricsParts
from mdgate._model import Tick
from mdgate._stats import ProviderLatency

DOCS = Path(__file__).parents[2] / "docs"


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    h = Histogram((1, 5, 10), scale=0.001)
    for v in (0, 1, 2, 5, 6, 10, 11, 500):
        h.observe(v)
    # cumulative, le in seconds, +Inf last
    assert h.buckets() == [("0.001", 2), ("0.005", 4), ("0.01", 6), ("+Inf", 8)]
    assert h.count == 8
    assert h.seconds_sum() == 0.535


def test_observe_many_equals_observing_each() -> None:
    values = [0.2, 3, 7.5, 12, 1, 60000, 70000]
    one, many = Histogram(MS_BOUNDS), Histogram(MS_BOUNDS)
    for v in values:
        one.observe(v)
    many.observe_many(values)
    assert one.counts == many.counts and one.total == many.total


def tick(provider: str, ts: int, recv_ts: int) -> Tick:
    return Tick("EX:A", 1.0, ts, recv_ts, provider)


def test_provider_latency_per_provider_code_and_clamped_at_zero() -> None:
    lat = ProviderLatency()
    lat.observe([tick("YF", 1000, 1001), tick("DH", 1000, 1030), tick("YF", 1000, 1004),
                 tick("YF", 2000, 1990)])  # a provider clock 10 ms ahead: counted as 0
    yf, dh = lat.by_provider["YF"], lat.by_provider["DH"]
    assert yf.buckets()[:3] == [("0.001", 2), ("0.002", 2), ("0.005", 3)]
    assert yf.total == 1 + 4 + 0
    assert dh.count == 1 and dh.buckets()[5] == ("0.05", 1) and dh.buckets()[4] == ("0.025", 0)
    lat.observe([])
    assert sum(h.count for h in lat.by_provider.values()) == 4


def test_store_ready_when_ok_or_buffering_within_its_limit() -> None:
    assert store_unready({"kind": "memory", "state": "ok", "buffered": 0}) == []
    assert store_unready({"kind": "redis", "state": "down", "buffered": 29, "buffer_max": 30}) == []
    assert store_unready({"kind": "redis", "state": "down", "buffered": 30, "buffer_max": 30}) == [
        "store redis is down and its buffer is full (30 ticks waiting, buffer_max 30): "
        "new ticks push out the oldest"]
    # a store that does not say how much it can buffer, or whose plugin faulted, is not ready
    assert store_unready({"kind": "s3", "state": "down", "buffered": 0}) == ["store s3 is down"]
    assert store_unready({"kind": "redis", "state": "down", "error": "boom", "buffered": 0,
                          "buffer_max": 30}) == ["store redis is down: boom"]


STATUS: dict[str, Any] = {
    "status": "ok",
    "providers": {"yahoo": {"state": "stalled", "code": "YF", "frames": 7, "ticks": 5, "reconnects": 2,
                            "connections": 1, "subscriptions": 3, "last_message_age_ms": 1500,
                            "decode_errors_by_kind": {"bad_frame": 4}}},
    "store": {"kind": "redis", "state": "ok", "buffered": 3, "dropped": 1, "written": 40},
    "clients": 2,
    "server": {"closed": {"slow": 1, "over_budget": 0}, "refused": {"origin": 2}, "dropped_ticks": 6,
               "sent_bytes": 900},
    "routing": {"by_provider": {"yahoo": 3}, "switches_total": 4},
    "pipeline": {"ticks": 5, "batches": 2, "queued": 0, "backpressure_waits": 1, "errors": 0, "conflated": 8},
}


def page(status: dict[str, Any] = STATUS) -> str:
    lat = ProviderLatency()
    lat.observe([tick("YF", 1000, 1003)])
    parts = MetricsParts(status=lambda: status, ready=lambda: (False, ["x"]),
                         provider_latency=lat.by_provider, tick_age=Histogram(MS_BOUNDS, scale=0.001),
                         store_write=lambda: Histogram((0.01, 0.1)), version="9.9", started_at=5.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(parts))
    return generate_latest(registry).decode()


def test_the_collector_reads_the_status_document() -> None:
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for f in text_string_to_metric_families(page()) for s in f.samples}
    yahoo = (("provider", "yahoo"),)
    assert m[("mdgate_provider_frames_total", yahoo)] == 7
    assert m[("mdgate_provider_up", yahoo)] == 0
    assert m[("mdgate_provider_state", (("provider", "yahoo"), ("state", "stalled")))] == 1
    assert m[("mdgate_provider_last_message_age_seconds", yahoo)] == 1.5
    assert m[("mdgate_provider_decode_errors_total", (("kind", "bad_frame"), ("provider", "yahoo")))] == 4
    assert m[("mdgate_provider_latency_seconds_count", yahoo)] == 1  # code YF -> name yahoo
    assert m[("mdgate_store_ticks_written_total", (("store", "redis"),))] == 40
    assert m[("mdgate_clients_closed_total", (("reason", "slow"),))] == 1
    assert m[("mdgate_client_conflated_ticks_total", ())] == 8
    assert m[("mdgate_failover_switches_total", ())] == 4
    assert m[("mdgate_ready", ())] == 0
    assert m[("mdgate_info", (("version", "9.9"),))] == 1


def test_every_exported_metric_is_documented_and_follows_the_conventions() -> None:
    exported = {f.name for f in text_string_to_metric_families(page())}
    documented = set(re.findall(r"`(mdgate_[a-z_]+)`", (DOCS / "operations.md").read_text()))
    for name in exported:
        assert name.startswith("mdgate_")
        assert not name.endswith("_total")  # the parser strips it from counters' family names
        assert name in documented or f"{name}_total" in documented, f"{name} missing from docs/operations.md"
