"""The job machine as data: for each (state, outcome), the next state, what the ledger notes
about the move, and what the engine does next.

This table is the only place an outcome becomes a state. The engine interprets an answer into
an `Outcome` (jobs.outcomes), looks its row up here, commits the move, then performs the
row's effects. `ledger.states.ALLOWED` still says which moves are legal at all; the tests check
that every row here is one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Flag, auto

from promptdrop.jobs import notes
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.ledger.states import JobState

S = JobState
K = Kind


class Effect(Flag):
    """What the engine does besides moving the job (one flag each; a row may combine them)."""

    NONE = 0
    SET_ERROR = auto()  # the job's error: the row's error text (its note when it has none)
    FINISHED = auto()  # stamp finished_at
    COUNT_INTENT = auto()  # the paid intent: count an attempt, check the budget in the commit
    RECORD_TASK = auto()  # store the task id and answer; kept trying while the disk is full
    RECORD_RESULT = auto()  # store the result URL, its expiry and the task's answer
    RECORD_IMAGE = auto()  # store the image's hash and format
    UPDATE_RUNNING = auto()  # store the task's latest answer (no move)
    FRESH = auto()  # just submitted: the first poll waits poll_first
    ACCOUNT_WORKS = auto()  # a submission went through: lift a pause
    CONFIRM_GONE = auto()  # count one more "unknown task" answer; poll again on its schedule
    NOTE_FAILED = auto()  # the failed note next to each prompt file
    NOTE_AMBIGUOUS = auto()  # the ambiguous note
    NOTE_WAITING = auto()  # the waiting note, and wake up at the next midnight
    NOTE_PAUSED = auto()  # the paused note
    NOTE_UNWANTED = auto()  # a ledger event: nobody wants the image; nothing written
    PAUSE = auto()  # pause every submission (longer after each refusal)
    WAIT_UNPAUSED = auto()  # then wait until the pause is over
    RETRY_LATER = auto()  # wait options.retry_later before the next step
    FORGET_UPLOADS = auto()  # the cached upload URLs of this request are stale
    LAUNCH = auto()  # drive the job again (it is not being driven now)
    OBSERVE_LATENCY = auto()  # tell observers how long the task took from submit to image
    RECORD_FOUND = auto()  # store the task id an adopted image's provenance names (not sent)
    CLEAR_ERROR = auto()  # the job's error goes: a lost answer was settled


FAIL = Effect.SET_ERROR | Effect.FINISHED | Effect.NOTE_FAILED


@dataclass(frozen=True)
class Row:
    """A move: `next_state` (the same state: no move), the ledger's `note` on it, and effects.

    `note` and `error` are templates over `Outcome.words()`; `say` is the log line, at `level`.
    """

    next_state: JobState
    note: str = ""
    effects: Effect = Effect.NONE
    error: str | None = None
    say: str = ""
    level: str = "info"

    def detail(self, outcome: Outcome) -> str:
        """The ledger's note on this move for `outcome`."""
        return self.note.format(**outcome.words())

    def error_text(self, outcome: Outcome) -> str:
        """The job's error for `outcome` (set only when the row has SET_ERROR)."""
        return (self.note if self.error is None else self.error).format(**outcome.words())


class NoRow(LookupError):
    """An outcome the table has no row for in this state: a bug, never a user error."""


_NOT_SENT = "not submitted: {message}"
_PAUSED = Row(S.PENDING, _NOT_SENT, Effect.PAUSE | Effect.NOTE_PAUSED)
_LATER = Row(
    S.PENDING,
    _NOT_SENT,
    Effect.RETRY_LATER,
    say="the API could not take the request; trying again later",
    level="warning",
)
_POLL_AGAIN = Row(S.RUNNING, say="poll failed; will poll again", level="warning")
_POLL_PAUSED = Row(S.RUNNING, effects=Effect.PAUSE | Effect.NOTE_PAUSED | Effect.WAIT_UNPAUSED)
_UPLOAD_PAUSED = Row(S.PENDING, "paused: account refused", Effect.PAUSE)
_INTENT = Row(S.SUBMITTING, "submitting", Effect.COUNT_INTENT)
_DONE = Effect.RECORD_IMAGE | Effect.FINISHED | Effect.OBSERVE_LATENCY


