"""The lost-answer decisions of jobs.lookups, row by row, on a clock passed in (no sockets)."""

from __future__ import annotations

import re

import pytest

from promptdrop.jobs.lookups import (
    LookupPolicy,
    Settled,
    after_lookup,
    is_proven,
    lookup_retry_wait,
    needs_proof,
    new_business_id,
    next_lookup_wait,
    policy_from,
)

P = LookupPolicy()  # 3 misses over 60 s, proof lives a day, retried after 10 minutes
T = 1_000_000.0

# (found, proven, misses before, first miss at, now) -> verdict
AFTER = [
    pytest.param(True, False, 0, None, T, Settled.FOUND, id="found_unproven"),
    pytest.param(True, True, 2, T - 50, T, Settled.FOUND, id="found_late"),
    pytest.param(False, True, 0, None, T, Settled.LOOK_AGAIN, id="first_miss"),
    pytest.param(False, False, 0, None, T, Settled.LOOK_AGAIN, id="first_miss_unproven"),
    pytest.param(False, True, 1, T - 30, T, Settled.LOOK_AGAIN, id="second_miss"),
    pytest.param(False, True, 2, T - 60, T, Settled.NOT_CREATED, id="third_miss_60s"),
    pytest.param(False, True, 2, T - 59, T, Settled.LOOK_AGAIN, id="third_miss_too_soon"),
    pytest.param(False, True, 5, T - 59.9, T, Settled.LOOK_AGAIN, id="many_misses_too_soon"),
    pytest.param(False, True, 1, T - 120, T, Settled.LOOK_AGAIN, id="two_misses_long_apart"),
    pytest.param(False, False, 2, T - 60, T, Settled.UNPROVEN, id="third_miss_unproven"),
    pytest.param(False, False, 2, T - 10, T, Settled.LOOK_AGAIN, id="unproven_too_soon"),
]


@pytest.mark.parametrize(("found", "proven", "before", "first", "now", "want"), AFTER)
def test_what_a_lookup_answer_means(
    found: bool, proven: bool, before: int, first: float | None, now: float, want: Settled
) -> None:
    assert after_lookup(found, proven, before, first, now, P) is want


@pytest.mark.parametrize(
    ("misses", "now", "want"),
    [
        (1, T, 30.0),  # after the first miss: the second lookup half-way through the spread
        (2, T + 30, 30.0),  # the third at the end of the spread
        (3, T + 60, 0.5),  # overdue: soon, never at once
        (2, T + 45, 15.0),  # a slow answer: the third still lands 60 s after the first
    ],
)
def test_lookups_are_spread_so_the_last_lands_at_the_end(
    misses: int, now: float, want: float
) -> None:
    assert next_lookup_wait(misses, T, now, P) == pytest.approx(want)


def test_the_schedule_reaches_a_verdict_exactly_at_the_spread() -> None:
    now, misses, first = T, 0, T
    while True:
        verdict = after_lookup(False, True, misses, first, now, P)
        if verdict is not Settled.LOOK_AGAIN:
            break
        misses += 1
        now += next_lookup_wait(misses, first, now, P)
    assert verdict is Settled.NOT_CREATED
    assert misses + 1 == 3
    assert now - first == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("proven_at", "now", "want"),
    [
        (None, T, False),
        (T - 10, T, True),
        (T - 86400, T, True),
        (T - 86401, T, False),
        (T + 5, T, False),
    ],  # a proof from the future (a clock set back) does not count
)
def test_a_proof_lives_a_day(proven_at: float | None, now: float, want: bool) -> None:
    assert is_proven(proven_at, now, P) is want


@pytest.mark.parametrize(
    ("proven_at", "last_attempt", "now", "want"),
    [
        (None, None, T, True),  # never proven: try
        (None, T - 10, T, False),  # tried 10 s ago: not again yet
        (None, T - 600, T, True),  # ten minutes on: again
        (T - 100, None, T, False),  # a fresh proof: nothing to do
        (T - 43200, None, T, True),  # half its life gone: renew it before it lapses
        (T - 43200, T - 60, T, False),  # ...but not more than once per ten minutes
    ],
)
def test_when_a_new_task_is_looked_up_to_prove_lookups(
    proven_at: float | None, last_attempt: float | None, now: float, want: bool
) -> None:
    assert needs_proof(proven_at, last_attempt, now, P) is want


def test_business_ids_are_fresh_and_carry_nothing() -> None:
    ids = {new_business_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"pd-[0-9a-f]{24}", i) for i in ids)


def test_a_failed_lookup_waits_longer_each_time_up_to_a_minute() -> None:
    assert [lookup_retry_wait(n) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_the_test_suites_shorter_waits_come_from_the_environment() -> None:
    assert policy_from({}) == P
    got = policy_from({"PROMPTDROP_LOOKUP_SPREAD": "3", "PROMPTDROP_PROOF_DELAY": "1.5"})
    assert (got.spread, got.proof_delay, got.misses) == (3.0, 1.5, 3)
    assert policy_from({"PROMPTDROP_LOOKUP_SPREAD": "soon"}) == P
    assert policy_from({"PROMPTDROP_LOOKUP_SPREAD": "-1"}) == P
