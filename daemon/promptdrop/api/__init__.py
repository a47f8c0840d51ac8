"""The ToAPIs image API client: upload, submit, poll, download, balance (httpx, async).

Errors callers can act on, drawn once here:

    ApiError(message, status=None, code=None)
    ├── RequestRejected    400/422: this request is wrong or refused by policy; the job fails
    ├── AccountBlocked     401/403 (.reason "auth") or 402 (.reason "quota"): pause all submissions
    ├── RateLimited        still 429 after every attempt (.retry_after: the server's last hint)
    ├── TransientError     outage, gateway pages, timeouts: retries used up, nothing was created
    ├── Ambiguous          a submit left but its answer was lost: it may have created a paid task
    ├── TaskNotFound       404 on a task
    └── ResultUnavailable  the result could not be downloaded as an image (expired, refused, broken)

Retries: GETs and uploads (which cost nothing) are retried on every transient fault. A submit
is retried only when the fault proves no task was created (`classify_fault`, `may_retry`);
otherwise it raises Ambiguous at once, because the API has no idempotency key.

The API key travels only to the base URL's origin: API requests use their own httpx client
whose auth refuses any other origin and which never follows redirects; downloads use a second
client that has no credentials at all. The key is held in a `Secret`, every message built from
a server answer or a transport error is scrubbed of it, and httpx exceptions are never chained
(they hold requests, and so headers).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import structlog

from promptdrop import __version__, imaging
from promptdrop.api.ratelimit import RATE_GROUPS, Limits, RateLimits

__all__ = [
    "RATE_GROUPS",
    "AccountBlocked",
    "Ambiguous",
    "AnswerHook",
    "ApiError",
    "Downloaded",
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
    "parse_retry_after",
    "parse_task",
]

log = structlog.get_logger("promptdrop.api")

DEFAULT_BASE_URL = "https://toapis.com"
RUNNING_STATUSES = frozenset({"queued", "submitted", "pending", "in_progress", ""})
FINAL_STATUSES = frozenset({"completed", "failed"})
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDACTED = "[redacted]"

T = TypeVar("T")
EventHandler = Callable[[str, dict[str, Any]], None]
# (endpoint, HTTP status or None when no answer came: refused connection, reset, timeout)
AnswerHook = Callable[[str, int | None], None]
RetryHook = Callable[[str], None]


class Secret:
    """A string that never shows itself: repr() and str() are masked; use .reveal() to send it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled or copied to storage")


# --- errors -------------------------------------------------------------------------------


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
    """The API does not know this task id."""


class ResultUnavailable(ApiError):
    """The result cannot be had as an image: expired, refused, or broken on every attempt."""


# --- data ---------------------------------------------------------------------------------


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
class RetryPolicy:
    """attempts counts every try, the first included. Backoff before retry k (0-based) is
    uniform(0, min(cap, base * 2**k)) ("full jitter"); a 429's Retry-After replaces it,
    capped at retry_after_cap."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.retry_after_cap < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative delays")

    def backoff(self, retry_index: int, rng: random.Random) -> float:
        """The delay before retry number retry_index (0 for the first retry)."""
        return rng.uniform(0.0, min(self.cap, self.base * 2.0**retry_index))


# --- fault classification -----------------------------------------------------------------


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


@dataclass
class _Failed:
    """A retryable outcome of one attempt."""

    fault: Fault
    reason: str
    status: int | None = None
    code: int | str | None = None
    retry_after: float | None = None
    broken_result: bool = False  # a download that was not a whole image


# --- parsing answers ----------------------------------------------------------------------


def _error_info(body: Any) -> tuple[str | None, int | str | None]:
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


def _first_url(data: Any) -> Any:
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0].get("url")
    return None


def _result_url(body: Mapping[str, Any]) -> str | None:
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


def _epoch(value: Any) -> float | None:
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
        expires_at=_epoch(body.get("expires_at")),
        error=None,
        raw=dict(body),
    )
    if normalized == "completed":
        state.url = _result_url(body)
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
        message, _ = _error_info(body)
        state.error = message or "The image service reported the generation as failed."
    return state


def parse_retry_after(value: str | None) -> float | None:
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
    return max(0.0, when.timestamp() - time.time())


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


class _BearerAuth(httpx.Auth):
    """Adds the key, and refuses outright to add it for any origin but the API's."""

    def __init__(self, key: Secret, origin: tuple[str, str, int | None]) -> None:
        self._key = key
        self._origin = origin

    def __repr__(self) -> str:
        return "_BearerAuth(********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) != self._origin:
            raise ApiError(
                f"Refusing to send the API key to {request.url.scheme}://{request.url.host}: "
                "it only goes to the configured API address."
            )
        request.headers["Authorization"] = "Bearer " + self._key.reveal()
        yield request


