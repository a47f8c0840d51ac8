"""The one backoff shape, row by row, with the draw passed in: no clock, no sleep."""

from __future__ import annotations

import pytest

from promptdrop.backoff import (
    ACCOUNT_PAUSE,
    API_RETRY,
    DISK_FULL,
    LEDGER_RECONNECT,
    Backoff,
)


@pytest.mark.parametrize(
    ("policy", "attempt", "draw", "expected"),
    [
        (Backoff(first=1.0, cap=10.0), 0, 0.0, 1.0),
        (Backoff(first=1.0, cap=10.0), 1, 0.0, 2.0),
        (Backoff(first=1.0, cap=10.0), 3, 0.0, 8.0),
        (Backoff(first=1.0, cap=10.0), 4, 0.0, 10.0),  # 16 capped
        (Backoff(first=1.0, cap=10.0), 10_000, 0.0, 10.0),  # no overflow
        (Backoff(first=1.0, cap=10.0, factor=3.0), 2, 0.0, 9.0),
        (Backoff(first=2.0, cap=10.0, jitter=1.0), 1, 0.5, 2.0),  # full jitter halves at 0.5
        (Backoff(first=2.0, cap=10.0, jitter=1.0), 0, 0.0, 2.0),
        (Backoff(first=4.0, cap=10.0, jitter=0.25), 0, 0.5, 3.5),
        (Backoff(first=0.0, cap=10.0), 5, 0.0, 0.0),
    ],
)
def test_delay_follows_first_factor_cap_and_jitter(
    policy: Backoff, attempt: int, draw: float, expected: float
) -> None:
    assert policy.delay(attempt, draw) == pytest.approx(expected)


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    delays = [API_RETRY.delay(3, i / 100) for i in range(100)]
    assert max(delays) == pytest.approx(4.0)
    assert min(delays) == pytest.approx(4.0 * 0.01)


@pytest.mark.parametrize(
    ("policy", "waits"),
    [
        (ACCOUNT_PAUSE, [60.0, 120.0, 240.0, 480.0, 900.0, 900.0]),
        (DISK_FULL, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]),
        (LEDGER_RECONNECT, [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]),
    ],
)
def test_the_daemons_named_waits(policy: Backoff, waits: list[float]) -> None:
    assert [policy.delay(n) for n in range(len(waits))] == pytest.approx(waits)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first": -1.0, "cap": 1.0},
        {"first": 1.0, "cap": -1.0},
        {"first": 1.0, "cap": 1.0, "factor": 0.5},
        {"first": 1.0, "cap": 1.0, "jitter": 1.5},
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_draw_and_attempt_are_checked() -> None:
    with pytest.raises(ValueError):
        API_RETRY.delay(0, 1.0)
    with pytest.raises(ValueError):
        API_RETRY.delay(-1)
