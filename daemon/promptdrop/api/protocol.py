"""What the ToAPIs API's answers mean, per toapis-api.md: pure functions, no I/O.

A task's status vocabulary, where a result URL may be, the shapes of error bodies (string or
integer `code`, `{"error": {...}}` or a bare `{"message": ...}`, gateway HTML pages) and which
error each answer becomes. The client feeds these the status, headers and bytes it received
and raises what they return; `scrub` removes the API key from any text taken from an answer.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from promptdrop.api.errors import (
    AccountBlocked,
    ApiError,
    BalanceUnavailable,
    RequestRejected,
    ResultUnavailable,
    TaskNotFound,
)
from promptdrop.api.ratelimit import slowed_bucket
from promptdrop.api.retry import Failed, Fault, classify_fault

RUNNING_STATUSES = frozenset({"queued", "submitted", "pending", "in_progress", ""})
FINAL_STATUSES = frozenset({"completed", "failed"})

Scrub = Callable[[str], str]
# One API answer: its JSON object, a retryable failure, or the final error to raise.
Answer = dict[str, Any] | Failed | ApiError


def _unchanged(text: str) -> str:
    return text


@dataclass
class TaskState:
    """One look at a task. status is "running" until the API says completed or failed."""

    id: str
    status: Literal["running", "completed", "failed"]
    raw_status: str
    progress: int | None
    url: str | None
    expires_at: float | None
    error: str | None
    raw: dict[str, Any]


@dataclass
class Uploaded:
    id: str
    url: str
    raw: dict[str, Any]


@dataclass
class Downloaded:
    data: bytes
    format: str


@dataclass(frozen=True)
class Balance:
    """The account's balance as `GET /v1/balance` reports it (toapis-models.md §4).

    Credits are the stable unit (1 USD = `credits_per_usd` credits, 200 today); the unit of
    `remain_balance` / `used_balance` depends on the server (USD, CNY or tokens), and
    `remain_balance` is -1 when `unlimited`. A field the answer lacked is None.
    """

    remain_credits: float | None
    used_credits: float | None
    remain_balance: float | None
    used_balance: float | None
    credits_per_usd: float | None
    unlimited: bool
    raw: dict[str, Any]

    @property
    def empty(self) -> bool:
        """Nothing left to spend: no credits (or, without credit fields, no balance)."""
        if self.unlimited:
            return False
        left = self.remain_credits if self.remain_credits is not None else self.remain_balance
        return left is not None and left <= 0


# --- reading bodies -----------------------------------------------------------------------


def read_json(content: bytes) -> tuple[Any, bool]:
    """The decoded body and whether it was JSON at all (a gateway page is not)."""
    try:
        return json.loads(content), True
    except ValueError:  # also bytes that are not UTF-8
        return None, False


def error_info(body: Any) -> tuple[str | None, int | str | None]:
    """The message and code of an error body, in the documented order of places."""
    if not isinstance(body, Mapping):
        return None, None
    message: Any = None
    code: Any = None
    err = body.get("error")
    if isinstance(err, Mapping):
        message, code = err.get("message"), err.get("code")
    elif isinstance(err, str):
        message = err
    for key in ("fail_reason", "message"):
        if not (isinstance(message, str) and message.strip()):
            message = body.get(key)
    if code is None:
        code = body.get("code")
    text = message.strip() if isinstance(message, str) and message.strip() else None
    if isinstance(code, bool) or not isinstance(code, int | str):
        code = None
    return text, code


# The words an answer uses for "no such task": the task page's 404 ("Task not found", type
# not_found_error, CN 任务不存在), the error table's task_not_found and the gateway's
# task_not_exist (toapis-models.md §6).
_UNKNOWN_TASK_CODES = frozenset({"task_not_found", "task_not_exist"})
_UNKNOWN_TASK_TYPES = frozenset({"not_found_error", "task_not_found"})
_UNKNOWN_TASK_WORDS = ("not_exist", "not found", "任务不存在")


def says_task_unknown(body: Any) -> bool:
    """Whether an error body says the task does not exist, in any of its documented words."""
    message, code = error_info(body)
    text = (message or "").lower()
    err = body.get("error") if isinstance(body, Mapping) else None
    kind = err.get("type") if isinstance(err, Mapping) else None
    return (
        any(word in text for word in _UNKNOWN_TASK_WORDS)
        or (isinstance(code, str) and code.lower() in _UNKNOWN_TASK_CODES)
        or (isinstance(kind, str) and kind.lower() in _UNKNOWN_TASK_TYPES)
    )


def _first_url(data: Any) -> Any:
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0].get("url")
    return None


def result_url(body: Mapping[str, Any]) -> str | None:
    """The image URL of a completed task: result.data[0].url, then url, then data[0].url."""
    result = body.get("result")
    candidates = [
        _first_url(result.get("data")) if isinstance(result, Mapping) else None,
        body.get("url"),
        _first_url(body.get("data")),
    ]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def epoch(value: Any) -> float | None:
    """Epoch seconds from a number, a numeric string or an ISO date; milliseconds tolerated."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    if isinstance(value, int | float) and value > 0:
        return float(value) / 1000.0 if value > 1e11 else float(value)
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --- tasks and uploads --------------------------------------------------------------------


