"""The one backoff policy (mdgate._backoff.Backoff): growth, cap, full jitter, reset, no overflow."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from mdgate._backoff import Backoff


def top(initial: float, cap: float, **kw: object) -> Backoff:
    """A backoff whose jitter always draws the top of the range."""
    return Backoff(initial, cap, random=lambda: 1.0, **kw)  # type: ignore[arg-type]


def test_delays_double_from_initial_up_to_the_cap_and_stay_there():
    b = top(0.5, 8.0)
    assert [b.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert b.attempts == 8


def test_cap_smaller_than_initial_wins():
    b = top(5.0, 2.0)
    assert [b.next() for _ in range(3)] == [2.0, 2.0, 2.0]


def test_full_jitter_spans_zero_to_the_ceiling():
    b = Backoff(1.0, 30.0, random=random.Random(7).random)
    for attempt in range(12):
        ceiling = b.ceiling(attempt)
        assert 0.0 <= b.next() <= ceiling
    # full jitter, not "ceiling/2 + jitter": low and high fractions both occur
    many = Backoff(1.0, 1.0, random=random.Random(1).random)
    fractions = [many.next() for _ in range(2000)]
    assert min(fractions) < 0.05 and max(fractions) > 0.95
    assert 0.45 < sum(fractions) / len(fractions) < 0.55


def test_jitter_uses_the_injected_source():
    seq = itertools.cycle([0.0, 0.25, 0.5])
    b = Backoff(4.0, 4.0, random=lambda: next(seq))
    assert [b.next() for _ in range(3)] == [0.0, 1.0, 2.0]


def test_reset_starts_again_from_initial():
    b = top(1.0, 60.0)
    for _ in range(6):
        b.next()
    assert b.next() == 60.0
    b.reset()
    assert b.attempts == 0
    assert [b.next() for _ in range(3)] == [1.0, 2.0, 4.0]


def test_no_overflow_at_any_attempt_count():
    # the old formula, initial * 2 ** attempt, raised OverflowError at attempt 1024
    b = top(0.0005, 0.002)
    b.attempts = 10**6
    assert b.next() == 0.002
    for attempt in (1023, 1024, 1025, 10**6, 10**18):
        assert b.ceiling(attempt) == 0.002
    huge = top(1e300, math.inf)
    assert math.isfinite(huge.ceiling(10**9))
    slow = Backoff(0.0005, 0.002)
    for _ in range(10_000):
        assert 0.0 <= slow.next() <= 0.002
    assert slow.attempts == 10_000


def test_floor_is_a_lower_bound_and_wins_over_a_smaller_cap():
    b = Backoff(0.01, 1.0, floor=0.05, random=lambda: 0.0)
    assert b.next() == 0.05
    assert Backoff(0.01, 0.02, floor=0.05, random=lambda: 1.0).next() == 0.05


def test_hard_delay_is_half_to_all_of_the_cap_and_counts_an_attempt():
    assert Backoff(1.0, 30.0, random=lambda: 0.0).hard() == 15.0
    b = Backoff(1.0, 30.0, random=lambda: 1.0)
    assert b.hard() == 30.0
    assert b.attempts == 1


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_nonsense_timings_do_not_raise(bad: float):
    b = Backoff(bad, bad)
    assert b.next() == 0.0
