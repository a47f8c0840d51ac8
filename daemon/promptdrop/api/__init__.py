"""The ToAPIs image API client: upload, submit, poll, download, balance (httpx, async).

The rooms, from the bottom up:

    errors.py     the exception tree callers act on (drawn there)
    secret.py     Secret, the API key that never shows itself
    retry.py      what a failed attempt proves (Fault), whether to retry, how long to wait
    protocol.py   what the API's answers mean: statuses, result URLs, error bodies (pure)
    ratelimit.py  the client-side rate limits of the account's two buckets
    client.py     ToApisClient, the thin I/O shell that sends requests and raises decisions

Importers use this facade: every public name is re-exported here.
"""

from __future__ import annotations

from promptdrop.api.client import (
    DEFAULT_BASE_URL,
    MAX_DOWNLOAD_BYTES,
    AnswerHook,
    EventHandler,
    RetryHook,
    ToApisClient,
)
from promptdrop.api.errors import (
    AccountBlocked,
    Ambiguous,
    ApiError,
    BalanceUnavailable,
    RateLimited,
    RequestRejected,
    ResultUnavailable,
    TaskNotFound,
    TransientError,
)
from promptdrop.api.protocol import (
    FINAL_STATUSES,
    RUNNING_STATUSES,
    Balance,
    Downloaded,
    TaskState,
    Uploaded,
    parse_balance,
    parse_retry_after,
    parse_task,
)
from promptdrop.api.ratelimit import RATE_GROUPS, RateLimits
from promptdrop.api.retry import Fault, RetryPolicy, classify_fault, may_retry
from promptdrop.api.secret import Secret

__all__ = [
    "DEFAULT_BASE_URL",
    "FINAL_STATUSES",
    "MAX_DOWNLOAD_BYTES",
    "RATE_GROUPS",
    "RUNNING_STATUSES",
    "AccountBlocked",
    "Ambiguous",
    "AnswerHook",
    "ApiError",
    "Balance",
    "BalanceUnavailable",
    "Downloaded",
    "EventHandler",
    "Fault",
    "RateLimited",
    "RateLimits",
    "RequestRejected",
    "ResultUnavailable",
    "RetryHook",
    "RetryPolicy",
    "Secret",
    "TaskNotFound",
    "TaskState",
    "ToApisClient",
    "TransientError",
    "Uploaded",
    "classify_fault",
    "may_retry",
    "parse_balance",
    "parse_retry_after",
    "parse_task",
]