TABLE: dict[tuple[JobState, Kind], Row] = {
    # Nothing sent yet.
    (S.PENDING, K.BUDGET_SPENT): Row(
        S.WAITING,
        "{message}",
        Effect.NOTE_WAITING,
        say="the job waits: its folder's daily budget or credits are spent, or it has no price",
    ),
    (S.PENDING, K.UPLOAD_NEEDED): Row(S.UPLOADING, "uploading references"),
    (S.PENDING, K.READY): _INTENT,
    # References going up (free: an interrupted upload starts over).
    (S.UPLOADING, K.BUDGET_SPENT): Row(S.PENDING, "daily budget or credits spent"),
    (S.UPLOADING, K.READY): _INTENT,
    (S.UPLOADING, K.REFERENCE_UNREADABLE): Row(
        S.FAILED,
        "the reference image {reference!r} could not be read ({message}); "
        "save the prompt file again once it is back",
        FAIL,
        say="job failed",
        level="warning",
    ),
    (S.UPLOADING, K.REFERENCE_REJECTED): Row(
        S.FAILED,
        "the API refused the reference image {reference!r}: {message}",
        FAIL,
        say="job failed",
        level="warning",
    ),
    (S.UPLOADING, K.UPLOAD_FAILED): Row(
        S.PENDING,
        "upload failed; retrying later",
        Effect.RETRY_LATER,
        say="upload failed; will try again",
        level="warning",
    ),
    (S.UPLOADING, K.UNAUTHORIZED): _UPLOAD_PAUSED,
    (S.UPLOADING, K.QUOTA_EMPTY): _UPLOAD_PAUSED,
    # The paid POST: its answer, or what stood in for it.
    (S.SUBMITTING, K.CREATED): Row(
        S.RUNNING,
        "task {task_id}",
        Effect.RECORD_TASK | Effect.FRESH | Effect.ACCOUNT_WORKS,
        say="submitted",
    ),
    (S.SUBMITTING, K.REJECTED): Row(
        S.FAILED,
        "the API refused this request: {message}",
        FAIL,
        say="job failed",
        level="warning",
    ),
    (S.SUBMITTING, K.REFUSED_UPLOAD_URL): Row(
        S.PENDING, "refused upload URL; uploading again", Effect.FORGET_UPLOADS
    ),
    (S.SUBMITTING, K.RATE_LIMITED): _LATER,
    (S.SUBMITTING, K.TRANSIENT): _LATER,
    (S.SUBMITTING, K.UNAUTHORIZED): _PAUSED,
    (S.SUBMITTING, K.QUOTA_EMPTY): _PAUSED,
    # A lost answer: never resent blindly. The engine looks the attempt up by its business id
    # (rows below), or, for an attempt without one, writes the ambiguous note.
    (S.SUBMITTING, K.LOST_ANSWER): Row(
        S.AMBIGUOUS,
        "answer lost: {message}",
        Effect.SET_ERROR,
        error="{message}",
        say="submission answer lost; looking it up by its business id (never resent blindly)",
        level="warning",
    ),
    (S.SUBMITTING, K.INTERRUPTED): Row(
        S.AMBIGUOUS,
        "the answer to the submission was lost",
        Effect.SET_ERROR,
        say="submission answer lost; looking it up by its business id (never resent blindly)",
        level="warning",
    ),
    (S.AMBIGUOUS, K.LOOKUP_FOUND): Row(
        S.RUNNING,
        "found by its business id: task {task_id}; nothing more paid",
        Effect.RECORD_TASK | Effect.CLEAR_ERROR,
        say="lost answer settled: the task exists; polling it",
    ),
    (S.AMBIGUOUS, K.LOOKUP_MISSED): Row(
        S.AMBIGUOUS, say="not found by its business id yet; looking again"
    ),
    (S.AMBIGUOUS, K.NOT_CREATED): Row(
        S.PENDING,
        "not created ({message}, and this API finds tasks by business id): sending it "
        "again with a new business id",
        Effect.CLEAR_ERROR,
        say="lost answer settled: the task was never created; sending it again",
        level="warning",
    ),
    (S.AMBIGUOUS, K.LOOKUP_UNPROVEN): Row(
        S.AMBIGUOUS,
        effects=Effect.NOTE_AMBIGUOUS,
        say="not found by its business id, and this API has not shown that it finds tasks "
        "that way; left ambiguous (promptdrop retry decides)",
        level="error",
    ),
    (S.AMBIGUOUS, K.LOOKUP_FAILED): Row(
        S.AMBIGUOUS, say="could not look the lost answer up; asking again", level="warning"
    ),
    # Polling the task.
    (S.RUNNING, K.TASK_RUNNING): Row(S.RUNNING, effects=Effect.UPDATE_RUNNING),
    (S.RUNNING, K.TASK_DONE): Row(S.DOWNLOADING, "completed", Effect.RECORD_RESULT),
    (S.RUNNING, K.TASK_FAILED): Row(
        S.FAILED,
        "the API could not make this image: {message}",
        FAIL,
        say="job failed",
        level="warning",
    ),
    (S.RUNNING, K.TASK_GONE): Row(
        S.RUNNING,
        effects=Effect.CONFIRM_GONE,
        say="the API does not know the task; asking again before giving it up",
        level="warning",
    ),
    (S.RUNNING, K.TASK_GONE_CONFIRMED): Row(
        S.FAILED, notes.TASK_GONE, FAIL, say="job failed", level="warning"
    ),
    (S.RUNNING, K.RATE_LIMITED): _POLL_AGAIN,
    (S.RUNNING, K.TRANSIENT): _POLL_AGAIN,
    (S.RUNNING, K.UNAUTHORIZED): _POLL_PAUSED,
    (S.RUNNING, K.QUOTA_EMPTY): _POLL_PAUSED,
    # Fetching and writing the image.
    (S.DOWNLOADING, K.RESULT_EXPIRED): Row(
        S.FAILED,
        "the finished image could not be downloaded ({message}); its link may have expired",
        FAIL,
        say="job failed",
        level="warning",
    ),
    (S.DOWNLOADING, K.DOWNLOAD_FAILED): Row(
        S.RUNNING,
        "download failed: {message}",
        say="download failed; polling again",
        level="warning",
    ),
    (S.DOWNLOADING, K.WRITE_FAILED): Row(
        S.RUNNING,
        "write failed: {message}",
        Effect.RETRY_LATER,
        say="could not write the image; will try again",
        level="error",
    ),
    (S.DOWNLOADING, K.WRITTEN): Row(S.DONE, "image written {written} time(s)", _DONE, say="done"),
    (S.DOWNLOADING, K.UNWANTED): Row(
        S.DONE, "image written {written} time(s)", _DONE | Effect.NOTE_UNWANTED, say="done"
    ),
    # Prompt files coming and going; the next day's budget.
    (S.WAITING, K.ORPHANED): Row(
        S.FAILED,
        notes.ORPHANED,
        Effect.SET_ERROR | Effect.FINISHED,
        say="waiting job dropped: no prompt file wants it",
    ),
    (S.WAITING, K.BUDGET_ROOM): Row(S.PENDING, "a new day's budget has room"),
    # The folder already holds the image promptdrop made for this request: nothing is sent.
    (S.PENDING, K.ADOPTED): Row(
        S.DONE,
        "adopted from the folder: {message} (made for this request before; nothing paid)",
        Effect.RECORD_FOUND | Effect.RECORD_IMAGE | Effect.FINISHED,
        say="image found in the folder and adopted; nothing paid",
    ),
    (S.FAILED, K.WANTED_AGAIN): Row(S.PENDING, "a prompt file asks for it again", Effect.LAUNCH),
    (S.AMBIGUOUS, K.RESUBMIT_ALLOWED): Row(
        S.PENDING, "rules allow resubmitting ambiguous jobs", Effect.LAUNCH
    ),
}


def lookup(state: JobState, kind: Kind) -> Row:
    """The row for `kind` happening to a job in `state`; NoRow if there is none."""
    try:
        return TABLE[(state, kind)]
    except KeyError:
        raise NoRow(f"no move for {kind} in state {state}") from None