def is_known_status(raw_status: str) -> bool:
    """Whether a (normalized) status name is one the docs list; others count as running."""
    return raw_status in RUNNING_STATUSES or raw_status in FINAL_STATUSES


def parse_task(body: Mapping[str, Any], task_id: str | None = None) -> TaskState:
    """Read a task answer (submit or poll) into a TaskState, per toapis-api.md.

    Only "completed" and "failed" are final; anything else is "running". A completed task
    without a result URL is reported as failed, with an error saying so.
    """
    raw_status = body.get("status")
    normalized = "" if raw_status is None else str(raw_status).strip().lower()
    tid = body.get("id")
    progress = body.get("progress")
    state = TaskState(
        id=str(tid) if tid not in (None, "") else (task_id or ""),
        status="running",
        raw_status=normalized,
        progress=int(progress)
        if isinstance(progress, int | float) and not isinstance(progress, bool)
        else None,
        url=None,
        expires_at=epoch(body.get("expires_at")),
        error=None,
        raw=dict(body),
    )
    if normalized == "completed":
        state.url = result_url(body)
        if state.url is None:
            state.status = "failed"
            state.error = (
                "The image service said the image was finished but gave no address "
                "to download it from."
            )
        else:
            state.status = "completed"
    elif normalized == "failed":
        state.status = "failed"
        message, _ = error_info(body)
        state.error = message or "The image service reported the generation as failed."
    return state


def unknown_task(body: Mapping[str, Any], task_id: str) -> TaskNotFound | None:
    """A 200 poll answer that is no task at all but says the task does not exist."""
    if "status" in body or "id" in body or not says_task_unknown(body):
        return None
    _, code = error_info(body)
    return TaskNotFound(f"The image service does not know task {task_id}.", 200, code)


def parse_upload(body: Mapping[str, Any], scrub: Scrub = _unchanged) -> Uploaded | ApiError:
    """The uploaded file's id and URL, or why the upload did not give one."""
    info = body.get("data")
    if body.get("success") is False or not isinstance(info, Mapping):
        message, code = error_info(body)
        return RequestRejected(rejected_text(message or "upload refused", None, scrub), None, code)
    url = info.get("url")
    if not isinstance(url, str) or not url:
        return ApiError("The image service accepted the upload but gave no address for it.")
    return Uploaded(id=str(info.get("id") or ""), url=url, raw=dict(body))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_balance(body: Mapping[str, Any], scrub: Scrub = _unchanged) -> Balance | ApiError:
    """The balance answer read into a Balance; `success: false` (an HTTP 200 in the docs)
    becomes BalanceUnavailable with the API's message, an answer with no figures an ApiError."""
    if body.get("success") is False:
        message, code = error_info(body)
        text = scrub(message or "no reason given")
        return BalanceUnavailable(
            f"The image service could not report the balance: {text}.", text, 200, code
        )
    fields = {
        name: _number(body.get(name))
        for name in (
            "remain_credits",
            "used_credits",
            "remain_balance",
            "used_balance",
            "credits_per_usd",
        )
    }
    unlimited = body.get("unlimited_quota") is True
    if not unlimited and fields["remain_credits"] is None and fields["remain_balance"] is None:
        return ApiError(
            "The image service answered the balance request without a balance "
            "(no remain_credits or remain_balance)."
        )
    return Balance(
        remain_credits=fields["remain_credits"],
        used_credits=fields["used_credits"],
        remain_balance=fields["remain_balance"],
        used_balance=fields["used_balance"],
        credits_per_usd=fields["credits_per_usd"],
        unlimited=unlimited,
        raw=dict(body),
    )


