"""When a file is complete: the settle decision, as pure functions of observations and `now`.

A file is observed as a signature (size, mtime_ns, inode), or MISSING. It is settled once its
signature stayed the same for the root's settle time with no event in between. Nothing here
sleeps, stats or reads a clock: the watcher passes the observations and the time in, and does
what the Decision says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Sig = tuple[int, int, int]  # size, mtime_ns, inode
MISSING: Sig = (-1, -1, -1)

# Files found by a scan that are older than the settle time need only this second look.
QUICK_RECHECK = 0.1
# A file whose settle timer ran out with no event, but whose last stat was older than its last
# event, needs only this second look: long enough for an event already on its way to arrive.
QUIET_RECHECK = 0.05

Outcome = Literal["settled", "wait", "empty", "unchanged", "dropped", "gone"]


@dataclass(frozen=True)
class Decision:
    """What to do with a file after one look.

    - settled: complete and new (or forced): report it.
    - wait: look again at `until`. `changing` says it really changed (rather than getting a
      short second look), so it must not hold up the first scan's readiness.
    - empty: complete but 0 bytes, a placeholder whose content will bring a new event: forget.
    - unchanged: complete and the same as last reported: forget, report nothing.
    - dropped: missing and never reported: forget.
    - gone: reported once, and missing for a whole settle time: forget, and let a scan of the
      root say whether it was deleted or the whole folder went away.
    """

    outcome: Outcome
    until: float | None = None
    changing: bool = False


def decide(
    prev: Sig | None,
    cur: Sig,
    now: float,
    *,
    settle: float,
    reported: Sig | None,
    force: bool = False,
    event_after_prev: float | None = None,
) -> Decision:
    """Judge one look at a file whose settle timer ran out with no event since.

    `prev` is the signature seen at the previous look (None: never looked), `cur` this one,
    `reported` the signature last reported for the path (None: never), `force` says report it
    even if unchanged since. `event_after_prev` is the time of the last event when `prev` was
    taken before it, on a root watched with inotify; None otherwise.
    """
    if cur == MISSING:
        if reported is None:
            return Decision("dropped")
        if prev != MISSING:
            return Decision("wait", until=now + settle)
        return Decision("gone")
    if cur != prev:
        # With inotify, a timer that ran out means no event for a whole settle time. If the
        # stat we compare with was taken before the last event (a file written in one go right
        # after it was created), the difference is that write, not a new one: a short second
        # look confirms the file is still, instead of a second settle time.
        quiet = event_after_prev is not None and now - event_after_prev >= settle
        if quiet:
            return Decision("wait", until=now + min(QUIET_RECHECK, settle))
        return Decision("wait", until=now + settle, changing=True)
    if cur[0] == 0:
        return Decision("empty")
    if not force and reported == cur:
        return Decision("unchanged")
    return Decision("settled")


def first_look(sig: Sig, now: float, wall_ns: int, *, settle: float) -> float:
    """When to look again at a file a scan found with signature `sig`: a file untouched for
    longer than the settle time (by the wall clock `wall_ns`) needs only a quick second look."""
    old = wall_ns - sig[1] >= settle * 1e9
    return now + (min(QUICK_RECHECK, settle) if old else settle)
