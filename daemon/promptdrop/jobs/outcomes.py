"""What just happened to a job, as a small value: the API's answer or a local event, interpreted.

The engine never decides a job's next state from an exception: it turns each answer (or the
exception the client raised instead) into an `Outcome` here, looks the move up in
`jobs.table`, and only then does the I/O. The `interpret_*` functions are pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from promptdrop.api import (
    AccountBlocked,
    ApiError,
    RateLimited,
    RequestRejected,
    ResultUnavailable,
    TaskNotFound,
    TaskState,
    TransientError,
)
from promptdrop.jobs.timing import gone_confirmed


class Kind(StrEnum):
    # Before sending: local events of the submit step.
    BUDGET_SPENT = "budget spent"  # message: why it is held; budget: the rule's daily budget
    UPLOAD_NEEDED = "upload needed"  # the request has local reference images
    REFERENCE_UNREADABLE = "reference unreadable"  # reference, message
    REFERENCE_REJECTED = "reference rejected"  # reference, message (the API refused the upload)
    UPLOAD_FAILED = "upload failed"  # message: the upload may simply be tried again
    READY = "ready"  # every reference is up and the budget has room: commit the intent
    # The answer to the paid submission.
    CREATED = "created"  # task: the API's task (its id)
    REJECTED = "rejected"  # message
    REFUSED_UPLOAD_URL = "refused upload URL"  # message: a cached upload URL went stale
    RATE_LIMITED = "rate limited"  # message
    TRANSIENT = "transient"  # message: an outage or a timeout that created nothing
    UNAUTHORIZED = "unauthorized"  # message: the key was refused
    QUOTA_EMPTY = "quota empty"  # message: the account has no credit
    LOST_ANSWER = "lost answer"  # message: it left, its answer did not come back
    INTERRUPTED = "interrupted"  # a job found mid-submission: its answer died with a task
    # Looking a lost answer up by the attempt's business id (jobs.lookups).
    LOOKUP_FOUND = "found by business id"  # task: the task it created
    LOOKUP_MISSED = "not found yet"  # message: how many times so far
    NOT_CREATED = "not created"  # message: how often and over how long it was not found
    LOOKUP_UNPROVEN = "lookups unproven"  # not found, at an API not shown to find tasks so
    LOOKUP_FAILED = "lookup failed"  # message: the lookup got no answer
    # The answer to a poll.
    TASK_RUNNING = "task running"  # task
    TASK_DONE = "task done"  # task: url and expiry
    TASK_FAILED = "task failed"  # message: the API's reason
    TASK_GONE = "task gone"  # the API does not know the task (yet to be confirmed)
    TASK_GONE_CONFIRMED = "task gone, confirmed"  # still unknown after the confirmation polls
    # Fetching and writing the image.
    RESULT_EXPIRED = "result expired"  # message
    DOWNLOAD_FAILED = "download failed"  # message
    WRITE_FAILED = "write failed"  # message: disk full, a share gone read-only...
    WRITTEN = "written"  # written, image_sha256, image_format
    UNWANTED = "unwanted"  # the image came, no prompt file wants it any more
    # Prompt files coming and going, and the next day's budget.
    ORPHANED = "orphaned"  # a waiting job no prompt file wants any more
    WANTED_AGAIN = "wanted again"  # an orphaned job's request is asked for again
    RESUBMIT_ALLOWED = "resubmit allowed"  # an ambiguous job, rules that opt in to resending
    BUDGET_ROOM = "budget room"  # a waiting job, a day with room in its budget
    # The folder as a second ledger.
    ADOPTED = "adopted"  # message: the file; task: its provenance's task; image_sha256, format


@dataclass(frozen=True)
class Outcome:
    """One interpreted event; which fields are set depends on `kind` (see Kind)."""

    kind: Kind
    message: str = ""
    reference: str = ""
    task: TaskState | None = None
    budget: int | None = None
    written: int = 0
    image_sha256: str = ""
    image_format: str = ""
    urls: tuple[str, ...] = ()

    def words(self) -> dict[str, object]:
        """The fields a table row's texts may name: {message}, {reference}, {task_id}..."""
        return {
            "message": self.message,
            "reference": self.reference,
            "task_id": self.task.id if self.task is not None else "",
            "budget": self.budget,
            "written": self.written,
        }


