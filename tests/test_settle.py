"""The settle decision (watch/settle.py) on a fake clock: sequences of looks at a file, each
taken at the time the previous decision asked for. No sleeps, no files."""

from __future__ import annotations

import pytest

from promptdrop.watch.settle import (
    MISSING,
    QUICK_RECHECK,
    QUIET_RECHECK,
    Decision,
    Sig,
    decide,
    first_look,
)

SETTLE = 1.0
A: Sig = (10, 1_000, 7)
B: Sig = (20, 2_000, 7)  # grown
EMPTY: Sig = (0, 500, 7)
REPLACED: Sig = (10, 1_000, 8)  # same size and mtime, new inode (a rename over it)


def looks(*seen: Sig, reported: Sig | None = None, force: bool = False) -> list[Decision]:
    """Feed `seen` to decide() one by one, starting at t=0 with no previous look; each next
    look happens exactly when the previous decision said. Stops at the first final outcome."""
    out: list[Decision] = []
    prev: Sig | None = None
    now = 0.0
    for sig in seen:
        decision = decide(prev, sig, now, settle=SETTLE, reported=reported, force=force)
        out.append(decision)
        if decision.outcome != "wait":
            break
        assert decision.until is not None and decision.until > now
        prev, now = sig, decision.until
    return out


def outcomes(decisions: list[Decision]) -> list[str]:
    return [d.outcome for d in decisions]


@pytest.mark.parametrize(
    ("seen", "reported", "force", "expected"),
    [
        # dropped in one go: one look to take the baseline, one settle time later it is still
        ((A, A), None, True, ["wait", "settled"]),
        # still growing at the second look: one more settle time
        ((A, B, B), None, True, ["wait", "wait", "settled"]),
        # a rename over the file between looks: a new inode is a change
        ((A, REPLACED, REPLACED), None, True, ["wait", "wait", "settled"]),
        # an empty placeholder under the final name is never reported
        ((EMPTY, EMPTY), None, True, ["wait", "empty"]),
        # the same content as last reported, found by a scan (not forced): nothing to report
        ((A, A), A, False, ["wait", "unchanged"]),
        # ... but an event (force) reports it again: the engine decides that it is unchanged
        ((A, A), A, True, ["wait", "settled"]),
        # changed since it was reported
        ((B, B), A, False, ["wait", "settled"]),
        # gone before it was ever reported: forgotten at once
        ((A, MISSING), None, True, ["wait", "dropped"]),
        # a reported file gone: a whole settle time to be sure, then a scan of the root decides
        ((A, MISSING, MISSING), A, True, ["wait", "wait", "gone"]),
        # gone for a moment (a save by rename), back before the settle time ran out
        ((A, MISSING, A, A), A, True, ["wait", "wait", "wait", "settled"]),
    ],
)
def test_a_sequence_of_looks_settles_as_expected(
    seen: tuple[Sig, ...], reported: Sig | None, force: bool, expected: list[str]
) -> None:
    assert outcomes(looks(*seen, reported=reported, force=force)) == expected


def test_each_change_waits_a_whole_settle_time_and_releases_the_first_scan() -> None:
    decisions = looks(A, B, B)
    assert [d.until for d in decisions] == [SETTLE, 2 * SETTLE, None]
    assert [d.changing for d in decisions] == [True, True, False]


def test_a_missing_reported_file_is_looked_at_again_after_the_settle_time() -> None:
    decision = decide(A, MISSING, 5.0, settle=SETTLE, reported=A)
    assert decision == Decision("wait", until=5.0 + SETTLE)


@pytest.mark.parametrize(
    ("event_at", "now", "expected"),
    [
        # the stat we compare with was taken before an event a whole settle time ago: the
        # difference is that event's write, so a short second look is enough
        (10.0, 11.0, Decision("wait", until=11.0 + QUIET_RECHECK)),
        (10.0, 12.5, Decision("wait", until=12.5 + QUIET_RECHECK)),
        # the event is more recent than a settle time: wait a whole settle time again
        (10.5, 11.0, Decision("wait", until=11.0 + SETTLE, changing=True)),
        # no event after the previous stat (or a polled root): a change is a change
        (None, 11.0, Decision("wait", until=11.0 + SETTLE, changing=True)),
    ],
)
def test_a_change_already_announced_by_an_old_event_gets_only_a_second_look(
    event_at: float | None, now: float, expected: Decision
) -> None:
    got = decide(A, B, now, settle=SETTLE, reported=None, force=True, event_after_prev=event_at)
    assert got == expected


def test_the_short_second_look_is_never_longer_than_the_settle_time() -> None:
    got = decide(A, B, 1.0, settle=0.01, reported=None, event_after_prev=0.0)
    assert got == Decision("wait", until=1.0 + 0.01)


@pytest.mark.parametrize(
    ("mtime_age", "settle", "expected_delay"),
    [
        (5.0, 1.0, QUICK_RECHECK),  # untouched for longer than the settle time
        (1.0, 1.0, QUICK_RECHECK),
        (0.5, 1.0, 1.0),  # written just now: a whole settle time
        (5.0, 0.05, 0.05),  # a settle time shorter than the quick look
        (-3.0, 1.0, 1.0),  # an mtime in the future (a clock-skewed share): be careful
    ],
)
def test_a_file_found_by_a_scan_is_looked_at_again_by_its_age(
    mtime_age: float, settle: float, expected_delay: float
) -> None:
    wall_ns = 1_700_000_000_000_000_000
    sig = (10, wall_ns - int(mtime_age * 1e9), 7)
    assert first_look(sig, 100.0, wall_ns, settle=settle) == pytest.approx(100.0 + expected_delay)
