"""Poll timing and the task-gone confirmations: pure, the random draw passed in, no sleeps."""

from __future__ import annotations

import pytest

from promptdrop.jobs.timing import (
    DEFAULT_POLL,
    GONE_CHECKS,
    PollPhase,
    PollTiming,
    gone_checks,
    gone_confirmed,
    gone_wait,
    poll_wait,
)

RHYTHM = PollTiming(first=2.0, interval=10.0, first_jitter=0.05, jitter=0.2)


@pytest.mark.parametrize(
    ("phase", "timing", "draw", "wait"),
    [
        (PollPhase.FIRST, RHYTHM, 0.0, 2.0),
        (PollPhase.FIRST, RHYTHM, 0.999, 2.0 * (1 + 0.05 * 0.999)),  # at most 5% later
        (PollPhase.RESUMED, RHYTHM, 0.7, 0.0),  # found running at start-up: at once
        (PollPhase.LATER, RHYTHM, 0.0, 10.0),
        (PollPhase.LATER, RHYTHM, 0.5, 11.0),  # spread by up to 20%
        (PollPhase.FIRST, PollTiming(), 0.0, DEFAULT_POLL),  # the docs' advice
        (PollPhase.LATER, PollTiming(), 0.0, DEFAULT_POLL),
    ],
)
def test_the_poll_wait_by_phase_with_its_jitter(
    phase: PollPhase, timing: PollTiming, draw: float, wait: float
) -> None:
    assert poll_wait(phase, timing, draw) == pytest.approx(wait)


def test_a_gone_task_is_asked_about_again_over_the_window_then_given_up() -> None:
    window = 60.0
    waits = [gone_wait(seen, window) for seen in range(1, gone_checks() + 1)]
    assert gone_checks() >= 3  # "a few more polls"
    assert all(w > 0 for w in waits)
    assert waits == sorted(waits)  # further apart as it looks less likely to come back
    assert sum(waits) == pytest.approx(window)  # the last check comes a window after the first
    assert [gone_confirmed(seen) for seen in range(1, gone_checks() + 2)] == [
        *([False] * gone_checks()),
        True,
    ]
    assert len(GONE_CHECKS) == gone_checks()
    with pytest.raises(ValueError):
        gone_wait(gone_checks() + 1, window)
    with pytest.raises(ValueError):
        gone_wait(0, window)


def test_a_shorter_gone_window_shortens_every_confirmation() -> None:
    assert [gone_wait(s, 0.4) for s in range(1, 5)] == pytest.approx([0.04, 0.06, 0.1, 0.2])