def interpret_upload_error(exc: Exception, reference: str) -> Outcome:
    """A reference image could not be read (OSError, ValueError) or uploaded (ApiError)."""
    if isinstance(exc, RequestRejected):
        return Outcome(Kind.REFERENCE_REJECTED, exc.message, reference)
    if isinstance(exc, AccountBlocked):
        return _blocked(exc)
    if isinstance(exc, ApiError):
        return Outcome(Kind.UPLOAD_FAILED, exc.message, reference)
    if isinstance(exc, OSError | ValueError):
        return Outcome(Kind.REFERENCE_UNREADABLE, str(exc), reference)
    raise exc


def interpret_submit_error(exc: ApiError, *, sent_urls: Sequence[str], requeued: bool) -> Outcome:
    """The paid submission raised `exc`.

    `sent_urls`: the reference URLs the request carried; `requeued`: this job was already
    sent back once for a refused upload URL (it is only sent back once).
    """
    if isinstance(exc, RequestRejected):
        if sent_urls and "image_urls" in exc.message and not requeued:
            return Outcome(Kind.REFUSED_UPLOAD_URL, exc.message, urls=tuple(sent_urls))
        return Outcome(Kind.REJECTED, exc.message)
    if isinstance(exc, AccountBlocked):
        return _blocked(exc)
    if isinstance(exc, RateLimited):
        return Outcome(Kind.RATE_LIMITED, exc.message)
    if isinstance(exc, TransientError):
        # The client raises it for a submit only when the server proved nothing was created.
        return Outcome(Kind.TRANSIENT, exc.message)
    # Ambiguous, and anything the client did not promise created nothing: maybe paid.
    return Outcome(Kind.LOST_ANSWER, exc.message)


def interpret_created(task: TaskState) -> Outcome:
    """The submission was answered with a task."""
    return Outcome(Kind.CREATED, task=task)


def interpret_task(task: TaskState) -> Outcome:
    """A poll's answer: done (with a URL), failed, or still running."""
    if task.status == "completed" and task.url:
        return Outcome(Kind.TASK_DONE, task=task)
    if task.status == "failed":
        return Outcome(Kind.TASK_FAILED, task.error or "no reason given", task=task)
    return Outcome(Kind.TASK_RUNNING, task=task)


def interpret_poll_error(exc: ApiError, *, gone_before: int) -> Outcome:
    """A poll raised `exc`; `gone_before`: "unknown task" answers in a row before this one."""
    if isinstance(exc, TaskNotFound):
        kind = Kind.TASK_GONE_CONFIRMED if gone_confirmed(gone_before + 1) else Kind.TASK_GONE
        return Outcome(kind, exc.message)
    if isinstance(exc, AccountBlocked):
        return _blocked(exc)
    if isinstance(exc, RateLimited):
        return Outcome(Kind.RATE_LIMITED, exc.message)
    return Outcome(Kind.TRANSIENT, exc.message)


def interpret_download_error(exc: ApiError) -> Outcome:
    """Fetching the finished image raised `exc`."""
    if isinstance(exc, ResultUnavailable):
        return Outcome(Kind.RESULT_EXPIRED, exc.message)
    return Outcome(Kind.DOWNLOAD_FAILED, exc.message)


def interpret_write_error(exc: OSError) -> Outcome:
    """Writing the image next to its prompt files raised `exc`."""
    return Outcome(Kind.WRITE_FAILED, str(exc))


def interpret_written(written: int, sha256: str, fmt: str) -> Outcome:
    """The image was placed next to `written` prompt files (0: none wants it any more)."""
    kind = Kind.WRITTEN if written else Kind.UNWANTED
    return Outcome(kind, written=written, image_sha256=sha256, image_format=fmt)


def _blocked(exc: AccountBlocked) -> Outcome:
    kind = Kind.UNAUTHORIZED if exc.reason == "auth" else Kind.QUOTA_EMPTY
    return Outcome(kind, exc.message)
