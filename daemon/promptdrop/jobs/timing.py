"""How long a running job waits before its next poll: pure, with the random draw passed in.

Just submitted: `poll_first` (the docs' advice: about 5 s), stretched by at most
`poll_first_jitter`, so a short task is not held much past it. Resumed after a restart: at
once. Later polls: `poll_interval`, stretched by up to `poll_jitter`, so many jobs spread out.

A task the API says it does not know is not given up at the first answer: it is asked about
again a few times spread over `gone_window` seconds (an API that lost a task for a moment, or
answers from a replica that has not seen it yet, then gets its chance), then the job fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

# Seconds before the first and between later polls when neither the caller nor a rules file
# says (the docs' advice).
DEFAULT_POLL = 5.0
# When, as shares of the gone window after the first "unknown task" answer, it is asked again.
GONE_CHECKS = (0.1, 0.25, 0.5, 1.0)


class PollPhase(Enum):
    FIRST = "first"  # submitted by this process, not yet polled
    RESUMED = "resumed"  # found running at start-up (or taken over): poll at once
    LATER = "later"


@dataclass(frozen=True)
class PollTiming:
    first: float | None = None  # None: DEFAULT_POLL
    interval: float | None = None  # None: DEFAULT_POLL
    first_jitter: float = 0.05
    jitter: float = 0.2


def poll_wait(phase: PollPhase, timing: PollTiming, draw: float) -> float:
    """Seconds to wait before a poll in `phase`; `draw` is a random number from [0, 1)."""
    if phase is PollPhase.FIRST:
        base, jitter = timing.first, timing.first_jitter
    elif phase is PollPhase.RESUMED:
        return 0.0
    else:
        base, jitter = timing.interval, timing.jitter
    return (DEFAULT_POLL if base is None else base) * (1 + jitter * draw)


def gone_checks() -> int:
    """How many more polls confirm that the API no longer knows a task."""
    return len(GONE_CHECKS)


def gone_wait(seen: int, window: float) -> float:
    """Seconds before confirmation poll number `seen` (1: the first after the first "unknown
    task" answer), so that the last one comes `window` seconds after that first answer."""
    if not 1 <= seen <= len(GONE_CHECKS):
        raise ValueError(f"confirmation polls are numbered 1 to {len(GONE_CHECKS)}")
    before = GONE_CHECKS[seen - 2] if seen > 1 else 0.0
    return (GONE_CHECKS[seen - 1] - before) * window


def gone_confirmed(seen: int) -> bool:
    """Whether `seen` "unknown task" answers in a row are enough to give the task up."""
    return seen > len(GONE_CHECKS)


# The adaptive first poll: with no first-poll time set by the user, the first poll of a new task
# comes near the typical task time of this daemon's recent completions of the same model and
# resolution, instead of always after the docs' 5 s.
LEARN_FROM = 3  # completions needed before the learned time is used
LEARN_WINDOW = 20  # the most recent completions kept per (model, resolution)
FIRST_POLL_FLOOR = 0.5  # never sooner than this after submitting
FIRST_POLL_CAP = 60.0  # nor later than this


def learned_first_poll(recent: list[float], advice: float = DEFAULT_POLL) -> float:
    """Seconds from submitting to the first poll, learned from `recent` task times (seconds
    from creation to completion, the API's own timestamps where it gives them).

    Fewer than LEARN_FROM samples: the docs' advice. Otherwise the median, within
    [FIRST_POLL_FLOOR, FIRST_POLL_CAP]: about half the tasks are ready at the first poll, and
    the others need one or two more; a task that takes longer than it polls every
    `poll_interval` as before.
    """
    if len(recent) < LEARN_FROM:
        return advice
    ordered = sorted(recent)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return min(max(median, FIRST_POLL_FLOOR), FIRST_POLL_CAP)


def task_seconds(
    created_at: float | None, completed_at: float | None, submitted: float, now: float
) -> float:
    """How long a finished task took: the API's completed_at - created_at when it gives both
    (whole seconds), else the time from our submit to the answer that saw it done."""
    if created_at is not None and completed_at is not None and completed_at >= created_at:
        return float(completed_at - created_at)
    return max(now - submitted, 0.0)


# A typical task time, from the docs' "typical run 5-30 s" (toapis-models.md, the task page).
TYPICAL_TASK = 10.0


def in_flight_for(submits_per_second: float, typical_task: float = TYPICAL_TASK) -> int:
    """Tasks in flight that keep an account group's submit rate busy when tasks take
    `typical_task` seconds (Little's law): then the rate limit, not this cap, sets the pace.
    Polling them every 5 s takes a fifth of the group's query allowance (10 per submit/s)."""
    if not math.isfinite(submits_per_second):
        return 512
    return max(1, min(512, math.ceil(submits_per_second * typical_task)))