# --- the client ---------------------------------------------------------------------------


class ToApisClient:
    """Async client of the ToAPIs image API. Use as `async with ToApisClient(key, url) as c:`.

    Rate limits default to the documented ones of `account_group`; pass
    `rate_limits=RateLimits.unlimited()` to turn client-side limiting off. `timeout` bounds
    each request as a whole (seconds), `connect_timeout` the connection set-up. Tests pass
    `transport` (API) and `download_transport` (result and upload hosts).

    Observers (for metrics; settable after construction too): `on_answer(endpoint, status)` is
    called for every attempt's outcome, with status None when no HTTP answer came;
    `on_retry(endpoint)` before every retry. Endpoints: upload, submit, task, balance,
    download. An observer that raises is logged and ignored.
    """

    def __init__(
        self,
        api_key: str | Secret,
        base_url: str = DEFAULT_BASE_URL,
        *,
        account_group: str = "default",
        rate_limits: RateLimits | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        download_transport: httpx.AsyncBaseTransport | None = None,
        on_event: EventHandler | None = None,
        on_answer: AnswerHook | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._key = api_key if isinstance(api_key, Secret) else Secret(api_key.strip())
        # A header value with control characters makes h11 raise with the value in its message.
        if not all(33 <= ord(ch) < 127 for ch in self._key.reveal()):
            raise ValueError(
                "the API key contains spaces, line breaks or other characters "
                "that cannot be sent; check how it was copied"
            )
        url = httpx.URL(base_url.rstrip("/"))
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            raise ValueError(f"the API address must start with http:// or https:// ({base_url!r})")
        self.base_url = str(url)
        self._origin = _origin(url)
        self.rate_limits = rate_limits or RateLimits.for_group(account_group)
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._on_event = on_event
        self.on_answer = on_answer
        self.on_retry = on_retry
        self._rng = random.Random()
        self._limits = Limits(self.rate_limits, self._rate_waited)
        self._unknown_statuses: set[str] = set()
        http_timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        headers = {"User-Agent": f"promptdrop/{__version__}", "Accept": "application/json"}
        auth = _BearerAuth(self._key, self._origin)
        self._api = httpx.AsyncClient(
            base_url=url,
            auth=auth,
            headers=headers,
            timeout=http_timeout,
            follow_redirects=False,
            transport=transport,
        )
        # Submits go on a fresh connection each: a pooled connection the server closed while
        # idle fails like a lost answer, and would make a submit look ambiguous for nothing.
        self._api_submit = httpx.AsyncClient(
            base_url=url,
            auth=auth,
            headers=headers,
            timeout=http_timeout,
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        # No credentials of any kind: result and upload hosts are someone else's.
        self._files = httpx.AsyncClient(
            headers={"User-Agent": f"promptdrop/{__version__}"},
            timeout=http_timeout,
            follow_redirects=True,
            max_redirects=5,
            transport=download_transport,
        )

    def __repr__(self) -> str:
        return f"ToApisClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> ToApisClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        await self._api.aclose()
        await self._api_submit.aclose()
        await self._files.aclose()

    # --- public operations ----------------------------------------------------------------

    async def upload_image(self, data: bytes, *, filename: str, mime_type: str) -> Uploaded:
        """Upload a reference image; return its id and public URL. Retried on any transient
        fault (uploads are free); RequestRejected when the API refuses the file."""
        body = await self._call(
            "upload",
            "POST",
            "/v1/uploads/images",
            bucket="submit",
            idempotent=True,
            files={"file": (filename, data, mime_type)},
            data={"purpose": "generation"},
        )
        info = body.get("data")
        if body.get("success") is False or not isinstance(info, Mapping):
            message, code = _error_info(body)
            raise RequestRejected(self._rejected_text(message or "upload refused"), None, code)
        url = info.get("url")
        if not isinstance(url, str) or not url:
            raise ApiError("The image service accepted the upload but gave no address for it.")
        return Uploaded(id=str(info.get("id") or ""), url=url, raw=dict(body))

    async def submit(
        self,
        *,
        model: str,
        prompt: str,
        size: str,
        image_urls: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> TaskState:
        """Start one generation (n=1) and return the new task. Raises Ambiguous, never
        retrying, when the request may have reached the API but its answer was lost."""
        payload: dict[str, Any] = {"model": model, "prompt": prompt, "size": size, "n": 1}
        if image_urls:
            payload["image_urls"] = [str(u) for u in image_urls]
        if metadata:
            payload["metadata"] = dict(metadata)
        body = await self._call(
            "submit",
            "POST",
            "/v1/images/generations",
            bucket="submit",
            idempotent=False,
            json_body=payload,
        )
        if body.get("id") in (None, ""):
            raise Ambiguous(self._ambiguous_text("the answer carried no task id"), 200)
        return self._task_state(body)

    async def get_task(self, task_id: str) -> TaskState:
        """Poll a task. TaskNotFound if the API does not know it."""
        if not task_id:
            raise ValueError("task_id is empty")
        body = await self._call(
            "task",
            "GET",
            f"/v1/images/generations/{quote(task_id, safe='')}",
            bucket="query",
            idempotent=True,
            not_found=TaskNotFound,
        )
        if "status" not in body and "id" not in body:
            message, code = _error_info(body)
            if message and ("not_exist" in message or "not found" in message.lower()):
                raise TaskNotFound(f"The image service does not know task {task_id}.", 200, code)
        return self._task_state(body, task_id)

    async def download(self, url: str) -> Downloaded:
        """Fetch a result (never with the key) and return its bytes and real format.

        A body that is not a whole image is retried like a transient fault (a cut-off
        transfer heals); still broken after every attempt, or refused or expired (401, 403,
        404, 410), it raises ResultUnavailable.
        """
        parsed = httpx.URL(url)
        if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
            raise ResultUnavailable(f"The result address is not a web address: {url!r}.")
        return await self._retrying("download", None, True, lambda: self._download_once(parsed))

    async def balance(self) -> dict[str, Any]:
        """The account balance answer, as the API gives it."""
        return await self._call("balance", "GET", "/v1/balance", bucket="query", idempotent=True)

    # --- plumbing -------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self._key.reveal()
        return text.replace(key, _REDACTED) if key else text

    def _emit(self, name: str, **fields: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, fields)
        except Exception as exc:  # a broken observer must not break API calls
            log.warning("api.on_event_failed", event_name=name, error=type(exc).__name__)

    def _observe(self, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:  # a broken observer must not break API calls
            log.warning("api.observer_failed", error=type(exc).__name__)

    def _rate_waited(self, bucket: str, waited: float) -> None:
        log.debug("api.rate_wait", bucket=bucket, delay=round(waited, 3))
        self._emit("rate_wait", bucket=bucket, delay=waited)

    def _task_state(self, body: Mapping[str, Any], task_id: str | None = None) -> TaskState:
        state = parse_task(body, task_id)
        known = state.raw_status in RUNNING_STATUSES or state.raw_status in FINAL_STATUSES
        if not known and state.raw_status not in self._unknown_statuses:
            self._unknown_statuses.add(state.raw_status)
            log.warning("api.unknown_status", task_id=state.id, status=state.raw_status)
        if state.error:
            state.error = self._scrub(state.error)
        return state

    def _rejected_text(self, message: str, status: int | None = None) -> str:
        if status == 422:
            return (
                f"The image service refused this prompt under its content policy: "
                f"{self._scrub(message)}. Change the prompt and save the file again."
            )
        return (
            f"The image service refused the request: {self._scrub(message)}. "
            "Fix the prompt file and save it again."
        )

    def _ambiguous_text(self, reason: str) -> str:
        return (
            f"The image request was sent but its answer was lost ({reason}), so an image "
            "may or may not have been started and paid for. promptdrop does not send it "
            "again on its own; use `promptdrop retry` to try again."
        )

    def _describe(self, exc: BaseException) -> str:
        """Plain words for a transport failure, without headers and without the key."""
        if isinstance(exc, httpx.ConnectTimeout):
            text = "connecting to the service timed out"
        elif isinstance(exc, httpx.ConnectError):
            text = f"could not connect ({exc})" if str(exc) else "could not connect"
        elif isinstance(exc, httpx.TimeoutException | TimeoutError):
            text = f"no complete answer within {self._timeout:g} seconds"
        elif isinstance(exc, httpx.RemoteProtocolError):
            text = "the connection closed before a complete answer arrived"
        elif isinstance(exc, httpx.ReadError | httpx.WriteError):
            text = "the connection broke during the exchange"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self._scrub(text)

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        bucket: str,
        idempotent: bool,
        json_body: Any = None,
        files: Any = None,
        data: Any = None,
        not_found: type[ApiError] = ApiError,
    ) -> dict[str, Any]:
        async def once() -> dict[str, Any] | _Failed:
            return await self._api_once(endpoint, method, path, json_body, files, data, not_found)

        return await self._retrying(endpoint, bucket, idempotent, once)

    async def _retrying(
        self,
        endpoint: str,
        bucket: str | None,
        idempotent: bool,
        once: Callable[[], Awaitable[T | _Failed]],
    ) -> T:
        """Run attempts until one succeeds, a final error is raised, or the policy runs out.

        Errors are raised outside any `except` block so no httpx exception is chained."""
        policy = self.retry
        failure: _Failed | None = None
        for attempt in range(policy.attempts):
            if bucket is not None:
                await self._limits.acquire(bucket)
            outcome = await once()
            if not isinstance(outcome, _Failed):
                return outcome
            failure = outcome
            if not may_retry(failure.fault, idempotent=idempotent):
                log.info("api.ambiguous", endpoint=endpoint, reason=failure.reason)
                raise Ambiguous(self._ambiguous_text(failure.reason), failure.status, failure.code)
            if attempt + 1 >= policy.attempts:
                break
            if failure.retry_after is not None:
                delay = min(failure.retry_after, policy.retry_after_cap)
            else:
                delay = policy.backoff(attempt, self._rng)
            log.info(
                "api.retry",
                endpoint=endpoint,
                reason=failure.reason,
                delay=round(delay, 3),
                attempt=attempt + 1,
            )
            self._emit("retry", endpoint=endpoint, reason=failure.reason, delay=delay)
            self._observe(self.on_retry, endpoint)
            await asyncio.sleep(delay)
        assert failure is not None
        tries = f"{policy.attempts} {'try' if policy.attempts == 1 else 'tries'}"
        if failure.broken_result:
            raise ResultUnavailable(
                f"The finished image could not be downloaded whole ({failure.reason}, {tries}).",
                failure.status,
            )
        if failure.status == 429:
            raise RateLimited(
                f"The image service kept answering 'too many requests' ({tries}); "
                "promptdrop will wait and try again later.",
                failure.retry_after,
                429,
                failure.code,
            )
        raise TransientError(
            f"The image service could not be reached or kept failing ({failure.reason}; "
            f"{tries}). promptdrop will try again later.",
            failure.status,
            failure.code,
        )

    async def _api_once(
        self,
        endpoint: str,
        method: str,
        path: str,
        json_body: Any,
        files: Any,
        data: Any,
        not_found: type[ApiError],
    ) -> dict[str, Any] | _Failed:
        """One API request: its JSON object, a retryable _Failed, or a raised final error."""
        try:
            async with asyncio.timeout(self._timeout):
                client = self._api_submit if endpoint == "submit" else self._api
                response = await client.request(
                    method, path, json=json_body, files=files, data=data
                )
        except (httpx.RequestError, TimeoutError) as exc:
            self._observe(self.on_answer, endpoint, None)
            return _Failed(classify_fault(exc=exc), self._describe(exc))
        status = response.status_code
        self._observe(self.on_answer, endpoint, status)
        log.debug("api.response", endpoint=endpoint, status=status)
        self._emit("response", endpoint=endpoint, status=status)
        body: Any = None
        is_json = False
        try:
            body = json.loads(response.content)
            is_json = True
        except ValueError:
            pass
        message, code = _error_info(body)
        detail = f"HTTP {status}: {message}" if message else f"HTTP {status}"
        if 200 <= status < 300:
            if isinstance(body, dict):
                return body
            return _Failed(Fault.LOST, "the answer was not valid JSON", status)
        if status in (400, 422):
            raise RequestRejected(self._rejected_text(message or detail, status), status, code)
        if status in (401, 403):
            raise AccountBlocked(
                f"The image service rejected the API key ({self._scrub(detail)}). Check "
                "TOAPIS_API_KEY; new images wait until it is fixed.",
                "auth",
                status,
                code,
            )
        if status == 402:
            raise AccountBlocked(
                f"The ToAPIs account has run out of credit ({self._scrub(detail)}). Top it "
                "up; new images wait until then.",
                "quota",
                status,
                code,
            )
        if status == 404:
            raise not_found(
                f"The image service answered 'not found' for {endpoint} ({self._scrub(detail)}).",
                status,
                code,
            )
        if status == 429:
            return _Failed(
                Fault.REFUSED,
                "rate limited (HTTP 429)",
                status,
                code,
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500 or status == 408:
            kind = "a gateway page" if not is_json else self._scrub(detail)
            json_error = isinstance(body, dict) and ("error" in body or "message" in body)
            return _Failed(
                classify_fault(status=status, json_error=json_error),
                f"HTTP {status}, {kind}",
                status,
                code,
            )
        if 300 <= status < 400:
            raise ApiError(
                f"The API address answered with a redirect (HTTP {status}); set "
                "TOAPIS_BASE_URL to the address it points to.",
                status,
                code,
            )
        raise ApiError(
            f"Unexpected answer from the image service ({self._scrub(detail)}).", status, code
        )

    async def _download_once(self, url: httpx.URL) -> Downloaded | _Failed:
        """One download attempt, with no credentials and a size cap."""
        try:
            async with asyncio.timeout(self._timeout), self._files.stream("GET", url) as response:
                status = response.status_code
                chunks: list[bytes] = []
                received = 0
                if status == 200:
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
                        if received > MAX_DOWNLOAD_BYTES:
                            break
                        chunks.append(chunk)
                retry_after = response.headers.get("Retry-After")
        except (httpx.RequestError, TimeoutError) as exc:
            self._observe(self.on_answer, "download", None)
            return _Failed(classify_fault(exc=exc), self._describe(exc))
        self._observe(self.on_answer, "download", status)
        log.debug("api.response", endpoint="download", status=status)
        self._emit("response", endpoint="download", status=status)
        if status == 429:
            return _Failed(
                Fault.REFUSED,
                "rate limited (HTTP 429)",
                status,
                retry_after=parse_retry_after(retry_after),
            )
        if status >= 500 or status == 408:
            return _Failed(Fault.LOST, f"HTTP {status}", status)
        if status != 200:
            raise ResultUnavailable(
                f"The finished image can no longer be downloaded (HTTP {status}): it may have "
                "expired. Use `promptdrop retry` to generate it again.",
                status,
            )
        if received > MAX_DOWNLOAD_BYTES:
            raise ResultUnavailable(
                "The finished image is larger than "
                f"{MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB; refused.",
                200,
            )
        payload = b"".join(chunks)
        try:
            # In a worker thread: checking a large image takes milliseconds of CPU, which on
            # the event loop would hold up every other job's requests.
            info = await asyncio.to_thread(imaging.inspect, payload)
        except imaging.ImageError as exc:
            return _Failed(Fault.LOST, f"not a complete image: {exc}", 200, broken_result=True)
        return Downloaded(data=payload, format=info.format)
