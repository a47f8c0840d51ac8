"""The retry policy: what a failure proves, whether to try again, how long to wait. Pure."""

from __future__ import annotations

import random

import httpx
import pytest

from promptdrop.api import (
    Ambiguous,
    RateLimited,
    ResultUnavailable,
    RetryPolicy,
    TransientError,
)
from promptdrop.api.retry import Failed, Fault, classify_fault, may_retry
from promptdrop.backoff import API_RETRY, Backoff

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/images/generations")


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (httpx.ConnectError("refused", request=REQUEST), Fault.NOT_SENT),
        (httpx.ConnectTimeout("slow", request=REQUEST), Fault.NOT_SENT),
        (httpx.PoolTimeout("busy", request=REQUEST), Fault.NOT_SENT),
        (httpx.ReadTimeout("t", request=REQUEST), Fault.LOST),
        (httpx.WriteTimeout("t", request=REQUEST), Fault.LOST),
        (httpx.ReadError("reset", request=REQUEST), Fault.LOST),
        (httpx.RemoteProtocolError("closed", request=REQUEST), Fault.LOST),
        (TimeoutError(), Fault.LOST),
    ],
)
def test_a_transport_failure_says_whether_the_request_left(
    exc: BaseException, fault: Fault
) -> None:
    assert classify_fault(exc=exc) is fault


@pytest.mark.parametrize(
    ("fault", "idempotent", "retry"),
    [
        (Fault.NOT_SENT, False, True),
        (Fault.REFUSED, False, True),
        (Fault.LOST, False, False),
        (Fault.NOT_SENT, True, True),
        (Fault.REFUSED, True, True),
        (Fault.LOST, True, True),
    ],
)
def test_only_a_submit_that_may_have_created_a_task_is_not_retried(
    fault: Fault, idempotent: bool, retry: bool
) -> None:
    assert may_retry(fault, idempotent=idempotent) is retry


def test_the_default_policy_waits_as_the_api_retry_backoff_does() -> None:
    policy = RetryPolicy()
    for attempt in range(10):
        for draw in (0.0, 0.25, 0.5, 0.999):
            assert policy.delay(attempt, draw) == API_RETRY.delay(attempt, draw)


@pytest.mark.parametrize(
    ("base", "cap", "attempt", "draw", "delay"),
    [
        (0.5, 30.0, 0, 0.0, 0.5),
        (0.5, 30.0, 1, 0.0, 1.0),
        (0.5, 30.0, 3, 0.0, 4.0),
        (0.5, 30.0, 6, 0.0, 30.0),
        (0.5, 30.0, 60, 0.0, 30.0),
        (0.5, 30.0, 3, 0.5, 2.0),
        (0.5, 30.0, 3, 0.75, 1.0),
        (0.3, 1.0, 2, 0.0, 1.0),
        (0.0, 1.0, 5, 0.0, 0.0),
    ],
)
def test_the_wait_is_full_jitter_under_a_doubling_capped_ceiling(
    base: float, cap: float, attempt: int, draw: float, delay: float
) -> None:
    policy = RetryPolicy(attempts=3, base=base, cap=cap, retry_after_cap=5.0)
    assert policy.delay(attempt, draw) == pytest.approx(delay)
    assert policy.delay(attempt, draw) == Backoff(first=base, cap=cap, jitter=1.0).delay(
        attempt, draw
    )


def test_backoff_draws_its_jitter_from_the_given_random_source() -> None:
    policy = RetryPolicy(base=1.0, cap=8.0)
    assert policy.backoff(2, random.Random(5)) == policy.delay(2, random.Random(5).random())


@pytest.mark.parametrize(("hint", "delay"), [(0.0, 0.0), (3.0, 3.0), (500.0, 120.0)])
def test_a_retry_after_hint_replaces_the_backoff_up_to_its_cap(hint: float, delay: float) -> None:
    assert RetryPolicy().delay(0, 0.5, retry_after=hint) == delay


@pytest.mark.parametrize(
    "fields",
    [{"attempts": 0}, {"base": -1.0}, {"cap": -1.0}, {"retry_after_cap": -0.1}],
)
def test_a_policy_with_no_tries_or_negative_waits_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_policies_with_the_same_fields_are_equal() -> None:
    assert RetryPolicy(attempts=2, base=0.3, cap=1.0) == RetryPolicy(attempts=2, base=0.3, cap=1.0)
    assert RetryPolicy(attempts=2) != RetryPolicy(attempts=3)


# --- after a failed try ---------------------------------------------------------------------

POLICY = RetryPolicy(attempts=3, base=1.0, cap=10.0, retry_after_cap=5.0)
LOST = Failed(Fault.LOST, "HTTP 502, a gateway page", 502)
REFUSED = Failed(Fault.REFUSED, "HTTP 503: unavailable", 503, "rate_limit_unavailable")
LIMITED = Failed(Fault.REFUSED, "rate limited (HTTP 429)", 429, "rate_limit_exceeded", 2.0)
BROKEN = Failed(Fault.LOST, "not a complete image", 200, broken_result=True)


@pytest.mark.parametrize(
    ("failure", "attempt", "idempotent", "step"),
    [
        (LOST, 0, True, 1.0),
        (LOST, 1, True, 2.0),
        (REFUSED, 0, False, 1.0),
        (LIMITED, 0, False, 2.0),
        (LIMITED, 1, True, 2.0),
    ],
)
def test_a_retryable_failure_waits_before_the_next_try(
    failure: Failed, attempt: int, idempotent: bool, step: float
) -> None:
    assert POLICY.after(failure, attempt, idempotent=idempotent, draw=0.0) == step


@pytest.mark.parametrize("attempt", [0, 2])
def test_a_lost_submit_answer_is_ambiguous_at_once(attempt: int) -> None:
    step = POLICY.after(LOST, attempt, idempotent=False, draw=0.0)
    assert isinstance(step, Ambiguous) and step.status == 502
    assert "HTTP 502, a gateway page" in step.message and "by its business id" in step.message


@pytest.mark.parametrize(
    ("failure", "error", "status"),
    [
        (LOST, TransientError, 502),
        (REFUSED, TransientError, 503),
        (LIMITED, RateLimited, 429),
        (BROKEN, ResultUnavailable, 200),
    ],
)
def test_the_last_failed_try_gives_up_with_the_error_of_its_kind(
    failure: Failed, error: type[Exception], status: int
) -> None:
    step = POLICY.after(failure, 2, idempotent=True, draw=0.0)
    assert type(step) is error and step.status == status
    assert "3 tries" in step.message


def test_a_rate_limit_given_up_on_keeps_the_servers_last_hint() -> None:
    step = POLICY.after(LIMITED, 2, idempotent=True, draw=0.0)
    assert isinstance(step, RateLimited) and step.retry_after == 2.0
    assert step.code == "rate_limit_exceeded"


def test_a_single_try_policy_gives_up_at_once_and_says_one_try() -> None:
    step = RetryPolicy(attempts=1).after(REFUSED, 0, idempotent=False, draw=0.0)
    assert isinstance(step, TransientError) and "1 try)" in step.message
