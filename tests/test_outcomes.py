"""Interpreting the client's answers and exceptions into outcomes: pure, one table per step."""

from __future__ import annotations

import pytest

from promptdrop.api import (
    AccountBlocked,
    Ambiguous,
    ApiError,
    RateLimited,
    RequestRejected,
    ResultUnavailable,
    TaskNotFound,
    TaskState,
    TransientError,
)
from promptdrop.jobs.outcomes import (
    Kind,
    interpret_download_error,
    interpret_poll_error,
    interpret_submit_error,
    interpret_task,
    interpret_upload_error,
    interpret_write_error,
    interpret_written,
)
from promptdrop.jobs.timing import gone_checks

K = Kind
URL = "http://127.0.0.1:9/ref.png"
STALE = RequestRejected("image_urls[0] is not reachable", 400)


@pytest.mark.parametrize(
    ("exc", "urls", "requeued", "kind"),
    [
        (RequestRejected("bad size", 400), [], False, K.REJECTED),
        (
            RequestRejected("image_urls[0] is not reachable", 400),
            [URL],
            False,
            K.REFUSED_UPLOAD_URL,
        ),
        # Sent back for a fresh upload once only; without URLs it cannot be a stale upload.
        (STALE, [URL], True, K.REJECTED),
        (STALE, [], False, K.REJECTED),
        (AccountBlocked("no key", "auth", 401), [], False, K.UNAUTHORIZED),
        (AccountBlocked("no credit", "quota", 402), [], False, K.QUOTA_EMPTY),
        (RateLimited("slow down"), [], False, K.RATE_LIMITED),
        (TransientError("503", 503), [], False, K.TRANSIENT),
        (Ambiguous("reset"), [], False, K.LOST_ANSWER),
        # Anything the client did not promise created nothing is treated as maybe paid.
        (ApiError("odd answer", 418), [], False, K.LOST_ANSWER),
    ],
)
def test_a_submission_error_is_interpreted_by_what_it_proves(
    exc: ApiError, urls: list[str], requeued: bool, kind: Kind
) -> None:
    outcome = interpret_submit_error(exc, sent_urls=urls, requeued=requeued)
    assert outcome.kind is kind
    assert outcome.message == exc.message
    assert outcome.urls == (tuple(urls) if kind is K.REFUSED_UPLOAD_URL else ())


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (FileNotFoundError(2, "No such file"), K.REFERENCE_UNREADABLE),
        (ValueError("it changed after the prompt file was read"), K.REFERENCE_UNREADABLE),
        (RequestRejected("not an image", 400), K.REFERENCE_REJECTED),
        (AccountBlocked("no key", "auth", 401), K.UNAUTHORIZED),
        (AccountBlocked("no credit", "quota", 402), K.QUOTA_EMPTY),
        (TransientError("503", 503), K.UPLOAD_FAILED),
        (Ambiguous("reset"), K.UPLOAD_FAILED),  # uploads are free: simply tried again
    ],
)
def test_an_upload_error_is_interpreted_with_its_reference(exc: Exception, kind: Kind) -> None:
    outcome = interpret_upload_error(exc, "style.png")
    assert outcome.kind is kind
    about_the_file = kind in (K.REFERENCE_UNREADABLE, K.REFERENCE_REJECTED, K.UPLOAD_FAILED)
    assert outcome.reference == ("style.png" if about_the_file else "")


def test_an_upload_error_the_engine_does_not_know_is_not_swallowed() -> None:
    with pytest.raises(KeyError):
        interpret_upload_error(KeyError("bug"), "style.png")


def _task(status: str, url: str | None = None, error: str | None = None) -> TaskState:
    return TaskState("t1", status, status, None, url, None, error, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "kind", "message"),
    [
        (_task("completed", url="http://x/r.png"), K.TASK_DONE, ""),
        (_task("completed"), K.TASK_RUNNING, ""),  # done without a URL yet: look again
        (_task("failed", error="upstream returned status 422"), K.TASK_FAILED, "upstream"),
        (_task("failed"), K.TASK_FAILED, "no reason given"),
        (_task("running"), K.TASK_RUNNING, ""),
    ],
)
def test_a_poll_answer_is_done_failed_or_running(task: TaskState, kind: Kind, message: str) -> None:
    outcome = interpret_task(task)
    assert outcome.kind is kind and outcome.task is task
    assert outcome.message.startswith(message)


@pytest.mark.parametrize(
    ("exc", "gone_before", "kind"),
    [
        (TaskNotFound("unknown task", 404), 0, K.TASK_GONE),
        (TaskNotFound("unknown task", 400), gone_checks() - 1, K.TASK_GONE),
        (TaskNotFound("unknown task", 404), gone_checks(), K.TASK_GONE_CONFIRMED),
        (AccountBlocked("no key", "auth", 401), 0, K.UNAUTHORIZED),
        (RateLimited("slow down"), 0, K.RATE_LIMITED),
        (TransientError("503", 503), 0, K.TRANSIENT),
        (RequestRejected("odd", 400), 0, K.TRANSIENT),  # polled again, as before
    ],
)
def test_a_poll_error_is_confirmed_before_a_task_is_given_up(
    exc: ApiError, gone_before: int, kind: Kind
) -> None:
    assert interpret_poll_error(exc, gone_before=gone_before).kind is kind


def test_download_and_write_outcomes() -> None:
    assert interpret_download_error(ResultUnavailable("410 gone")).kind is K.RESULT_EXPIRED
    assert interpret_download_error(TransientError("reset")).kind is K.DOWNLOAD_FAILED
    full = interpret_write_error(OSError(28, "No space left on device"))
    assert (full.kind, full.message) == (K.WRITE_FAILED, "[Errno 28] No space left on device")
    assert interpret_written(2, "s", "png").kind is K.WRITTEN
    nobody = interpret_written(0, "s", "png")
    assert (nobody.kind, nobody.written, nobody.image_format) == (K.UNWANTED, 0, "png")