# --- answers into outcomes ----------------------------------------------------------------


def interpret_answer(
    endpoint: str,
    status: int,
    content: bytes,
    *,
    retry_after: str | None = None,
    category: str | None = None,
    now: float | None = None,
    scrub: Scrub = _unchanged,
) -> Answer:
    """What one HTTP answer of the API means. endpoint: upload, submit, task or balance;
    category: the answer's X-RateLimit-Category header (which bucket a 429 is about)."""
    body, is_json = read_json(content)
    message, code = error_info(body)
    detail = scrub(f"HTTP {status}: {message}" if message else f"HTTP {status}")
    if 200 <= status < 300:
        if isinstance(body, dict):
            return body
        return Failed(Fault.LOST, "the answer was not valid JSON", status)
    if status == 429:
        wait = parse_retry_after(retry_after, now)
        slows = slowed_bucket(endpoint, status, code, category)
        return Failed(Fault.REFUSED, "rate limited (HTTP 429)", status, code, wait, slows=slows)
    if status >= 500 or status == 408:
        kind = detail if is_json else "a gateway page"
        json_error = isinstance(body, dict) and ("error" in body or "message" in body)
        fault = classify_fault(status=status, json_error=json_error)
        slows = slowed_bucket(endpoint, status, code, category) if json_error else None
        return Failed(fault, f"HTTP {status}, {kind}", status, code, slows=slows)
    if endpoint == "task" and (status == 404 or (status == 400 and says_task_unknown(body))):
        return TaskNotFound(f"The image service does not know this task ({detail}).", status, code)
    return refusal(endpoint, status, message or detail, detail, code, scrub)


def refusal(
    endpoint: str,
    status: int,
    message: str,
    detail: str,
    code: int | str | None,
    scrub: Scrub = _unchanged,
) -> ApiError:
    """The final error of a 3xx or 4xx answer (other than 408 and 429)."""
    if status in (400, 422):
        return RequestRejected(rejected_text(message, status, scrub), status, code)
    if status in (401, 403):
        return AccountBlocked(
            f"The image service rejected the API key ({detail}). Check "
            "TOAPIS_API_KEY; new images wait until it is fixed.",
            "auth",
            status,
            code,
        )
    if status == 402:
        return AccountBlocked(
            f"The ToAPIs account has run out of credit ({detail}). Top it "
            "up; new images wait until then.",
            "quota",
            status,
            code,
        )
    if status == 404:
        return ApiError(
            f"The image service answered 'not found' for {endpoint} ({detail}).", status, code
        )
    if 300 <= status < 400:
        return ApiError(
            f"The API address answered with a redirect (HTTP {status}); set "
            "TOAPIS_BASE_URL to the address it points to.",
            status,
            code,
        )
    return ApiError(f"Unexpected answer from the image service ({detail}).", status, code)


def rejected_text(message: str, status: int | None, scrub: Scrub = _unchanged) -> str:
    """What to tell people when the API refused a request."""
    if status == 422:
        return (
            f"The image service refused this prompt under its content policy: "
            f"{scrub(message)}. Change the prompt and save the file again."
        )
    return (
        f"The image service refused the request: {scrub(message)}. "
        "Fix the prompt file and save it again."
    )


def interpret_download(
    status: int, *, oversize: bool, max_bytes: int, retry_after: str | None, now: float | None
) -> Failed | ApiError | None:
    """What a result host's answer means; None when the bytes should be checked as an image."""
    if status == 429:
        wait = parse_retry_after(retry_after, now)
        return Failed(Fault.REFUSED, "rate limited (HTTP 429)", status, retry_after=wait)
    if status >= 500 or status == 408:
        return Failed(Fault.LOST, f"HTTP {status}", status)
    if status != 200:
        return ResultUnavailable(
            f"The finished image can no longer be downloaded (HTTP {status}): it may have "
            "expired. Use `promptdrop retry` to generate it again.",
            status,
        )
    if oversize:
        return ResultUnavailable(
            f"The finished image is larger than {max_bytes // (1024 * 1024)} MB; refused.", 200
        )
    return None


def describe_transport_error(exc: BaseException, timeout: float) -> str:
    """Plain words for a transport failure, without headers (scrub the result still)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connecting to the service timed out"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})" if str(exc) else "could not connect"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"no complete answer within {timeout:g} seconds"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed before a complete answer arrived"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "the connection broke during the exchange"
    return f"{type(exc).__name__}: {exc}"
