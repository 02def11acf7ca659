"""
The chaos soak's verdict: its checks (the guarantees, each pass or fail) and
the human summary it prints.
"""

from __future__ import annotations

import argparse
from typing import Any

from _chaos_procs import MAX_CLIENTS_PER_ADDRESS


def unexplained_unsubscribes(ticks: dict[str, Any], decode_errors: dict[str, Any] | None,
                             malformed: dict[str, int]) -> int:
    """
    Ticks excused as "in flight at an unsubscribe" that the gateway did not count.

    The gateway counts every frame of a code it no longer tracks as decode error
    ``unknown_symbol``; the excused ticks of a provider must not outnumber those
    (less the ``unknown_symbol`` frames the driver sent on purpose).
    """
    if not decode_errors:
        return 0
    out = 0
    for provider, code in (("yahoo", "YF"), ("dhan", "DHAN")):
        counted = (decode_errors.get(provider) or {}).get("unknown_symbol", 0)
        counted -= malformed.get(f"{provider}:unknown_symbol", 0)
        out += max(0, ticks["excused_unsubscribe_by_provider"].get(code, 0) - counted)
    return out


def clients_served(stats: dict[str, Any]) -> dict[str, Any]:
    """
    Well-behaved clients kept their connection and got ticks; hostile ones got
    clean answers: never 1011 (an internal error), deep nesting ``bad_json``,
    no more error bytes than request bytes, floods cut at the per-address limit.
    """
    hostile: dict[str, dict[str, int]] = stats["hostile"]
    problems: list[str] = []
    if stats["normal_disconnects"] or not stats["normal_ticks"]:
        problems.append(f"well-behaved clients: {stats['normal_disconnects']} disconnects, "
                        f"{stats['normal_ticks']} ticks")
    internal = {k: v["closed:1011"] for k, v in hostile.items() if v.get("closed:1011")}
    if internal:
        problems.append(f"closed with 1011: {internal}")
    nesting = hostile.get("nesting", {})
    if nesting.get("requests") and nesting.get("error:bad_json", 0) < nesting["requests"]:
        problems.append(f"deep nesting not answered bad_json: {nesting}")
    huge = hostile.get("huge_requests", {})
    if huge.get("reply_bytes", 0) > huge.get("request_bytes", 0):
        problems.append(f"error replies {huge['reply_bytes']} B for {huge['request_bytes']} B of requests")
    if stats["flood_accepted"] and max(stats["flood_accepted"]) > MAX_CLIENTS_PER_ADDRESS:
        problems.append(f"a flood from one address got {max(stats['flood_accepted'])} connections "
                        f"(limit {MAX_CLIENTS_PER_ADDRESS})")
    return {"ok": not problems, "detail": "; ".join(problems) or
            f"{stats['normal_ticks']} ticks to well-behaved clients, no disconnect; hostile ones answered"}


def checks(report: dict[str, Any], opts: argparse.Namespace, kinds: list[str]) -> dict[str, dict[str, Any]]:
    """The soak's guarantees, each ``{"ok": bool, "detail": str}`` (``kinds``: the fault kinds run)."""
    out: dict[str, dict[str, Any]] = {}
    ticks = report.get("ticks")
    if ticks is None:
        out["exactly_once"] = {"ok": False, "detail": "not verified (the gateway died or never drained)"}
    else:
        bad = {k: ticks[k] for k in ("missing", "duplicates", "phantom", "feed_duplicates", "feed_missing",
                                     "unreadable_entries", "driver_repeated_identities",
                                     "excused_unsubscribe_unexplained") if ticks.get(k)}
        out["exactly_once"] = {"ok": not bad and ticks["sent"] > 0,
                               "detail": f"sent {ticks['sent']}, stored {ticks['stored']}; {bad or 'clean'}"}
        out["bad_ts_not_stored"] = {"ok": ticks["bad_ts_stored"] == 0,
                                    "detail": f"{ticks['bad_ts_stored']} of {ticks['bad_ts_sent']} "
                                              f"far-future ticks stored"}
    h = report["healthz"]
    out["daemon_never_exited"] = {
        "ok": report["exited_during_soak"] is None and h["failures"] == 0 and h["checks"] > 0,
        "detail": f"pid {report['pid']}, exit {report['exited_during_soak']}, "
                  f"/healthz {h['checks'] - h['failures']}/{h['checks']} answered 200"}
    rss = report["rss"]
    growth = rss.get("growth_mb")
    out["rss_flat"] = {"ok": growth is not None and growth <= opts.rss_limit_mb,
                       "detail": f"first after warm-up {rss.get('first_after_warmup_mb')} MiB, last "
                                 f"{rss.get('last_mb')}, max {rss.get('max_mb')}, growth {growth} "
                                 f"(limit {opts.rss_limit_mb}), slope {rss.get('slope_mb_per_min')} MiB/min"}
    never = [k for k in kinds if not report["faults"].get(k)]
    errors = [f"{f['kind']}: {f['error']}" for f in report["fault_log"] if "error" in f]
    out["every_fault_injected"] = {"ok": not never and not errors,
                                   "detail": f"{len(kinds) - len(never)} of {len(kinds)} kinds"
                                             + (f"; never: {never}" if never else "")
                                             + (f"; driver errors: {errors[:3]}" if errors else "")}
    out["clients_served"] = clients_served(report["clients"])
    rec = report.get("recovery", {})
    out["recovered"] = {"ok": bool(rec.get("recovered")) and bool(rec.get("drained")),
                        "detail": f"providers {rec.get('final_states')}, drained {rec.get('drained')}"}
    log = report.get("log", {})
    out["no_secret_in_log"] = {"ok": log.get("secrets_found", 1) == 0,
                               "detail": f"{log.get('secrets_found')} of 4 secrets found in the log"}
    stop = report.get("stop", {})
    out["clean_stop"] = {"ok": stop.get("rc") == 0, "detail": f"SIGTERM -> exit {stop.get('rc')} "
                                                              f"in {stop.get('seconds')} s"}
    return out


