"""The client server's limits, pure: error frames, logs, file descriptors, connections, origins."""

from __future__ import annotations

import json
import resource
import time

import pytest

from mdgate._config import Settings
from mdgate._serve import limits as _limits
from mdgate._serve.limits import (
    MAX_LABEL,
    MAX_NAMED,
    ConnectionLimits,
    OriginPolicy,
    RateLimitedLog,
    error_frame,
    fd_plan,
    instrument_names,
    label,
    raise_nofile,
    refusal_frame,
)
from mdgate._serve.server import ClientServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw) -> None:
        self.lines.append((event, kw))


# -- error frames ---------------------------------------------------------------------


def test_label_bounded_and_never_a_repr():
    assert label("NSE:RELIANCE") == "NSE:RELIANCE"
    long = label("X" * 100_000)
    assert len(long) == MAX_LABEL and long.endswith("…")
    assert label(7) == "7" and label(None) == "None" and label(1.5) == "1.5" and label(True) == "True"
    deep: list = []
    for _ in range(100_000):  # repr() of this would raise RecursionError
        deep = [deep]
    assert label(deep) == "<list>" and label({"a": deep}) == "<dict>"
    assert label(10**5000) == "<int>"  # str() of it raises ValueError


def test_refusal_frame_size_independent_of_request():
    errors = [{"instrument": f"MARS:{'R' * 200}{i}", "code": "no_route", "message": "m" * 10_000}
              for i in range(5000)]
    frame = refusal_frame(errors)
    doc = json.loads(frame)
    assert len(frame) < 6000
    assert doc["code"] == "no_route" and len(doc["errors"]) == MAX_NAMED and doc["more"] == 5000 - MAX_NAMED
    assert doc["message"].startswith("5000 instruments refused") and doc["message"].endswith("4990 more")
    assert all(len(e["instrument"]) == MAX_LABEL for e in doc["errors"])
    assert all(len(e["message"]) <= _limits.MAX_MESSAGE for e in doc["errors"])


def test_single_refusal_keeps_its_message_and_no_more_key():
    doc = json.loads(refusal_frame([{"instrument": "LSE:VOD", "code": "no_route", "message": "no provider"}]))
    assert doc == {"type": "error", "code": "no_route", "message": "no provider",
                   "errors": [{"instrument": "LSE:VOD", "code": "no_route", "message": "no provider"}]}
    assert json.loads(error_frame("bad_json", "x")) == {"type": "error", "code": "bad_json", "message": "x"}


# -- rate-limited log ---------------------------------------------------------------------


def test_rate_limited_log_one_line_per_interval_counts_the_rest():
    clock, out = FakeClock(), Lines()
    rl = RateLimitedLog(out, interval=10.0, clock=clock)
    sent = [rl.warning("client_refused", reason="max_clients") for _ in range(900)]
    assert sent.count(True) == 1 and len(out.lines) == 1
    rl.warning("accept_failed")  # another kind has its own allowance
    assert len(out.lines) == 2
    clock.now += 9.99
    assert not rl.warning("client_refused")
    clock.now += 0.01
    assert rl.warning("client_refused", reason="x")
    assert out.lines[-1] == ("client_refused", {"reason": "x", "suppressed": 900})
    clock.now += 10
    assert rl.warning("client_refused")
    assert "suppressed" not in out.lines[-1][1]


def test_accept_failures_counted_logged_rate_limited_others_passed_on():
    clock, out = FakeClock(), Lines()
    server = ClientServer(Settings().server, clock=clock)
    server.ratelog.logger = out
    passed: list[dict] = []
    handler = server.exception_handler(lambda loop, ctx: passed.append(ctx))
    ctx = {"message": "socket.accept() out of system resource",
           "exception": OSError(24, "Too many open files")}
    for _ in range(900):
        handler(None, ctx)
    assert server.stats.accept_errors == 900 and len(out.lines) == 1 and out.lines[0][0] == "accept_failed"
    assert passed == []
    clock.now += 10
    handler(None, ctx)
    assert len(out.lines) == 2 and out.lines[1][1]["suppressed"] == 899
    other = {"message": "Task exception was never retrieved"}
    handler(None, other)
    assert passed == [other]


# -- file descriptors --------------------------------------------------------------------


