"""The errors of the ToAPIs client that callers can act on, drawn once here:

    ApiError(message, status=None, code=None)
    ├── RequestRejected    400/422: this request is wrong or refused by policy; the job fails
    ├── AccountBlocked     401/403 (.reason "auth") or 402 (.reason "quota"): pause all submissions
    ├── RateLimited        still 429 after every attempt (.retry_after: the server's last hint)
    ├── TransientError     outage, gateway pages, timeouts: retries used up, nothing was created
    ├── Ambiguous          a submit left but its answer was lost: it may have created a paid task
    ├── TaskNotFound       a task poll answered 404 (any body) or 400 task_not_exist: task gone
    ├── ResultUnavailable  the result could not be downloaded as an image (expired, refused, broken)
    └── BalanceUnavailable the balance was answered `success: false` (HTTP 200): no figures

Messages are for people and never hold the API key: whoever builds one from a server answer
or a transport error scrubs it first.
"""

from __future__ import annotations

from typing import Literal


class ApiError(Exception):
    """Something the ToAPIs API (or the way to it) did; the message is for people."""

    def __init__(self, message: str, status: int | None = None, code: int | str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.message!r}, status={self.status!r}, code={self.code!r})"


class RequestRejected(ApiError):
    """The API refused this request (invalid, or against its content policy): the job fails."""


class AccountBlocked(ApiError):
    """The key is rejected ("auth") or the account has no credit ("quota"): pause submissions."""

    def __init__(
        self,
        message: str,
        reason: Literal["auth", "quota"],
        status: int | None = None,
        code: int | str | None = None,
    ):
        super().__init__(message, status, code)
        self.reason = reason


class RateLimited(ApiError):
    """Still rate limited (429) after every attempt; .retry_after is the server's last hint."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        status: int | None = 429,
        code: int | str | None = None,
    ):
        super().__init__(message, status, code)
        self.retry_after = retry_after


class TransientError(ApiError):
    """Retries used up on outages, gateway pages or timeouts; no task was created by it."""


class Ambiguous(ApiError):
    """A submit whose answer was lost: a paid task may exist. Never resubmitted automatically."""


class TaskNotFound(ApiError):
    """The API does not know this task id (it never had it, or has forgotten it)."""


class ResultUnavailable(ApiError):
    """The result cannot be had as an image: expired, refused, or broken on every attempt."""


class BalanceUnavailable(ApiError):
    """The balance request was answered (HTTP 200) with `success: false`; .reason is the API's
    message, e.g. "Failed to get token info: record not found" for a key whose token is gone."""

    def __init__(
        self, message: str, reason: str, status: int | None = 200, code: int | str | None = None
    ):
        super().__init__(message, status, code)
        self.reason = reason
