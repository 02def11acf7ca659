"""
The chaos soak's checks: Redis against the fakes' ledger (exactly once),
the gateway's memory series (flat after warm-up) and its log (no secrets).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import redis
from _chaos_fakes import UNSUB_GRACE, Ledger

#: Provider code stored with a tick -> provider name.
PROVIDER_NAMES = {"YF": "yahoo", "DHAN": "dhan"}

Key = tuple[str, str, int]  # (instrument, provider code, volume)


def _entries(r: redis.Redis, key: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    lo = "-"
    while True:
        batch = cast("list[tuple[bytes, dict[bytes, bytes]]]", r.xrange(key, lo, "+", count=10_000))
        if not batch:
            return
        yield from batch
        lo = "(" + batch[-1][0].decode()


def _key(fields: dict[bytes, bytes]) -> Key | None:
    try:
        return (fields[b"instrument"].decode(), fields[b"provider"].decode(), int(fields[b"volume"]))
    except (KeyError, ValueError):
        return None


def read_redis(url: str) -> dict[str, Any]:
    """Every tick in every ``mdgate:{*}:ticks`` stream and in ``mdgate:feed``, counted by key."""
    r = redis.Redis.from_url(url, socket_timeout=30)
    try:
        streams: Counter[Key] = Counter()
        feed: Counter[Key] = Counter()
        unreadable = 0
        max_ts = 0
        keys = sorted(k.decode() for k in r.scan_iter(match="mdgate:{*}:ticks", count=1000))
        for k in keys:
            for _id, fields in _entries(r, k):
                key = _key(fields)
                if key is None:
                    unreadable += 1
                    continue
                streams[key] += 1
                max_ts = max(max_ts, int(fields.get(b"ts", b"0")))
        gaps = 0
        for _id, fields in _entries(r, "mdgate:feed"):
            if fields.get(b"type") == b"gap":  # the feed carries the gaps the gateway announced
                gaps += 1
                continue
            key = _key(fields)
            if key is None:
                unreadable += 1
                continue
            feed[key] += 1
        return {"streams": streams, "feed": feed, "unreadable": unreadable, "feed_gaps": gaps,
                "stream_keys": len(keys),
                "max_ts": max_ts}
    finally:
        r.close()


def exactly_once(
    ledger: Ledger, code_maps: dict[str, dict[str, str]], stored: dict[str, Any],
) -> dict[str, Any]:
    """
    Compare what the fakes sent with what Redis holds.

    Args:
        ledger: the fakes' ledger.
        code_maps: provider name -> {code: instrument}.
        stored: :func:`read_redis`'s result.
    """
    streams: Counter[Key] = stored["streams"]
    feed: Counter[Key] = stored["feed"]
    sent: dict[Key, tuple[Any, int, str, float]] = {}
    repeated_sends = 0
    for entry, i, code, volume, t in ledger.all_sent():
        provider_code = "YF" if entry.provider == "yahoo" else "DHAN"
        key = (code_maps[entry.provider][code], provider_code, volume)
        if key in sent:
            repeated_sends += 1  # a driver bug: two ticks with one identity
        sent[key] = (entry, i, code, t)
    bad_ts = {(instrument, provider, volume) for provider, instrument, volume in ledger.bad_ts}

    duplicates = sum(n - 1 for n in streams.values() if n > 1)
    phantom = [k for k in streams if k not in sent and k not in bad_ts]
    bad_ts_stored = [k for k in streams if k in bad_ts]
    missing: list[dict[str, Any]] = []
    excused_abort = 0
    excused_unsub: Counter[str] = Counter()
    t_origin = min((e.opened for e in ledger.conns.values()), default=0.0)
    for key, (entry, i, code, t) in sent.items():
        if streams.get(key):
            continue
        if entry.closed_by == "driver" and i >= entry.flushed:
            excused_abort += 1
            continue
        if any(t <= u <= t + UNSUB_GRACE for u in entry.unsubs.get(code, ())):
            excused_unsub[key[1]] += 1
            continue
        missing.append({
            "instrument": key[0], "provider": key[1], "volume": key[2], "connection": entry.conn_id,
            "sent_at_s": round(t - t_origin, 3), "conn_closed_by": entry.closed_by,
            "conn_closed_at_s": None if entry.closed_at is None else round(entry.closed_at - t_origin, 3),
            "index_on_conn": i, "conn_ticks": len(entry.sent),
        })
    feed_duplicates = sum(n - 1 for n in feed.values() if n > 1)
    feed_missing = sum(1 for k in streams if k not in feed)
    by_provider: Counter[str] = Counter(k[1] for k in sent)
    missing_by: Counter[str] = Counter(f"{m['provider']}/closed_by={m['conn_closed_by']}" for m in missing)
    return {
        "sent": len(sent),
        "sent_by_provider": dict(by_provider),
        "stored": sum(streams.values()),
        "stored_distinct": len(streams),
        "duplicates": duplicates,
        "missing": len(missing),
        "missing_by": dict(missing_by),
        "missing_examples": sorted(missing, key=lambda m: m["sent_at_s"])[:15],
        "excused_in_flight_at_abort": excused_abort,
        "excused_in_flight_at_unsubscribe": sum(excused_unsub.values()),
        "excused_unsubscribe_by_provider": dict(excused_unsub),
        "phantom": len(phantom),
        "phantom_examples": [list(k) for k in phantom[:10]],
        "bad_ts_sent": len(bad_ts),
        "bad_ts_stored": len(bad_ts_stored),
        "feed_entries": sum(feed.values()),
        "feed_duplicates": feed_duplicates,
        "feed_missing": feed_missing,
        "unreadable_entries": stored["unreadable"],
        "driver_repeated_identities": repeated_sends,
    }


def rss_summary(samples: list[tuple[float, int]], warmup: float) -> dict[str, Any]:
    """``samples``: (seconds since start, VmRSS KiB). Figures in MiB after ``warmup`` seconds."""
    after = [(t, kb / 1024) for t, kb in samples if t >= warmup]
    if len(after) < 2:
        return {"samples": len(samples), "after_warmup": len(after)}
    ts = [t for t, _ in after]
    ms = [m for _, m in after]
    n = len(after)
    mt, mm = sum(ts) / n, sum(ms) / n
    var = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (m - mm) for t, m in after) / var if var else 0.0
    third = max(1, n // 3)
    return {
        "samples": len(samples),
        "warmup_s": warmup,
        "start_mb": round(samples[0][1] / 1024, 1),
        "first_after_warmup_mb": round(ms[0], 1),
        "last_mb": round(ms[-1], 1),
        "max_mb": round(max(m for _, m in ((t, kb / 1024) for t, kb in samples)), 1),
        "max_after_warmup_mb": round(max(ms), 1),
        "growth_mb": round(ms[-1] - ms[0], 1),
        "slope_mb_per_min": round(slope * 60, 2),
        "mean_first_third_mb": round(sum(ms[:third]) / third, 1),
        "mean_last_third_mb": round(sum(ms[-third:]) / third, 1),
    }


def scan_log(path: Path, secrets: Iterable[str]) -> dict[str, Any]:
    """Lines, bytes, events and error levels of the gateway's log; which secrets appear in it."""
    events: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    tracebacks = 0
    lines = 0
    found: set[str] = set()
    secrets = [s for s in secrets if s]
    first_errors: list[str] = []
    with path.open("r", errors="replace") as fh:
        for line in fh:
            lines += 1
            for s in secrets:
                if s in line:
                    found.add(s)
            if "Traceback" in line:
                tracebacks += 1
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                events[str(doc.get("event"))] += 1
                level = str(doc.get("level"))
                levels[level] += 1
                if level in ("error", "critical") and len(first_errors) < 8:
                    first_errors.append(line.strip()[:300])
    return {
        "lines": lines,
        "bytes": path.stat().st_size,
        "levels": dict(levels),
        "top_events": dict(events.most_common(12)),
        "tracebacks": tracebacks,
        "first_errors": first_errors,
        "secrets_found": len(found),
    }
