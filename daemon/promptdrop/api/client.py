"""`ToApisClient`: the thin I/O shell around the ToAPIs protocol (httpx, async).

It sends requests, waits its turn under the rate limits and between retries, and raises what
`protocol` and `retry` decide. The API key travels only to the base URL's origin: API
requests use their own httpx client whose auth refuses any other origin and which never
follows redirects; downloads use a second client that has no credentials at all. Every
message built from a server answer or a transport error is scrubbed of the key, and httpx
exceptions are never chained (they hold requests, and so headers).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

from promptdrop import __version__, imaging
from promptdrop.api.errors import Ambiguous, ApiError, ResultUnavailable, TaskNotFound
from promptdrop.api.protocol import (
    Balance,
    Downloaded,
    TaskState,
    Uploaded,
    describe_transport_error,
    interpret_answer,
    interpret_download,
    is_known_status,
    parse_balance,
    parse_task,
    parse_upload,
    unknown_task,
)
from promptdrop.api.ratelimit import Limits, RateLimits
from promptdrop.api.retry import Failed, Fault, RetryPolicy, ambiguous_text, classify_fault
from promptdrop.api.secret import DEFAULT_PORTS, BearerAuth, Secret, origin_of

log = structlog.get_logger("promptdrop.api")

DEFAULT_BASE_URL = "https://toapis.com"
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

T = TypeVar("T")
EventHandler = Callable[[str, dict[str, Any]], None]
# (endpoint, HTTP status or None when no answer came: refused connection, reset, timeout)
AnswerHook = Callable[[str, int | None], None]
RetryHook = Callable[[str], None]


def _api_key(api_key: str | Secret) -> Secret:
    key = api_key if isinstance(api_key, Secret) else Secret(api_key.strip())
    # A header value with control characters makes h11 raise with the value in its message.
    if not all(33 <= ord(ch) < 127 for ch in key.reveal()):
        raise ValueError(
            "the API key contains spaces, line breaks or other characters "
            "that cannot be sent; check how it was copied"
        )
    return key


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
        self._key = _api_key(api_key)
        url = httpx.URL(base_url.rstrip("/"))
        if url.scheme not in DEFAULT_PORTS or not url.host:
            raise ValueError(f"the API address must start with http:// or https:// ({base_url!r})")
        self.base_url = str(url)
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
        auth = BearerAuth(self._key, origin_of(url))
        api: dict[str, Any] = {"base_url": url, "auth": auth, "headers": headers}
        api.update(timeout=http_timeout, follow_redirects=False, transport=transport)
        self._api = httpx.AsyncClient(**api)
        # Submits go on a fresh connection each: a pooled connection the server closed while
        # idle fails like a lost answer, and would make a submit look ambiguous for nothing.
        self._api_submit = httpx.AsyncClient(
            **api, limits=httpx.Limits(max_keepalive_connections=0)
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
        fault (uploads are free); RequestRejected when the API refuses the file. Uploads are
        in neither async rate bucket."""
        body = await self._call(
            "upload",
            "POST",
            "/v1/uploads/images",
            bucket=None,
            idempotent=True,
            files={"file": (filename, data, mime_type)},
            data={"purpose": "generation"},
        )
        uploaded = parse_upload(body, self._key.scrub)
        if isinstance(uploaded, ApiError):
            raise uploaded
        return uploaded

    async def submit(
        self,
        *,
        model: str,
        prompt: str,
        size: str,
        image_urls: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        client_business_id: str | None = None,
    ) -> TaskState:
        """Start one generation (n=1) and return the new task. Raises Ambiguous, never
        retrying, when the request may have reached the API but its answer was lost.

        `client_business_id` goes at the top level of the body, where the docs recommend it:
        the task can then be found by it (`find_by_business_id`) when the answer is lost."""
        payload: dict[str, Any] = {"model": model, "prompt": prompt, "size": size, "n": 1}
        if client_business_id is not None:
            payload["client_business_id"] = client_business_id
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
            raise Ambiguous(ambiguous_text("the answer carried no task id"), 200)
        return self._task_state(body)

    async def get_task(self, task_id: str) -> TaskState:
        """Poll a task. TaskNotFound if the API does not know it: a 404 with any body, or a
        400 or 200 whose body says the task does not exist."""
        if not task_id:
            raise ValueError("task_id is empty")
        body = await self._call(
            "task",
            "GET",
            f"/v1/images/generations/{quote(task_id, safe='')}",
            bucket="query",
            idempotent=True,
        )
        gone = unknown_task(body, task_id)
        if gone is not None:
            raise gone
        return self._task_state(body, task_id)

    async def find_by_business_id(self, business_id: str) -> TaskState | None:
        """The task that was sent with `business_id`, or None when the API finds none.

        The same endpoint as a poll, with the business id in place of the task id (the docs'
        task page). A task whose echoed business id is another one is not ours: None too.
        Other errors are raised as for a poll.
        """
        try:
            task = await self.get_task(business_id)
        except TaskNotFound:
            return None
        echoed = task.raw.get("client_business_id") if isinstance(task.raw, dict) else None
        if echoed is not None and echoed != business_id:
            return None
        return task

    async def download(self, url: str) -> Downloaded:
        """Fetch a result (never with the key) and return its bytes and real format.

        A body that is not a whole image is retried like a transient fault (a cut-off
        transfer heals); still broken after every attempt, or refused or expired (401, 403,
        404, 410), it raises ResultUnavailable.
        """
        parsed = httpx.URL(url)
        if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
            raise ResultUnavailable(f"The result address is not a web address: {url!r}.")
        return await self._retrying("download", None, True, lambda: self._download_once(parsed))

    async def balance(self) -> Balance:
        """The key's balance (`GET /v1/balance`, in neither async rate bucket).

        BalanceUnavailable when the API answers `success: false` (HTTP 200, with its reason);
        AccountBlocked for a refused key, as for any request."""
        body = await self._call("balance", "GET", "/v1/balance", bucket=None, idempotent=True)
        balance = parse_balance(body, self._key.scrub)
        if isinstance(balance, ApiError):
            raise balance
        return balance

    # --- plumbing -------------------------------------------------------------------------

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

    def _answered(self, endpoint: str, status: int | None) -> None:
        self._observe(self.on_answer, endpoint, status)
        if status is not None:
            log.debug("api.response", endpoint=endpoint, status=status)
            self._emit("response", endpoint=endpoint, status=status)

    def _rate_waited(self, bucket: str, waited: float) -> None:
        log.debug("api.rate_wait", bucket=bucket, delay=round(waited, 3))
        self._emit("rate_wait", bucket=bucket, delay=waited)

    def _task_state(self, body: Mapping[str, Any], task_id: str | None = None) -> TaskState:
        state = parse_task(body, task_id)
        if not is_known_status(state.raw_status) and state.raw_status not in self._unknown_statuses:
            self._unknown_statuses.add(state.raw_status)
            log.warning("api.unknown_status", task_id=state.id, status=state.raw_status)
        if state.error:
            state.error = self._key.scrub(state.error)
        return state

    def _no_answer(self, endpoint: str, exc: BaseException) -> Failed:
        self._answered(endpoint, None)
        text = describe_transport_error(exc, self._timeout)
        return Failed(classify_fault(exc=exc), self._key.scrub(text))

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        bucket: str | None,
        idempotent: bool,
        json_body: Any = None,
        files: Any = None,
        data: Any = None,
    ) -> dict[str, Any]:
        async def once() -> dict[str, Any] | Failed:
            return await self._api_once(endpoint, method, path, json_body, files, data)

        return await self._retrying(endpoint, bucket, idempotent, once)

    async def _retrying(
        self,
        endpoint: str,
        bucket: str | None,
        idempotent: bool,
        once: Callable[[], Awaitable[T | Failed]],
    ) -> T:
        """Run attempts until one succeeds or the policy says which error to raise.

        Errors are raised outside any `except` block so no httpx exception is chained."""
        attempt = 0
        while True:
            if bucket is not None:
                await self._limits.acquire(bucket)
            outcome = await once()
            if not isinstance(outcome, Failed):
                return outcome
            step = self.retry.after(
                outcome, attempt, idempotent=idempotent, draw=self._rng.random()
            )
            if isinstance(step, ApiError):
                if isinstance(step, Ambiguous):
                    log.info("api.ambiguous", endpoint=endpoint, reason=outcome.reason)
                raise step
            if outcome.slows is not None:
                # The other requests of that kind wait as long as this one does.
                self._limits.hold(outcome.slows, step)
            attempt += 1
            log.info(
                "api.retry",
                endpoint=endpoint,
                reason=outcome.reason,
                delay=round(step, 3),
                attempt=attempt,
            )
            self._emit("retry", endpoint=endpoint, reason=outcome.reason, delay=step)
            self._observe(self.on_retry, endpoint)
            await asyncio.sleep(step)

    async def _api_once(
        self, endpoint: str, method: str, path: str, json_body: Any, files: Any, data: Any
    ) -> dict[str, Any] | Failed:
        """One API request: its JSON object, a retryable Failed, or a raised final error."""
        client = self._api_submit if endpoint == "submit" else self._api
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.request(
                    method, path, json=json_body, files=files, data=data
                )
        except (httpx.RequestError, TimeoutError) as exc:
            return self._no_answer(endpoint, exc)
        self._answered(endpoint, response.status_code)
        answer = interpret_answer(
            endpoint,
            response.status_code,
            response.content,
            retry_after=response.headers.get("Retry-After"),
            category=response.headers.get("X-RateLimit-Category"),
            scrub=self._key.scrub,
        )
        if isinstance(answer, ApiError):
            raise answer
        return answer

    async def _download_once(self, url: httpx.URL) -> Downloaded | Failed:
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
            return self._no_answer("download", exc)
        self._answered("download", status)
        verdict = interpret_download(
            status,
            oversize=received > MAX_DOWNLOAD_BYTES,
            max_bytes=MAX_DOWNLOAD_BYTES,
            retry_after=retry_after,
            now=None,
        )
        if isinstance(verdict, ApiError):
            raise verdict
        if verdict is not None:
            return verdict
        payload = b"".join(chunks)
        try:
            # In a worker thread: checking a large image takes milliseconds of CPU, which on
            # the event loop would hold up every other job's requests.
            info = await asyncio.to_thread(imaging.inspect, payload)
        except imaging.ImageError as exc:
            return Failed(Fault.LOST, f"not a complete image: {exc}", 200, broken_result=True)
        return Downloaded(data=payload, format=info.format)
