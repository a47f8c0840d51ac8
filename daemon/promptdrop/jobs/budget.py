"""Daily budgets as pure arithmetic: when a day starts and ends, and how much of it is left.

A day runs from local midnight to local midnight by whatever clock the caller reads; the
ledger counts what was spent since `day_start`.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def day_start(at: float) -> float:
    """The local midnight that began the day holding the epoch time `at`."""
    day = datetime.fromtimestamp(at).date()
    return datetime(day.year, day.month, day.day).timestamp()


def next_day(at: float) -> float:
    """The local midnight that ends the day holding the epoch time `at`."""
    day = datetime.fromtimestamp(at).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day).timestamp()


def budget_left(limit: int | None, spent: int) -> int | None:
    """Submissions a daily budget of `limit` still allows after `spent` today (None: no budget).

    Never below zero: a budget lowered under what was already spent today simply has no room.
    """
    if limit is None:
        return None
    return max(limit - spent, 0)


def has_room(left: int | None) -> bool:
    """Whether a rule with `left` submissions left today may send one more."""
    return left is None or left > 0


def next_check(now: float, every: float) -> float:
    """Seconds until waiting jobs are looked at again: at the next midnight, or after `every`
    seconds if sooner (so a clock that jumps is noticed); never less than 10 ms."""
    return max(0.01, min(next_day(now) - now, every))
