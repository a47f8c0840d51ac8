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


# The learned first poll and the in-flight default (issue 18) ---------------------------------

from promptdrop.jobs.timing import (  # noqa: E402
    FIRST_POLL_CAP,
    FIRST_POLL_FLOOR,
    in_flight_for,
    learned_first_poll,
    task_seconds,
)


@pytest.mark.parametrize(
    ("recent", "want"),
    [
        ([], 5.0),  # nothing learned yet: the docs' advice
        ([1.0, 2.0], 5.0),  # two are not enough
        ([3.0, 1.0, 2.0], 2.0),  # the median
        ([1.0, 2.0, 3.0, 10.0], 2.5),  # an even count: the middle two
        ([0.0, 0.0, 0.0], FIRST_POLL_FLOOR),  # instant tasks: not sooner than the floor
        ([500.0, 400.0, 300.0], FIRST_POLL_CAP),  # very slow ones: not later than the cap
        ([20.0, 21.0, 19.0, 1.0], 19.5),
    ],
)
def test_the_first_poll_is_learned_from_recent_task_times(recent: list[float], want: float) -> None:
    assert learned_first_poll(recent) == pytest.approx(want)


@pytest.mark.parametrize(
    ("created", "completed", "submitted", "now", "want"),
    [
        (1000, 1012, 50.0, 70.0, 12.0),  # the API's own timestamps win
        (None, 1012, 50.0, 70.0, 20.0),  # without them: submit to the answer that saw it done
        (1012, 1000, 50.0, 53.5, 3.5),  # impossible timestamps are not believed
        (None, None, 80.0, 70.0, 0.0),  # never negative
    ],
)
def test_a_tasks_time_comes_from_the_api_when_it_says(
    created: float | None, completed: float | None, submitted: float, now: float, want: float
) -> None:
    assert task_seconds(created, completed, submitted, now) == pytest.approx(want)


@pytest.mark.parametrize(
    ("rate", "want"),
    [(5.0, 50), (16.7, 167), (33.3, 333), (0.1, 1), (1000.0, 512), (float("inf"), 512)],
)
def test_the_in_flight_default_keeps_the_submit_rate_busy(rate: float, want: int) -> None:
    assert in_flight_for(rate) == want
