"""HTTP answers of the client server: response builders and ``/history``."""

from __future__ import annotations

import http
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from websockets.datastructures import Headers
from websockets.http11 import Response

from mdgate._errors import InstrumentError
from mdgate._model import encode, parse_instrument
from mdgate.plugins.stores.protocol import BAR_INTERVALS, HistoryReader

__all__ = ["bytes_response", "history", "json_response", "text_response"]

log = structlog.get_logger("mdgate._serve.server")


def json_response(status: int, body: Any) -> Response:
    """A JSON response (no caching)."""
    data = encode(body) + b"\n"
    reason = http.HTTPStatus(status).phrase
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-store")])
    return Response(status, reason, headers, data)


def bytes_response(status: int, body: bytes, content_type: str,
                   extra: Sequence[tuple[str, str]] = ()) -> Response:
    """A response of ``body`` as it is, not cached."""
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def text_response(status: int, text: str, extra: Sequence[tuple[str, str]] = ()) -> Response:
    """A plain-text response."""
    data = text.encode()
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(data))), *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


async def history(store: HistoryReader, query: dict[str, list[str]]) -> Response:
    """Answer ``GET /history`` (ticks or bars of one instrument) from ``store``."""

    def one(key: str) -> str | None:
        values = query.get(key)
        return values[0] if values else None

    try:
        name, _, _ = parse_instrument(one("instrument") or "")
    except InstrumentError as exc:
        return json_response(400, {"error": "bad_instrument", "message": str(exc)})
    interval = one("interval") or "ticks"
    if interval != "ticks" and interval not in BAR_INTERVALS:
        return json_response(400, {"error": "bad_request",
                                   "message": "interval must be ticks, 1m, 5m or 15m"})
    try:
        raw_since, raw_until = one("since"), one("until")
        since = int(raw_since) if raw_since else None
        until = int(raw_until) if raw_until else None
        limit = int(one("limit") or 1000)
    except ValueError:
        return json_response(400, {"error": "bad_request",
                                   "message": "since/until are epoch ms, limit an integer"})
    limit = max(1, min(limit, 100_000))
    try:
        with anyio.fail_after(10):
            if interval == "ticks":
                rows: list[Any] = await store.history(name, since_ms=since, until_ms=until, limit=limit)
            else:
                rows = await store.bars(name, interval, since_ms=since, until_ms=until, limit=limit)
    except Exception as exc:
        log.warning("history_failed", instrument=name, error=str(exc))
        return json_response(503, {"error": "unavailable", "message": "the store cannot answer now"})
    key = "ticks" if interval == "ticks" else "bars"
    return json_response(200, {"instrument": name, "interval": interval, key: rows})
