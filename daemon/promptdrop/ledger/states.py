"""Every state a job can be in, and every move between states that is allowed.

This file is the one place to read to know what a job may become next.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"  # known, nothing sent yet
    WAITING = "waiting"  # the rule's daily budget is spent: starts when the next day's opens
    UPLOADING = "uploading"  # reference images going up (free; safe to redo)
    SUBMITTING = "submitting"  # intent committed: the paid POST may be on the wire
    RUNNING = "running"  # the API gave a task id; polling
    DOWNLOADING = "downloading"  # the task completed; fetching and writing the image
    DONE = "done"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"  # the POST left, its answer was lost: maybe paid, never resent


S = JobState

ALLOWED: dict[JobState, frozenset[JobState]] = {
    # DONE with nothing sent: an image made for this very request found in the folder (adopted).
    S.PENDING: frozenset({S.UPLOADING, S.SUBMITTING, S.WAITING, S.FAILED, S.DONE}),
    # Nothing was sent while waiting, so a waiting job simply becomes pending again.
    S.WAITING: frozenset({S.PENDING, S.FAILED}),
    # Uploads cost nothing, so an interrupted upload simply starts over.
    S.UPLOADING: frozenset({S.SUBMITTING, S.PENDING, S.FAILED}),
    # PENDING only when the API proved it created nothing (refused key, rate limit, connection
    # refused); AMBIGUOUS when it may have created a task.
    S.SUBMITTING: frozenset({S.RUNNING, S.PENDING, S.FAILED, S.AMBIGUOUS}),
    S.RUNNING: frozenset({S.DOWNLOADING, S.FAILED}),
    # Back to RUNNING after a crash mid-download: the task is polled again for a fresh URL.
    S.DOWNLOADING: frozenset({S.DONE, S.RUNNING, S.FAILED}),
    # A deliberate `promptdrop retry` (or rules that opt in for ambiguous jobs).
    S.DONE: frozenset({S.PENDING}),
    S.FAILED: frozenset({S.PENDING}),
    # RUNNING: a lost answer settled, the task found by the business id it was sent with.
    S.AMBIGUOUS: frozenset({S.PENDING, S.RUNNING}),
}

FINAL = frozenset({S.DONE, S.FAILED, S.AMBIGUOUS})
# States in which money may have been spent on the current attempt.
PAID = frozenset({S.SUBMITTING, S.RUNNING, S.DOWNLOADING, S.DONE, S.AMBIGUOUS})


class IllegalTransition(RuntimeError):
    """A caller asked for a move that ALLOWED does not list: a bug, never a user error."""


def check_transition(src: JobState, dst: JobState) -> None:
    """Raise IllegalTransition unless src → dst is allowed."""
    if dst not in ALLOWED[src]:
        raise IllegalTransition(f"a job cannot go from {src} to {dst}")
