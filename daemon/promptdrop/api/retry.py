"""When a failed attempt may be tried again, after how long, and what to raise when not.

GETs and uploads (which cost nothing) are retried on every transient fault. A submit is
retried only when the fault proves no task was created (`classify_fault`, `may_retry`);
otherwise it raises Ambiguous at once, because the API has no idempotency key.

Pure: the caller passes the attempt number and a random draw; nothing here sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

import httpx

from promptdrop.api.errors import (
    Ambiguous,
    ApiError,
    RateLimited,
    ResultUnavailable,
    TransientError,
)
from promptdrop.backoff import API_RETRY, Backoff


class Fault(Enum):
    NOT_SENT = "not_sent"  # no connection was made: the server saw nothing
    REFUSED = "refused"  # the server answered with a documented error: it created nothing
    LOST = "lost"  # the server may have acted; its answer is missing, cut off or garbled


def classify_fault(
    *, exc: BaseException | None = None, status: int | None = None, json_error: bool = False
) -> Fault:
    """Say what a failed attempt proves about the server having acted on the request.

    exc: the transport exception, if no answer came. status/json_error: the HTTP status of
    an answer, and whether its body was a JSON object carrying `error` or `message`.
    """
    if exc is not None:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return Fault.NOT_SENT
        return Fault.LOST  # read timeouts, resets after sending, protocol errors
    if status == 429 or (status in (500, 503) and json_error):
        return Fault.REFUSED
    return Fault.LOST  # gateway HTML pages, 502/504, malformed bodies


def may_retry(fault: Fault, *, idempotent: bool) -> bool:
    """Repeatable requests are always retried; a submit only when nothing was created."""
    return idempotent or fault is not Fault.LOST


@dataclass(frozen=True)
class Failed:
    """A retryable outcome of one attempt; `reason` is already free of the key."""

    fault: Fault
    reason: str
    status: int | None = None
    code: int | str | None = None
    retry_after: float | None = None
    broken_result: bool = False  # a download that was not a whole image
    # The client's rate bucket ("submit" or "query") this refusal says to slow down: a 429's
    # X-RateLimit-Category, or the submit side for a 503 rate_limit_unavailable.
    slows: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """attempts counts every try, the first included. The wait before retry k (0-based) is
    `Backoff(first=base, cap=cap, jitter=1.0)`'s ("full jitter": between 0 and
    min(cap, base * 2**k)); a 429's Retry-After replaces it, capped at retry_after_cap."""

    attempts: int = 6
    base: float = API_RETRY.first
    cap: float = API_RETRY.cap
    retry_after_cap: float = 120.0
    shape: Backoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.retry_after_cap < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative delays")
        shape = Backoff(first=self.base, cap=self.cap, factor=API_RETRY.factor, jitter=1.0)
        object.__setattr__(self, "shape", shape)

    def delay(self, retry_index: int, draw: float, retry_after: float | None = None) -> float:
        """The wait before retry number retry_index (0 for the first), `draw` from [0, 1)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return self.shape.delay(retry_index, draw)

    def backoff(self, retry_index: int, rng: random.Random) -> float:
        """The backoff before retry number retry_index, drawing its jitter from rng."""
        return self.delay(retry_index, rng.random())

    def after(
        self, failure: Failed, attempt: int, *, idempotent: bool, draw: float
    ) -> float | ApiError:
        """After failed try `attempt` (0-based): the wait before the next, or the error to raise."""
        if not may_retry(failure.fault, idempotent=idempotent):
            return Ambiguous(ambiguous_text(failure.reason), failure.status, failure.code)
        if attempt + 1 >= self.attempts:
            return give_up(failure, self.attempts)
        return self.delay(attempt, draw, failure.retry_after)


def ambiguous_text(reason: str) -> str:
    """What to tell people when a submit's answer was lost."""
    return (
        f"The image request was sent but its answer was lost ({reason}), so an image "
        "may or may not have been started and paid for. promptdrop never sends it again "
        "blindly: it looks the request up by its business id first."
    )


def give_up(failure: Failed, attempts: int) -> ApiError:
    """The error for a request whose last allowed attempt failed like `failure`."""
    tries = f"{attempts} {'try' if attempts == 1 else 'tries'}"
    if failure.broken_result:
        return ResultUnavailable(
            f"The finished image could not be downloaded whole ({failure.reason}, {tries}).",
            failure.status,
        )
    if failure.code == "rate_limit_unavailable" and failure.slows == "submit":
        return TransientError(
            f"The image service's submit limiter is temporarily unavailable (HTTP "
            f"{failure.status}, {tries}): nothing was created. promptdrop will try again "
            "later; images already started are still fetched meanwhile.",
            failure.status,
            failure.code,
        )
    if failure.status == 429:
        return RateLimited(
            f"The image service kept answering 'too many requests' ({tries}); "
            "promptdrop will wait and try again later.",
            failure.retry_after,
            429,
            failure.code,
        )
    return TransientError(
        f"The image service could not be reached or kept failing ({failure.reason}; "
        f"{tries}). promptdrop will try again later.",
        failure.status,
        failure.code,
    )