def render(report: dict[str, Any]) -> str:
    """The human summary."""
    t = report.get("ticks") or {}
    rss = report["rss"]
    slow = report["clients"]["slow"]
    lines = [
        f"chaos soak: {report['duration_s']} s, seed {report['seed']}, "
        f"{report['rate_per_provider']} ticks/s per provider, gateway pid {report['pid']}",
        f"ticks: sent {t.get('sent')} {t.get('sent_by_provider')}, stored {t.get('stored')}, "
        f"duplicates {t.get('duplicates')}, missing {t.get('missing')}, phantom {t.get('phantom')}, "
        f"excused (abort {t.get('excused_in_flight_at_abort')}, unsubscribe "
        f"{t.get('excused_in_flight_at_unsubscribe')}); feed {t.get('feed_entries')} "
        f"(duplicates {t.get('feed_duplicates')}, missing {t.get('feed_missing')}); far-future ticks "
        f"stored {t.get('bad_ts_stored')}/{t.get('bad_ts_sent')}",
        f"faults: {sum(report['faults'].values())} {report['faults']}",
        f"malformed frames sent: {report['malformed_sent']}",
        f"provider connections seen by the fakes: {report['provider_connections']}; "
        f"redis restarts: {report['faults'].get('redis_kill', 0)}",
        f"rss MiB: start {rss.get('start_mb')}, first after warm-up ({rss.get('warmup_s')} s) "
        f"{rss.get('first_after_warmup_mb')}, last {rss.get('last_mb')}, max {rss.get('max_mb')}, "
        f"slope {rss.get('slope_mb_per_min')} MiB/min, {rss.get('samples')} samples",
        f"healthz: {report['healthz']['checks']} checks, {report['healthz']['failures']} failures; "
        f"exited during soak: {report['exited_during_soak']}; stop: {report.get('stop')}",
        f"clients: normal ticks {report['clients']['normal_ticks']}, reconnects "
        f"{report['clients']['normal_disconnects']}; hostile {report['clients']['hostile']}",
        f"slow clients: {len(slow)}, closed by the gateway "
        f"{sum(1 for c in slow if c.get('closed_by_gateway'))}, with a 1008 close frame "
        f"{sum(1 for c in slow if c.get('close_code') == 1008)}: {slow}",
        f"log: {report.get('log', {}).get('lines')} lines, levels {report.get('log', {}).get('levels')}, "
        f"tracebacks {report.get('log', {}).get('tracebacks')}",
        f"recovery: {({k: v for k, v in report.get('recovery', {}).items() if k != 'final_store'})}",
    ]
    if t.get("missing_examples"):
        lines.append(f"missing (first): {t['missing_examples'][:5]}")
    if report["fault_notes"]:
        lines.append(f"notes: {report['fault_notes'][:10]}")
    errors = [f for f in report["fault_log"] if "error" in f]
    if errors:
        lines.append(f"driver errors: {errors[:5]}")
    lines.append("checks:")
    for name, c in report["checks"].items():
        lines.append(f"  {'PASS' if c['ok'] else 'FAIL'}  {name}: {c['detail']}")
    return "\n".join(lines)
