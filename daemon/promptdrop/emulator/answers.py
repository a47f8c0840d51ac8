"""The bodies the emulator answers with, as the ToAPIs docs show them (toapis-api.md)."""

from __future__ import annotations

from typing import Any

from promptdrop.emulator.faults import UNKNOWN_TASK_MODES

AUTH_FAILED = {
    "error": {
        "code": 401,
        "message": "Authentication failed, please check your API key",
        "type": "authentication_error",
    }
}
# A 429 of the async buckets (submitting and polling tasks).
RATE_LIMITED = {
    "error": {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"}
}
# A 429 elsewhere (the balance pages show it; uploads are assumed to answer alike).
TOO_MANY_REQUESTS = {
    "error": {
        "code": 429,
        "message": "Too many requests, please try again later",
        "type": "rate_limit_error",
    }
}
INTERNAL_ERROR = {
    "error": {"code": "internal_error", "message": "Internal server error", "type": "server_error"}
}
# The submit limiter is down: submits only (status queries still pass), as documented.
SUBMIT_LIMITER_DOWN = {
    "error": {
        "code": "rate_limit_unavailable",
        "message": "The async task submit limiter is temporarily unavailable",
    }
}
# The whole API is down (not documented: a plain server error).
UNAVAILABLE = {
    "error": {
        "code": "service_unavailable",
        "message": "Service temporarily unavailable, please try again later",
        "type": "server_error",
    }
}
NO_QUOTA = {
    "error": {
        "code": "insufficient_quota",
        "message": "Insufficient account balance, please top up your account",
        "type": "insufficient_quota",
    }
}
# The balance answers' failure messages (HTTP 200, success false), by path family.
BALANCE_FAILED = {
    "token": "Failed to get token info: record not found",
    "user": "Failed to get user quota",
}
# How an unknown (or forgotten) task is answered, in turn: the error table's 404, the task
# page's 404 with an integer code, and the gateway's own 400.
UNKNOWN_TASK_ANSWERS: tuple[tuple[int, dict[str, Any]], ...] = (
    (
        404,
        {
            "error": {
                "code": "task_not_found",
                "message": "Task not found",
                "type": "invalid_request_error",
            }
        },
    ),
    (404, {"error": {"code": 404, "message": "Task not found", "type": "not_found_error"}}),
    (400, {"message": "task_not_exist"}),
)
# Faults.unknown_task_answer: one of the shapes above every time, or "rotate" (in turn).
UNKNOWN_TASK_BY_MODE = dict(zip(UNKNOWN_TASK_MODES[1:], UNKNOWN_TASK_ANSWERS, strict=True))
GATEWAY_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
TOO_LARGE = "Image too large. Maximum size is 10MB"
UNSUPPORTED = "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"
