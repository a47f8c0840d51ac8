"""What the API's answers mean: status names, result URLs, error bodies. Pure: no sockets."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest

from promptdrop.api import (
    AccountBlocked,
    ApiError,
    Balance,
    BalanceUnavailable,
    RequestRejected,
    ResultUnavailable,
    TaskNotFound,
)
from promptdrop.api.protocol import (
    Uploaded,
    epoch,
    error_info,
    interpret_answer,
    interpret_download,
    is_known_status,
    parse_balance,
    parse_retry_after,
    parse_task,
    parse_upload,
    result_url,
    unknown_task,
)
from promptdrop.api.ratelimit import slowed_bucket
from promptdrop.api.retry import Failed, Fault, RetryPolicy
from promptdrop.jobs.outcomes import Kind, interpret_poll_error

NOW = 1_768_400_000.0
KEY = "sk-canary-7f3a9c1e5b"


def answer(endpoint: str, status: int, body: Any, **kwargs: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return interpret_answer(endpoint, status, content, now=NOW, **kwargs)


def gateway_page(code: int, reason: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


# --- task status vocabulary ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "known"),
    [
        ("queued", "running", True),
        ("submitted", "running", True),
        ("pending", "running", True),
        ("in_progress", "running", True),
        ("", "running", True),
        (None, "running", True),
        ("QUEUED", "running", True),
        ("processing", "running", False),
        ("SUCCESS", "running", False),
        ("completed", "completed", True),
        (" Completed ", "completed", True),
        ("failed", "failed", True),
        ("FAILED", "failed", True),
    ],
)
def test_only_completed_and_failed_are_final_and_unknown_names_run(
    raw: str | None, status: str, known: bool
) -> None:
    body: dict[str, Any] = {"id": "task_img_1", "url": "https://f/x.jpg"}
    if raw is not None:
        body["status"] = raw
    state = parse_task(body)
    assert state.status == status
    assert is_known_status(state.raw_status) is known


def test_a_task_answer_without_an_id_keeps_the_polled_id() -> None:
    assert parse_task({"status": "queued"}, "task_img_9").id == "task_img_9"
    assert parse_task({"status": "queued", "id": "img_2"}, "task_img_9").id == "img_2"


@pytest.mark.parametrize(
    ("progress", "expected"), [(40, 40), (12.7, 12), (True, None), ("50", None), (None, None)]
)
def test_progress_is_a_number_or_nothing(progress: Any, expected: int | None) -> None:
    assert parse_task({"status": "in_progress", "progress": progress}).progress == expected


# --- where the result URL is --------------------------------------------------------------

RESULT = {"result": {"type": "image", "data": [{"url": "https://f/result.jpg"}]}}
TOP = {"url": "https://f/top.jpg"}
DATA = {"data": [{"url": "https://f/data.jpg"}]}


@pytest.mark.parametrize(
    ("body", "url"),
    [
        (RESULT, "https://f/result.jpg"),
        (TOP, "https://f/top.jpg"),
        (DATA, "https://f/data.jpg"),
        ({**RESULT, **TOP, **DATA}, "https://f/result.jpg"),
        ({**TOP, **DATA}, "https://f/top.jpg"),
        ({"result": {"data": []}, **TOP}, "https://f/top.jpg"),
        ({"result": {"data": [{"url": "  "}]}, **DATA}, "https://f/data.jpg"),
        ({"result": {"data": ["https://f/a.jpg"]}, **DATA}, "https://f/data.jpg"),
        ({"result": "https://f/a.jpg", "url": 7, **DATA}, "https://f/data.jpg"),
        ({"url": " https://f/padded.jpg \n"}, "https://f/padded.jpg"),
        ({"result": {"data": [{}]}}, None),
        ({}, None),
    ],
)
def test_the_result_url_is_read_from_the_documented_places_in_order(
    body: dict[str, Any], url: str | None
) -> None:
    assert result_url(body) == url


def test_a_completed_task_without_a_url_is_failed() -> None:
    state = parse_task({"status": "completed", "result": {"data": []}})
    assert state.status == "failed" and state.url is None
    assert state.error is not None and "no address" in state.error


# --- error bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            {"error": {"code": 401, "message": "Authentication failed", "type": "x"}},
            "Authentication failed",
            401,
        ),
        ({"error": {"code": "invalid_request", "message": "bad"}}, "bad", "invalid_request"),
        ({"error": {"code": True, "message": "bad"}}, "bad", None),
        ({"error": {"code": 1.5, "message": "bad"}}, "bad", None),
        ({"error": "plain words"}, "plain words", None),
        ({"error": {"message": "  "}, "fail_reason": "why"}, "why", None),
        ({"fail_reason": "", "message": " task_not_exist "}, "task_not_exist", None),
        ({"message": "x", "code": "c"}, "x", "c"),
        ({"message": 7}, None, None),
        (["not", "an", "object"], None, None),
        (None, None, None),
    ],
)
def test_error_bodies_give_their_message_and_code(
    body: Any, message: str | None, code: int | str | None
) -> None:
    assert error_info(body) == (message, code)


def test_an_upload_error_message_is_read() -> None:
    body = {"success": False, "message": "Image too large. Maximum size is 10MB"}
    assert error_info(body) == ("Image too large. Maximum size is 10MB", None)


AUTH_401 = {
    "error": {
        "code": 401,
        "message": "Authentication failed, please check your API key",
        "type": "authentication_error",
    }
}
PROMPT_400 = {
    "error": {
        "code": "invalid_request",
        "message": "The 'prompt' field is required.",
        "param": "prompt",
        "type": "invalid_request_error",
    }
}
RATE_429 = {"error": {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"}}
BALANCE_429 = {
    "error": {
        "code": 429,
        "message": "Too many requests, please try again later",
        "type": "rate_limit_error",
    }
}
LIMITER_503 = {
    "error": {
        "code": "rate_limit_unavailable",
        "message": "The async task submit limiter is temporarily unavailable",
    }
}
INTERNAL_500 = {"error": {"code": "internal_error", "message": "Internal server error"}}
QUOTA_402 = {
    "error": {
        "code": "insufficient_quota",
        "message": "Insufficient account balance, please top up your account",
        "type": "insufficient_quota",
    }
}
POLICY_422 = {"error": {"code": "content_policy_violation", "message": "content rejected"}}
WEBHOOK_400 = {"error": {"code": "webhook_not_configured", "message": "no webhook"}}
TASK_404_INT = {"error": {"code": 404, "message": "Task not found", "type": "not_found_error"}}
TASK_404_STR = {"error": {"code": "task_not_found", "message": "Task not found"}}
NOT_EXIST = {"message": "task_not_exist"}
UPLOAD_400 = {"success": False, "message": "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"}


@pytest.mark.parametrize(
    ("endpoint", "status", "body", "error", "code"),
    [
        ("submit", 401, AUTH_401, AccountBlocked, 401),
        ("task", 401, AUTH_401, AccountBlocked, 401),
        ("balance", 403, {"message": "forbidden"}, AccountBlocked, None),
        ("submit", 402, QUOTA_402, AccountBlocked, "insufficient_quota"),
        ("submit", 400, PROMPT_400, RequestRejected, "invalid_request"),
        ("submit", 400, WEBHOOK_400, RequestRejected, "webhook_not_configured"),
        ("submit", 422, POLICY_422, RequestRejected, "content_policy_violation"),
        ("upload", 400, UPLOAD_400, RequestRejected, None),
        ("task", 404, TASK_404_INT, TaskNotFound, 404),
        ("task", 404, TASK_404_STR, TaskNotFound, "task_not_found"),
        ("task", 404, NOT_EXIST, TaskNotFound, None),
        ("task", 404, {}, TaskNotFound, None),
        ("task", 404, gateway_page(404, "Not Found"), TaskNotFound, None),
        ("task", 400, NOT_EXIST, TaskNotFound, None),
        ("task", 400, TASK_404_STR, TaskNotFound, "task_not_found"),
        ("task", 400, PROMPT_400, RequestRejected, "invalid_request"),
        ("submit", 400, NOT_EXIST, RequestRejected, None),
        ("balance", 404, TASK_404_STR, ApiError, "task_not_found"),
        ("submit", 302, b"", ApiError, None),
        ("task", 418, {"message": "teapot"}, ApiError, None),
    ],
)
def test_each_documented_error_body_becomes_its_error(
    endpoint: str, status: int, body: Any, error: type[ApiError], code: int | str | None
) -> None:
    outcome = answer(endpoint, status, body)
    assert type(outcome) is error
    assert outcome.status == status and outcome.code == code


def test_a_refused_key_and_an_empty_account_pause_for_different_reasons() -> None:
    assert answer("submit", 401, AUTH_401).reason == "auth"
    assert answer("submit", 402, QUOTA_402).reason == "quota"


def test_a_content_policy_refusal_says_so_with_the_servers_words() -> None:
    outcome = answer("submit", 422, POLICY_422)
    assert "content policy" in outcome.message and "content rejected" in outcome.message


def test_a_redirect_says_to_set_the_base_url() -> None:
    assert "TOAPIS_BASE_URL" in answer("task", 301, b"").message


@pytest.mark.parametrize(
    ("status", "body", "fault", "code"),
    [
        (429, RATE_429, Fault.REFUSED, "rate_limit_exceeded"),
        (429, BALANCE_429, Fault.REFUSED, 429),
        (429, gateway_page(429, "Too Many Requests"), Fault.REFUSED, None),
        (503, LIMITER_503, Fault.REFUSED, "rate_limit_unavailable"),
        (500, INTERNAL_500, Fault.REFUSED, "internal_error"),
        (500, gateway_page(500, "Internal Server Error"), Fault.LOST, None),
        (502, gateway_page(502, "Bad Gateway"), Fault.LOST, None),
        (503, gateway_page(503, "Service Unavailable"), Fault.LOST, None),
        (504, gateway_page(504, "Gateway Time-out"), Fault.LOST, None),
        (502, INTERNAL_500, Fault.LOST, "internal_error"),
        (500, b'{"error": {"code": "internal_', Fault.LOST, None),
        (408, b"", Fault.LOST, None),
    ],
)
def test_outages_and_rate_limits_are_retryable_failures(
    status: int, body: Any, fault: Fault, code: int | str | None
) -> None:
    outcome = answer("submit", status, body)
    assert isinstance(outcome, Failed)
    assert (outcome.fault, outcome.status, outcome.code) == (fault, status, code)


def test_a_gateway_page_is_named_as_such_and_not_quoted() -> None:
    outcome = answer("task", 502, gateway_page(502, "Bad Gateway"))
    assert isinstance(outcome, Failed) and outcome.reason == "HTTP 502, a gateway page"


def test_a_429_carries_the_servers_retry_after() -> None:
    outcome = answer("task", 429, RATE_429, retry_after="7")
    assert isinstance(outcome, Failed) and outcome.retry_after == 7.0
    assert answer("task", 429, RATE_429).retry_after is None


@pytest.mark.parametrize(
    "content",
    [
        b'{"id": "task_img_1", "status": "que',
        b"<html><body>OK</body></html>",
        b"",
        b"\xff\xfe\x00not utf-8",
        b'["a", "list"]',
        b'"a string"',
    ],
)
def test_a_200_that_is_not_a_json_object_is_a_lost_answer(content: bytes) -> None:
    outcome = interpret_answer("submit", 200, content)
    assert isinstance(outcome, Failed) and outcome.fault is Fault.LOST


def test_a_200_json_object_is_the_answer() -> None:
    body = {"success": False, "message": "Failed to get token info: record not found"}
    assert answer("balance", 200, body) == body


def test_malformed_error_bodies_still_give_the_error_of_their_status() -> None:
    assert type(answer("submit", 401, b"{not json")) is AccountBlocked
    assert type(answer("submit", 400, b"<html>Bad Request</html>")) is RequestRejected
    assert type(answer("task", 404, b'{"message": ')) is TaskNotFound


def test_the_key_is_scrubbed_from_messages_built_from_answers() -> None:
    body = {"error": {"code": "invalid_request", "message": f"bad key {KEY} in field"}}
    for status in (400, 401, 418):
        outcome = answer("submit", status, body, scrub=lambda t: t.replace(KEY, "[redacted]"))
        assert KEY not in outcome.message and "[redacted]" in outcome.message


# --- 200 answers that are no task, uploads ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "gone"),
    [
        (NOT_EXIST, True),
        (TASK_404_STR, True),
        ({"error": {"message": "Task not found"}}, True),
        ({"id": "task_img_1", "status": "queued"}, False),
        ({"status": "failed", "message": "task_not_exist"}, False),
        ({"message": "everything is fine"}, False),
    ],
)
def test_a_200_saying_the_task_does_not_exist_is_not_found(
    body: dict[str, Any], gone: bool
) -> None:
    error = unknown_task(body, "task_img_1")
    assert (error is not None) is gone
    if error is not None:
        assert error.status == 200


def test_an_upload_answer_gives_its_id_and_url_or_why_not() -> None:
    ok = {"success": True, "message": "", "data": {"id": "upload_1", "url": "https://f/u.png"}}
    assert parse_upload(ok) == Uploaded(id="upload_1", url="https://f/u.png", raw=ok)
    refused = parse_upload({"success": False, "message": "Image too large. Maximum size is 10MB"})
    assert type(refused) is RequestRejected and "Image too large" in refused.message
    no_url = parse_upload({"success": True, "data": {"id": "upload_1"}})
    assert type(no_url) is ApiError and "no address" in no_url.message


# --- downloads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "oversize", "expected"),
    [
        (200, False, None),
        (200, True, ResultUnavailable),
        (401, False, ResultUnavailable),
        (403, False, ResultUnavailable),
        (404, False, ResultUnavailable),
        (410, False, ResultUnavailable),
        (429, False, Fault.REFUSED),
        (408, False, Fault.LOST),
        (500, False, Fault.LOST),
        (502, False, Fault.LOST),
    ],
)
def test_a_result_hosts_answer_is_an_image_to_check_a_retry_or_unavailable(
    status: int, oversize: bool, expected: Any
) -> None:
    verdict = interpret_download(
        status, oversize=oversize, max_bytes=1024, retry_after="3", now=NOW
    )
    if expected is None:
        assert verdict is None
    elif isinstance(expected, Fault):
        assert isinstance(verdict, Failed) and verdict.fault is expected
    else:
        assert isinstance(verdict, ResultUnavailable) and verdict.status == status


# --- Retry-After and dates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1768467463, 1768467463.0),
        (1768467463.5, 1768467463.5),
        ("1768467463", 1768467463.0),
        (1768467463000, 1768467463.0),
        ("2026-01-15T08:57:43Z", 1768467463.0),
        ("2026-01-15T09:57:43+01:00", 1768467463.0),
        (0, None),
        (-5, None),
        (True, None),
        ("tomorrow", None),
        (None, None),
        ([1768467463], None),
    ],
)
def test_expiry_times_are_read_as_epoch_seconds(value: Any, seconds: float | None) -> None:
    assert epoch(value) == seconds


# --- unknown tasks --------------------------------------------------------------------------

# Every way the docs (and the gateway in front of the API) say "no such task" to a poll.
TASK_GONE_ANSWERS = [
    pytest.param(
        404,
        {"error": {"code": 404, "message": "Task not found", "type": "not_found_error"}},
        id="task page 404, integer code",
    ),
    pytest.param(400, {"message": "task_not_exist"}, id="gateway 400"),
    pytest.param(
        404, {"error": {"code": "task_not_found", "message": "Task not found"}}, id="table 404"
    ),
    pytest.param(404, {"error": {"code": 404, "message": "任务不存在"}}, id="CN 404"),
    pytest.param(400, {"error": {"message": "任务不存在"}}, id="CN 400"),
    pytest.param(400, {"error": {"code": "task_not_exist"}}, id="400 code only"),
    pytest.param(400, {"error": {"type": "not_found_error", "message": "x"}}, id="400 type"),
    pytest.param(404, b"<html>404 Not Found</html>", id="404 page"),
]


@pytest.mark.parametrize(("status", "body"), TASK_GONE_ANSWERS)
def test_every_unknown_task_answer_to_a_poll_is_a_task_gone(status: int, body: Any) -> None:
    error = answer("task", status, body)
    assert isinstance(error, TaskNotFound)
    assert error.status == status
    assert interpret_poll_error(error, gone_before=0).kind is Kind.TASK_GONE


@pytest.mark.parametrize(
    ("endpoint", "status", "body", "expected"),
    [
        ("task", 400, {"error": {"code": "invalid_request", "message": "bad id"}}, RequestRejected),
        ("submit", 400, {"message": "task_not_exist"}, RequestRejected),
        ("submit", 404, {"error": {"code": 404, "type": "not_found_error"}}, ApiError),
    ],
)
def test_other_answers_are_not_a_task_gone(
    endpoint: str, status: int, body: Any, expected: type[ApiError]
) -> None:
    error = answer(endpoint, status, body)
    assert type(error) is expected and not isinstance(error, TaskNotFound)


# --- the balance ----------------------------------------------------------------------------

TB_EXAMPLE = {
    "success": True,
    "remain_balance": 10.5,
    "used_balance": 2.3,
    "remain_credits": 2100,
    "used_credits": 460,
    "credits_per_usd": 200,
    "unlimited_quota": False,
}


@pytest.mark.parametrize(
    ("body", "credits", "unlimited", "empty"),
    [
        pytest.param(TB_EXAMPLE, 2100.0, False, False, id="the docs' token example"),
        pytest.param(
            {**TB_EXAMPLE, "remain_balance": -1, "unlimited_quota": True},
            2100.0,
            True,
            False,
            id="unlimited",
        ),
        pytest.param(
            {**TB_EXAMPLE, "remain_balance": 0, "remain_credits": 0}, 0.0, False, True, id="empty"
        ),
        pytest.param(
            {**TB_EXAMPLE, "remain_balance": -1, "remain_credits": 0, "unlimited_quota": True},
            0.0,
            True,
            False,
            id="unlimited is never empty",
        ),
        pytest.param({"success": True, "remain_balance": 0.0}, None, False, True, id="no credits"),
        pytest.param({**TB_EXAMPLE, "remain_credits": "12.5"}, 12.5, False, False, id="a string"),
    ],
)
def test_a_balance_answer_is_read_into_credits(
    body: dict[str, Any], credits: float | None, unlimited: bool, empty: bool
) -> None:
    balance = parse_balance(body)
    assert isinstance(balance, Balance)
    assert (balance.remain_credits, balance.unlimited, balance.empty) == (credits, unlimited, empty)


def test_the_docs_balance_example_is_read_field_by_field() -> None:
    balance = parse_balance(TB_EXAMPLE)
    assert isinstance(balance, Balance)
    assert (balance.remain_balance, balance.used_balance) == (10.5, 2.3)
    assert (balance.used_credits, balance.credits_per_usd) == (460, 200)


@pytest.mark.parametrize(
    "message",
    [
        "Failed to get token info: record not found",
        "Failed to get user quota",
        "获取令牌信息失败: record not found",
    ],
)
def test_success_false_is_an_unavailable_balance_with_the_apis_words(message: str) -> None:
    result = parse_balance({"success": False, "message": message})
    assert isinstance(result, BalanceUnavailable)
    assert message in result.message and result.status == 200


def test_a_balance_answer_without_figures_is_an_error_not_an_empty_account() -> None:
    result = parse_balance({"object": "balance", "balance": 3.0, "currency": "USD"})
    assert type(result) is ApiError


def test_the_key_is_scrubbed_from_a_balance_failure() -> None:
    result = parse_balance(
        {"success": False, "message": f"no token {KEY}"}, lambda t: t.replace(KEY, "***")
    )
    assert isinstance(result, BalanceUnavailable) and KEY not in result.message


# --- which bucket a refusal slows ------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "status", "code", "category", "slows"),
    [
        ("submit", 429, "rate_limit_exceeded", "async_submit", "submit"),
        ("task", 429, "rate_limit_exceeded", "async_query", "query"),
        # The header names the bucket, whatever request drew the 429.
        ("submit", 429, "rate_limit_exceeded", "async_query", "query"),
        ("task", 429, "rate_limit_exceeded", "ASYNC_SUBMIT", "submit"),
        # No (or an unknown) category: the request's own bucket.
        ("submit", 429, "rate_limit_exceeded", None, "submit"),
        ("task", 429, "rate_limit_exceeded", "something_else", "query"),
        # Uploads and the balance are in no async bucket.
        ("upload", 429, 429, None, None),
        ("balance", 429, 429, None, None),
        # The submit limiter down: the submit side only.
        ("submit", 503, "rate_limit_unavailable", None, "submit"),
        ("task", 503, "rate_limit_unavailable", None, None),
        ("submit", 503, "service_unavailable", None, None),
        ("submit", 500, "internal_error", None, None),
    ],
)
def test_a_refusal_slows_the_bucket_its_category_names(
    endpoint: str, status: int, code: int | str, category: str | None, slows: str | None
) -> None:
    assert slowed_bucket(endpoint, status, code, category) == slows


def test_a_429s_category_reaches_the_failure() -> None:
    body = {"error": {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"}}
    failed = answer("submit", 429, body, retry_after="2", category="async_query")
    assert isinstance(failed, Failed) and failed.slows == "query" and failed.retry_after == 2


def test_a_submit_limiter_outage_is_refused_retryable_and_says_nothing_was_created() -> None:
    body = {
        "error": {
            "code": "rate_limit_unavailable",
            "message": "The async task submit limiter is temporarily unavailable",
        }
    }
    failed = answer("submit", 503, body)
    assert isinstance(failed, Failed)
    assert failed.fault is Fault.REFUSED and failed.slows == "submit"
    final = RetryPolicy(attempts=1).after(failed, 0, idempotent=False, draw=0.0)
    assert isinstance(final, ApiError) and "nothing was created" in final.message
