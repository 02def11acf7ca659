"""
Counters and the ``/status`` document (``mdgate._stats``): the document keeps
the shape docs/client-protocol.md describes, and the pipeline counts into it.
"""

from __future__ import annotations

from mdgate._app import Gateway
from mdgate._config import Settings
from mdgate._providers.registry import load_registry


def test_status_document_keeps_its_shape() -> None:
    doc = Gateway(Settings(), load_registry({}, entry_points=False)).status()
    assert list(doc) == ["status", "providers", "store", "clients", "server", "routing", "plugins",
                         "pipeline", "uptime_s"]
    assert list(doc["pipeline"]) == ["ticks", "batches", "queued", "backpressure_waits", "errors",
                                     "fanout_ticks", "conflated", "seq"]
    assert list(doc["server"]) == ["clients", "sockets", "max_clients", "refused", "closed", "limit_errors",
                                   "internal_errors", "accept_errors", "dropped_ticks", "sent_bytes",
                                   "conflation_gaps"]
    assert doc["clients"] == 0 and doc["server"]["closed"] == {"slow": 0, "over_budget": 0}


def test_status_shows_what_the_parts_counted() -> None:
    gw = Gateway(Settings(), load_registry({}, entry_points=False))
    gw.pipeline_stats.ticks, gw.pipeline_stats.batches, gw.pipeline_stats.errors = 7, 2, 1
    gw.server.stats.closed["slow"] += 1
    gw.server.stats.accept_errors += 3
    doc = gw.status()
    assert (doc["pipeline"]["ticks"], doc["pipeline"]["batches"], doc["pipeline"]["errors"]) == (7, 2, 1)
    assert doc["server"]["closed"] == {"slow": 1, "over_budget": 0} and doc["server"]["accept_errors"] == 3
