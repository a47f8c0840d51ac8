"""Fault injection for the emulator: what can go wrong, and how often."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = ("submit", "poll", "upload", "download")
BUSINESS_ID_MODES = ("honoured", "ignored", "delayed")

# The per-request faults, in the order one uniform draw walks them. The first three answer
# before the request is processed; the others after it (see Faults).
REQUEST_FAULTS = (
    "rate_429",
    "error_500",
    "error_503",
    "html_502",
    "html_504",
    "reset",
    "slow",
    "malformed_json",
)
BEFORE_PROCESSING = frozenset({"rate_429", "error_500", "error_503"})

# How each fault is named in stats["faults_injected"].
STAT_NAMES = {
    "rate_429": "429",
    "error_500": "500",
    "error_503": "503",
    "html_502": "502",
    "html_504": "504",
    "reset": "reset",
    "slow": "slow",
    "malformed_json": "malformed_json",
}

_RATES = (
    *REQUEST_FAULTS,
    "task_failed",
    "task_gone",
    "url_top_level_only",
    "expired_results",
)
_FLAGS = (
    "outage",
    "submit_limiter_down",
    "auth_fail",
    "quota_exhausted",
    "unlimited_quota",
    "balance_fails",
)
# Faults.unknown_task_answer's values (the shapes are in emulator.answers).
UNKNOWN_TASK_MODES = ("rotate", "task_not_found", "not_found_error", "task_not_exist")


@dataclass(frozen=True)
class Faults:
    """What the emulator does wrong, on purpose. Rates are probabilities from 0 to 1.

    Per-request faults (one uniform draw per request picks at most one, in this order; if
    the rates add up to more than 1, earlier ones win): rate_429, error_500, error_503,
    html_502, html_504, reset, slow, malformed_json. They apply only to requests of the
    kinds listed in `endpoints` ("submit": POST generations, "poll": GET a task and GET
    /v1/balance, "upload": POST uploads, "download": GET a result or upload file).

    Whether a SUBMIT (or upload) still happened:
    - rate_429, error_500, error_503 answer with the documented JSON bodies BEFORE the
      request is processed: NO task is created (the server said so by answering).
    - html_502, html_504 (a gateway lost the answer), reset (the connection is reset with
      no answer), slow (the answer waits `slow_seconds`, possibly beyond the client's
      timeout) and malformed_json (a 200 whose JSON is cut short) happen AFTER the request
      was processed: the task IS created and runs. This is the "ambiguous submit".

    Other faults:
    - task_failed: share of new tasks that end "failed" (decided when the task is created).
    - task_gone: share of new tasks the API forgets right after creating them: the submit
      answers as usual (the task is counted and paid for), then every poll of it answers as
      an unknown task does, and its result is never served. Counted as "task_gone".
    - running_status: the status name while queued ("queued", or "pending", "submitted",
      "" or any other running name; "completed" and "failed" are not allowed).
    - url_top_level_only: share of tasks whose completed answer carries the URL only as a
      top-level `url` (no `result`); decided per task at its first completed answer.
    - expired_results: share of result URLs refused as expired (404) at download; decided
      per URL at its first download.
    - Unknown tasks (never created, forgotten, or cleared by reset) are answered as
      `unknown_task_answer` says: "rotate" (the default) in turn 404 {"error": {"code":
      "task_not_found", ...}}, 404 {"error": {"code": 404, "type": "not_found_error",
      ...}} (the task page's documented body) and 400 {"message": "task_not_exist"} (the
      gateway's); or always the one named: "task_not_found", "not_found_error" or
      "task_not_exist".
    - outage: the whole API is down: every API request answers 503 (service_unavailable).
      submit_limiter_down: the documented submit-side degradation: every submit answers
      503 rate_limit_unavailable (nothing is created) while polls, uploads and the balance
      are answered as usual. auth_fail: every API request answers 401.
      quota_exhausted: every submit answers 402 insufficient_quota (nothing is created)
      and the balance reports 0 credits left.
    - unlimited_quota: the balance says unlimited_quota true and remain_balance -1.
      balance_fails: the balance answers HTTP 200 {"success": false, "message": ...}, as
      the docs show for a deleted token (or, on /v1/user/balance, a missing user).
    - retry_after_format: "seconds" or "date" (an HTTP date) for every Retry-After header.
    - business_ids: what becomes of a submission's `client_business_id` (the docs' CN task
      page): "honoured" (echoed in the task, and the task is found by it in place of its id),
      "ignored" (neither: an API that does not know the field), or "delayed" (honoured, but
      a lookup finds the task only `business_id_delay` seconds after it was created).
    """

    error_500: float = 0.0
    error_503: float = 0.0
    html_502: float = 0.0
    html_504: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    malformed_json: float = 0.0
    rate_429: float = 0.0
    retry_after_format: str = "seconds"
    task_failed: float = 0.0
    task_gone: float = 0.0
    running_status: str = "queued"
    url_top_level_only: float = 0.0
    expired_results: float = 0.0
    unknown_task_answer: str = "rotate"
    outage: bool = False
    submit_limiter_down: bool = False
    auth_fail: bool = False
    quota_exhausted: bool = False
    unlimited_quota: bool = False
    balance_fails: bool = False
    endpoints: tuple[str, ...] = field(default=ENDPOINTS)
    business_ids: str = "honoured"
    business_id_delay: float = 5.0

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault rate {name} must be a number from 0 to 1")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"fault rate {name} must be from 0 to 1, not {value}")
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"fault {name} must be true or false")
        if isinstance(self.slow_seconds, bool) or not isinstance(self.slow_seconds, int | float):
            raise ValueError("slow_seconds must be a number of seconds")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must not be negative")
        if self.business_ids not in BUSINESS_ID_MODES:
            raise ValueError(f"business_ids must be one of {', '.join(BUSINESS_ID_MODES)}")
        if isinstance(self.business_id_delay, bool) or not isinstance(
            self.business_id_delay, int | float
        ):
            raise ValueError("business_id_delay must be a number of seconds")
        if self.retry_after_format not in ("seconds", "date"):
            raise ValueError('retry_after_format must be "seconds" or "date"')
        if not isinstance(self.running_status, str) or self.running_status in (
            "completed",
            "failed",
        ):
            raise ValueError("running_status must be a running status name")
        if self.unknown_task_answer not in UNKNOWN_TASK_MODES:
            known = ", ".join(UNKNOWN_TASK_MODES)
            raise ValueError(f"unknown_task_answer must be one of {known}")
        endpoints = self.endpoints
        if isinstance(endpoints, str) or not all(isinstance(e, str) for e in endpoints):
            raise ValueError(f"endpoints must be a list of {', '.join(ENDPOINTS)}")
        unknown = sorted(set(endpoints) - set(ENDPOINTS))
        if unknown:
            raise ValueError(f"unknown endpoint(s) {unknown}; use {', '.join(ENDPOINTS)}")
        # Accept any sequence but keep the frozen object hashable.
        object.__setattr__(self, "endpoints", tuple(endpoints))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build Faults from JSON-like fields; unknown fields or bad values raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        values = dict(data)
        if "endpoints" in values and isinstance(values["endpoints"], list):
            values["endpoints"] = tuple(values["endpoints"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict (endpoints as a list)."""
        data = dataclasses.asdict(self)
        data["endpoints"] = list(self.endpoints)
        return data

    def applies_to(self, endpoint: str) -> bool:
        """Whether the per-request faults apply to this kind of request."""
        return endpoint in self.endpoints