@pytest.mark.parametrize("nofile", [256, 1024, 4096, 20_000, 1_048_576])
def test_fd_plan_keeps_sockets_under_the_limit(nofile):
    plan = fd_plan(10_000, nofile)
    assert plan.clients <= 10_000 and plan.clients < plan.sockets
    assert plan.sockets <= nofile - max(64, nofile // 8) - 100  # the daemon's own, one accept burst
    assert plan.clients >= min(10_000, nofile // 4)


def test_fd_plan_defaults_untouched_with_enough_files():
    assert fd_plan(10_000, 20_000).clients == 10_000
    assert fd_plan(10_000, 1024).clients < 1024 - 228


def test_raise_nofile_up_to_the_hard_limit(monkeypatch):
    limits = {"soft": 1024, "hard": 4096}
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (limits["soft"], limits["hard"]))

    def setrlimit(_r, value):
        limits["soft"], limits["hard"] = value

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert raise_nofile(10_000) == (1024, 4096)  # as far as the hard limit allows
    assert raise_nofile(10_000) == (4096, 4096)
    limits.update(soft=1024, hard=resource.RLIM_INFINITY)
    before, after = raise_nofile(10_000)
    assert before == 1024 and fd_plan(10_000, after).clients == 10_000
    limits.update(soft=50_000, hard=60_000)
    assert raise_nofile(10_000) == (50_000, 50_000)  # never lowered


# -- connections -------------------------------------------------------------------------


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_admit_counts_in_all_and_per_address():
    lim = ConnectionLimits(max_clients=3, max_per_address=2, max_sockets=10)
    a1, a2, a3, b1, b2 = (Conn(n) for n in ("a1", "a2", "a3", "b1", "b2"))
    for c in (a1, a2, a3, b1, b2):
        lim.opened(c)
    assert lim.admit(a1, "10.0.0.1") is None
    assert lim.admit(a2, "10.0.0.1") is None
    assert lim.admit(a3, "10.0.0.1") == "max_clients_per_address"
    assert lim.admit(b1, "10.0.0.2") is None
    assert lim.admit(b2, "10.0.0.2") == "max_clients"
    assert lim.refused == {"max_clients": 1, "max_clients_per_address": 1, "origin": 0, "sockets": 0}
    lim.closed(a1)
    assert lim.clients == 2 and lim.admit(a3, "10.0.0.1") is None
    for c in (a2, a3, b1, b2):
        lim.closed(c)
    assert lim.clients == 0 and lim.sockets == 0 and lim.addresses() == 0


def test_socket_cap_drops_oldest_silent_connection_first():
    lim = ConnectionLimits(max_clients=2, max_per_address=2, max_sockets=3)
    s1, s2, s3, s4, s5 = (Conn(f"s{i}") for i in range(1, 6))
    for c in (s1, s2, s3):
        assert lim.opened(c) is None
    lim.requested(s1)  # s1 spoke: not a candidate
    assert lim.opened(s4) is s2  # the oldest that never sent a request
    lim.closed(s2)
    lim.requested(s3)
    lim.requested(s4)
    assert lim.opened(s5) is s5  # every other one spoke: the newcomer goes
    assert lim.refused["sockets"] == 2
    lim.closed(s5)
    assert lim.sockets == 3


def test_socket_count_excludes_ones_being_dropped():
    lim = ConnectionLimits(max_clients=1, max_per_address=1, max_sockets=2)
    conns = [Conn(f"c{i}") for i in range(6)]
    victims = [lim.opened(c) for c in conns]
    # one drop per arrival over the cap, never two for the same arrival
    assert victims[:2] == [None, None] and victims[2:] == conns[:4]
    assert lim.sockets == 6 and lim.refused["sockets"] == 4


# -- origins -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "listen", "origin", "host", "ok"),
    [
        ((), "127.0.0.1", None, "127.0.0.1:8765", True),
        ((), "127.0.0.1", "http://localhost:3000", "127.0.0.1:8765", True),
        ((), "127.0.0.1", "http://app.localhost", "127.0.0.1:8765", True),
        ((), "127.0.0.1", "http://127.8.9.1", "127.0.0.1:8765", True),
        ((), "::1", "http://[::1]:5000", "[::1]:8765", True),
        ((), "localhost", "https://evil.example", "localhost:8765", False),
        ((), "127.0.0.1", "http://evil.example:8765", "evil.example:8765", False),  # rebinding
        ((), "127.0.0.1", "null", "127.0.0.1:8765", False),
        ((), "127.0.0.1", "not an origin", "127.0.0.1:8765", False),
        ((), "0.0.0.0", "http://desk.example:8765", "desk.example:8765", True),
        ((), "0.0.0.0", "https://desk.example", "desk.example", True),
        ((), "0.0.0.0", "https://desk.example", "desk.example:443", True),
        ((), "0.0.0.0", "http://desk.example", "desk.example:8765", False),
        ((), "0.0.0.0", "http://localhost:8765", "desk.example:8765", False),
        ((), "0.0.0.0", "http://desk.example:8765", None, False),
        ((), "10.1.2.3", "http://10.1.2.3:8765", "10.1.2.3:8765", True),
        (("https://desk.example",), "127.0.0.1", "https://desk.example:443", "127.0.0.1:8765", True),
        (("https://desk.example",), "127.0.0.1", "https://DESK.EXAMPLE", "127.0.0.1:8765", True),
        (("https://desk.example",), "127.0.0.1", "http://desk.example", "127.0.0.1:8765", False),
        (("https://desk.example:8443",), "0.0.0.0", "https://desk.example", "x:1", False),
        (("*",), "0.0.0.0", "https://anything.example", "x:1", True),
        (("null",), "127.0.0.1", "null", "127.0.0.1:8765", True),
    ],
)
def test_origin_policy(allowed, listen, origin, host, ok):
    assert OriginPolicy(allowed, listen).allows(origin, host) is ok


# -- request names -----------------------------------------------------------------------------


def test_name_deduplication_is_linear():
    raw = [f"NSE:S{i}" for i in range(20_000)] * 2
    errors: list = []
    t0 = time.perf_counter()
    names = instrument_names(raw, errors)
    elapsed = time.perf_counter() - t0
    assert names == [f"NSE:S{i}" for i in range(20_000)] and errors == []
    # a list membership test makes this 6e8 string comparisons (about 10 s); linear is ~0.05 s
    assert elapsed < 1.5
