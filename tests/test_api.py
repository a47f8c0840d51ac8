"""The ToAPIs client against the emulator over real TCP: results, faults, retries, secrecy."""

from __future__ import annotations

import asyncio
import email.utils
import io
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image
from structlog.testing import capture_logs

from promptdrop.api import (
    AccountBlocked,
    Ambiguous,
    ApiError,
    Balance,
    BalanceUnavailable,
    Fault,
    RateLimited,
    RateLimits,
    RequestRejected,
    ResultUnavailable,
    RetryPolicy,
    Secret,
    TaskNotFound,
    TaskState,
    ToApisClient,
    TransientError,
    classify_fault,
    may_retry,
    parse_retry_after,
    parse_task,
)
from promptdrop.emulator import Emulator, EmulatorConfig, Faults
from promptdrop.jobs.outcomes import Kind, interpret_poll_error

CANARY = "sk-canary-7f3a9c1e5b"
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.04, retry_after_cap=0.05)
MODEL = "gemini-2.5-flash-image-preview"

Factory = Callable[..., Emulator]


@pytest.fixture
def make_emulator() -> Iterator[Factory]:
    """Start emulators with the canary key and a short task latency; stop them afterwards."""
    started: list[Emulator] = []

    def make(**overrides: Any) -> Emulator:
        settings: dict[str, Any] = {"api_key": CANARY, "latency": 0.15, "seed": 7}
        settings.update(overrides)
        emu = Emulator(EmulatorConfig(**settings)).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


class Events:
    """Collects on_event calls; optionally clears the emulator's faults at the first retry."""

    def __init__(self, heal: Emulator | None = None) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._heal = heal

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        self.seen.append((name, fields))
        if name == "retry" and self._heal is not None:
            self._heal.set_faults(Faults())

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.seen if event == name]


def client_for(emu: Emulator, **kwargs: Any) -> ToApisClient:
    kwargs.setdefault("retry", FAST)
    return ToApisClient(kwargs.pop("key", CANARY), emu.base_url, **kwargs)


async def finish(client: ToApisClient, task: TaskState) -> TaskState:
    while task.status == "running":
        await asyncio.sleep(0.05)
        task = await client.get_task(task.id)
    return task


async def generate(client: ToApisClient, prompt: str = "a cat on the moon") -> TaskState:
    task = await client.submit(model=MODEL, prompt=prompt, size="16:9")
    return await finish(client, task)


def image_bytes(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


# --- results ------------------------------------------------------------------------------


@pytest.mark.parametrize(("image_format", "expected"), [("png", "png"), ("jpeg", "jpeg")])
def test_submit_poll_download_gives_the_image_in_its_real_format(
    make_emulator: Factory, image_format: str, expected: str
) -> None:
    emu = make_emulator(image_format=image_format)

    async def run() -> tuple[TaskState, bytes, str]:
        async with client_for(emu) as client:
            done = await generate(client)
            got = await client.download(done.url or "")
            return done, got.data, got.format

    done, data, fmt = asyncio.run(run())
    assert done.status == "completed" and done.error is None
    assert done.url is not None and done.url.endswith(".jpg")  # the URL says .jpg either way
    assert done.url.startswith(emu.files_url)
    assert fmt == expected
    assert (Image.open(io.BytesIO(data)).format or "").lower() == expected
    assert done.expires_at is not None and done.expires_at > time.time() + 3600
    [submission] = emu.stats()["submissions"]
    assert submission["n"] == 1 and type(submission["n"]) is int


def test_submit_sends_image_urls_as_a_list_of_strings_and_metadata(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> str:
        async with client_for(emu) as client:
            uploaded = await client.upload_image(
                image_bytes("JPEG"), filename="sketch.jpg", mime_type="image/jpeg"
            )
            await client.submit(
                model=MODEL,
                prompt="blue",
                size="1:1",
                image_urls=[uploaded.url],
                metadata={"orientation": "portrait"},
            )
            return uploaded.url

    url = asyncio.run(run())
    [submission] = emu.stats()["submissions"]
    assert submission["image_urls"] == [url]
    assert submission["metadata"] == {"orientation": "portrait"}
    assert emu.stats()["uploads"][0]["format"] == "jpeg"


@pytest.mark.parametrize("status", ["queued", "submitted", "pending", ""])
def test_every_documented_waiting_status_counts_as_running(
    make_emulator: Factory, status: str
) -> None:
    emu = make_emulator(latency=5.0, faults=Faults(running_status=status))

    async def run() -> tuple[TaskState, TaskState]:
        async with client_for(emu) as client:
            submitted = await client.submit(model=MODEL, prompt="x", size="1:1")
            return submitted, await client.get_task(submitted.id)

    submitted, polled = asyncio.run(run())
    for state in (submitted, polled):
        assert (state.status, state.raw_status) == ("running", status)


def test_in_progress_counts_as_running(make_emulator: Factory) -> None:
    emu = make_emulator(latency=1.0)

    async def run() -> TaskState:
        async with client_for(emu) as client:
            submitted = await client.submit(model=MODEL, prompt="x", size="1:1")
            await asyncio.sleep(0.3)
            return await client.get_task(submitted.id)

    state = asyncio.run(run())
    assert (state.status, state.raw_status) == ("running", "in_progress")
    assert state.progress is not None and 0 < state.progress < 100


def test_an_unknown_status_is_running_and_logged_once(make_emulator: Factory) -> None:
    emu = make_emulator(latency=5.0, faults=Faults(running_status="warming_up"))

    async def run() -> list[TaskState]:
        async with client_for(emu) as client:
            submitted = await client.submit(model=MODEL, prompt="x", size="1:1")
            return [submitted, await client.get_task(submitted.id)]

    with capture_logs() as logs:
        states = asyncio.run(run())
    assert all(s.status == "running" and s.raw_status == "warming_up" for s in states)
    warnings = [e for e in logs if e["event"] == "api.unknown_status"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning" and warnings[0]["status"] == "warming_up"


def test_a_url_only_at_top_level_is_found(make_emulator: Factory) -> None:
    emu = make_emulator(faults=Faults(url_top_level_only=1.0))

    async def run() -> tuple[TaskState, str]:
        async with client_for(emu) as client:
            done = await generate(client)
            return done, (await client.download(done.url or "")).format

    done, fmt = asyncio.run(run())
    assert "result" not in done.raw and done.raw["url"] == done.url
    assert done.status == "completed" and fmt == "png"


def test_a_failed_task_carries_the_api_reason(make_emulator: Factory) -> None:
    emu = make_emulator(faults=Faults(task_failed=1.0))

    async def run() -> TaskState:
        async with client_for(emu) as client:
            return await generate(client)

    done = asyncio.run(run())
    assert done.status == "failed" and done.url is None
    assert done.error == "call upstream API failed: upstream returned status 422"


def test_a_completed_task_without_url_is_a_failure_with_a_clear_error() -> None:
    state = parse_task({"id": "img_1", "status": "completed", "result": {"data": []}})
    assert state.status == "failed" and state.url is None
    assert state.error is not None and "no address" in state.error


def test_result_url_is_read_in_the_documented_order() -> None:
    both = {
        "status": "completed",
        "url": "https://f/top.png",
        "result": {"data": [{"url": "https://f/result.png"}]},
        "data": [{"url": "https://f/d"}],
    }
    assert parse_task(both, "t").url == "https://f/result.png"
    assert parse_task({**both, "result": {}}, "t").url == "https://f/top.png"
    assert parse_task({"status": "COMPLETED", "data": [{"url": "https://f/d"}]}, "t").url == (
        "https://f/d"
    )


def test_failure_reason_comes_from_error_then_fail_reason_then_message() -> None:
    assert (
        parse_task(
            {
                "status": "failed",
                "error": {"message": "A", "code": 7},
                "fail_reason": "B",
                "message": "C",
            }
        ).error
        == "A"
    )
    assert parse_task({"status": "failed", "fail_reason": "B", "message": "C"}).error == "B"
    assert parse_task({"status": "failed", "message": "C"}).error == "C"
    assert parse_task({"status": "failed"}).error


def test_expires_at_is_read_as_epoch_seconds() -> None:
    assert parse_task({"status": "completed", "url": "u", "expires_at": 1768467463}).expires_at == (
        1768467463.0
    )
    assert parse_task({"status": "queued", "expires_at": "1768467463"}).expires_at == 1768467463.0
    assert parse_task({"status": "queued"}).expires_at is None


# --- fault classification -----------------------------------------------------------------


def test_fault_classification_says_what_the_server_may_have_done() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/images/generations")
    not_sent = [
        httpx.ConnectError("refused", request=request),
        httpx.ConnectTimeout("slow", request=request),
        httpx.PoolTimeout("busy", request=request),
    ]
    lost = [
        httpx.ReadTimeout("t", request=request),
        httpx.ReadError("reset", request=request),
        httpx.RemoteProtocolError("closed", request=request),
        TimeoutError(),
    ]
    assert {classify_fault(exc=e) for e in not_sent} == {Fault.NOT_SENT}
    assert {classify_fault(exc=e) for e in lost} == {Fault.LOST}
    assert classify_fault(status=429) is Fault.REFUSED
    assert classify_fault(status=500, json_error=True) is Fault.REFUSED
    assert classify_fault(status=503, json_error=True) is Fault.REFUSED
    for status in (500, 502, 503, 504):
        assert classify_fault(status=status, json_error=False) is Fault.LOST
    assert classify_fault(status=502, json_error=True) is Fault.LOST
    assert not may_retry(Fault.LOST, idempotent=False)
    assert may_retry(Fault.NOT_SENT, idempotent=False)
    assert may_retry(Fault.REFUSED, idempotent=False)
    assert all(may_retry(f, idempotent=True) for f in Fault)


def test_backoff_is_full_jitter_within_the_exponential_cap() -> None:
    policy = RetryPolicy(attempts=8, base=0.5, cap=3.0)
    rng = random.Random(1)
    for k in range(8):
        bound = min(3.0, 0.5 * 2**k)
        draws = [policy.backoff(k, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in draws)
        assert min(draws) < bound * 0.1 and max(draws) > bound * 0.9  # spread over the range


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28.0 <= (parse_retry_after(future) or 0.0) <= 30.0
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- faults against the emulator ----------------------------------------------------------


def only(fault: str, endpoint: str) -> Faults:
    """Every request of one kind meets this fault (a slow answer takes 2 s)."""
    return Faults.from_dict({fault: 1.0, "slow_seconds": 2.0, "endpoints": [endpoint]})


LOST_ANSWERS = ["html_502", "html_504", "reset", "malformed_json", "slow"]
REFUSALS = ["error_500", "error_503", "rate_429"]


@pytest.mark.parametrize("fault", REFUSALS + LOST_ANSWERS)
def test_polls_are_retried_through_each_fault_until_they_succeed(
    make_emulator: Factory, fault: str
) -> None:
    emu = make_emulator(latency=5.0)

    async def run(events: Events) -> TaskState:
        async with client_for(emu, timeout=0.4, on_event=events) as client:
            task = await client.submit(model=MODEL, prompt="x", size="1:1")
            emu.set_faults(only(fault, "poll"))
            return await client.get_task(task.id)

    events = Events(heal=emu)
    state = asyncio.run(run(events))
    assert state.status == "running" and state.id
    assert len(events.named("retry")) == 1
    assert sum(emu.stats()["faults_injected"].values()) == 1


def test_polls_give_up_with_transient_error_after_the_configured_attempts(
    make_emulator: Factory,
) -> None:
    emu = make_emulator(faults=Faults(error_500=1.0, endpoints=("poll",)))
    policy = RetryPolicy(attempts=3, base=0.02, cap=0.03)
    events = Events()

    async def run() -> None:
        async with client_for(emu, retry=policy, on_event=events) as client:
            await client.get_task("task_img_x")

    with pytest.raises(TransientError) as caught:
        asyncio.run(run())
    assert emu.stats()["polls"] == 3
    delays = [e["delay"] for e in events.named("retry")]
    assert len(delays) == 2 and delays[0] <= 0.02 and delays[1] <= 0.03
    assert caught.value.status == 500 and "3 tries" in str(caught.value)


@pytest.mark.parametrize("fault", REFUSALS)
def test_a_submit_refused_with_a_json_error_is_retried_and_creates_one_task(
    make_emulator: Factory, fault: str
) -> None:
    emu = make_emulator(faults=only(fault, "submit"))
    events = Events(heal=emu)

    async def run() -> TaskState:
        async with client_for(emu, on_event=events) as client:
            return await client.submit(model=MODEL, prompt="x", size="1:1")

    task = asyncio.run(run())
    stats = emu.stats()
    assert stats["submit_requests"] == 2
    assert [s["task_id"] for s in stats["submissions"]] == [task.id]


@pytest.mark.parametrize("fault", LOST_ANSWERS)
def test_a_submit_whose_answer_is_lost_is_ambiguous_and_never_resent(
    make_emulator: Factory, fault: str
) -> None:
    emu = make_emulator(faults=only(fault, "submit"))
    events = Events()

    async def run() -> None:
        async with client_for(emu, timeout=0.4, on_event=events) as client:
            await client.submit(model=MODEL, prompt="x", size="1:1")

    with pytest.raises(Ambiguous) as caught:
        asyncio.run(run())
    stats = emu.stats()
    assert stats["submit_requests"] == 1 and len(stats["submissions"]) == 1
    assert events.named("retry") == []
    assert "looks the request up by its business id" in str(caught.value)


def test_a_submit_that_cannot_connect_is_retried_then_transient_not_ambiguous() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    events = Events()

    async def run() -> None:
        async with ToApisClient(
            CANARY, f"http://127.0.0.1:{port}", retry=FAST, on_event=events
        ) as client:
            await client.submit(model=MODEL, prompt="x", size="1:1")

    with pytest.raises(TransientError):
        asyncio.run(run())
    assert len(events.named("retry")) == FAST.attempts - 1


def test_an_upload_is_retried_even_after_a_lost_answer(make_emulator: Factory) -> None:
    emu = make_emulator(faults=Faults(reset=1.0, endpoints=("upload",)))
    events = Events(heal=emu)

    async def run() -> str:
        async with client_for(emu, on_event=events) as client:
            uploaded = await client.upload_image(
                image_bytes(), filename="a.png", mime_type="image/png"
            )
            return uploaded.url

    assert asyncio.run(run()).startswith(emu.files_url)
    assert len(events.named("retry")) == 1


@pytest.mark.parametrize("fmt", ["seconds", "date"])
def test_429_waits_per_retry_after_capped(make_emulator: Factory, fmt: str) -> None:
    emu = make_emulator(faults=Faults(rate_429=1.0, retry_after_format=fmt, endpoints=("poll",)))
    events = Events(heal=emu)
    policy = RetryPolicy(attempts=3, base=50.0, cap=50.0, retry_after_cap=0.25)

    async def run() -> None:
        async with client_for(emu, retry=policy, on_event=events) as client:
            await client.balance()

    asyncio.run(run())
    [retry] = events.named("retry")
    # Backoff would draw from 0..50 s: a delay within the cap shows Retry-After was used.
    assert retry["delay"] <= 0.25
    if fmt == "seconds":
        assert retry["delay"] == 0.25  # the server said 1 s; the cap wins


def test_still_rate_limited_after_the_attempts_raises_rate_limited(make_emulator: Factory) -> None:
    emu = make_emulator(faults=Faults(rate_429=1.0, endpoints=("submit",)))

    async def run() -> None:
        async with client_for(emu) as client:
            await client.submit(model=MODEL, prompt="x", size="1:1")

    with pytest.raises(RateLimited) as caught:
        asyncio.run(run())
    assert caught.value.retry_after == 1.0
    assert emu.stats()["submit_requests"] == FAST.attempts
    assert emu.stats()["submissions"] == []


# --- the balance --------------------------------------------------------------------------


def test_the_balance_is_read_into_credits(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> tuple[Balance, Balance]:
        async with client_for(emu) as client:
            before = await client.balance()
            await client.submit(model=MODEL, prompt="paid", size="1:1")
            return before, await client.balance()

    before, after = asyncio.run(run())
    assert (before.remain_credits, before.used_credits, before.credits_per_usd) == (20000, 0, 200)
    assert (after.remain_credits, after.used_credits) == (19992, 8)
    assert after.remain_balance == 99.96 and not after.unlimited and not after.empty


@pytest.mark.parametrize(
    ("faults", "unlimited", "empty", "remain_balance"),
    [
        (Faults(unlimited_quota=True), True, False, -1.0),
        (Faults(quota_exhausted=True), False, True, 0.0),
    ],
)
def test_an_unlimited_or_an_empty_quota_is_told_apart(
    make_emulator: Factory, faults: Faults, unlimited: bool, empty: bool, remain_balance: float
) -> None:
    emu = make_emulator(faults=faults)

    async def run() -> Balance:
        async with client_for(emu) as client:
            return await client.balance()

    balance = asyncio.run(run())
    assert (balance.unlimited, balance.empty, balance.remain_balance) == (
        unlimited,
        empty,
        remain_balance,
    )


def test_a_balance_answered_success_false_raises_with_the_apis_reason(
    make_emulator: Factory,
) -> None:
    emu = make_emulator(faults=Faults(balance_fails=True))

    async def run() -> None:
        async with client_for(emu) as client:
            await client.balance()

    with pytest.raises(BalanceUnavailable, match="record not found") as caught:
        asyncio.run(run())
    assert caught.value.status == 200


# --- the submit limiter down ---------------------------------------------------------------


def test_while_the_submit_limiter_is_down_submits_create_nothing_and_running_tasks_finish(
    make_emulator: Factory,
) -> None:
    emu = make_emulator(latency=0.4)
    events = Events()

    async def run() -> tuple[list[TaskState], ApiError]:
        async with client_for(emu, on_event=events) as client:
            running = [
                await client.submit(model=MODEL, prompt=f"running {i}", size="1:1")
                for i in range(2)
            ]
            emu.set_faults(Faults(submit_limiter_down=True))
            refused = asyncio.create_task(client.submit(model=MODEL, prompt="later", size="1:1"))
            done = await asyncio.gather(*(finish(client, t) for t in running))
            for task in done:
                await client.download(task.url or "")
            with pytest.raises(TransientError) as caught:
                await refused
            return list(done), caught.value

    done, error = asyncio.run(run())
    assert [t.status for t in done] == ["completed", "completed"]
    assert "submit limiter is temporarily unavailable" in error.message
    assert "nothing was created" in error.message
    stats = emu.stats()
    assert len(stats["submissions"]) == 2  # the refused one created nothing
    assert stats["submit_requests"] == 2 + FAST.attempts
    assert stats["faults_injected"] == {"submit_limiter_down": FAST.attempts}
    assert stats["downloads"] == 2
    # Each refusal held the submit bucket only; polls never waited.
    assert all(w["bucket"] == "submit" for w in events.named("rate_wait"))


# --- final errors -------------------------------------------------------------------------


def test_an_invalid_request_is_rejected_with_the_api_message(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> None:
        async with client_for(emu) as client:
            await client.submit(model=MODEL, prompt="x", size="5:4")

    with pytest.raises(RequestRejected) as caught:
        asyncio.run(run())
    assert "The 'size' field must be one of" in str(caught.value)
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    assert emu.stats()["submit_requests"] == 1


def test_an_upload_that_is_not_an_image_is_rejected(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> None:
        async with client_for(emu) as client:
            await client.upload_image(b"hello", filename="a.png", mime_type="image/png")

    with pytest.raises(RequestRejected, match="Unsupported image type"):
        asyncio.run(run())


def test_a_wrong_key_blocks_the_account_for_auth(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> None:
        async with client_for(emu, key="sk-canary-wrong-key") as client:
            await client.submit(model=MODEL, prompt="x", size="1:1")

    with pytest.raises(AccountBlocked) as caught:
        asyncio.run(run())
    assert caught.value.reason == "auth" and caught.value.status == 401
    assert caught.value.code == 401
    assert "sk-canary" not in str(caught.value) + repr(caught.value)


def test_an_exhausted_quota_blocks_the_account_and_creates_nothing(
    make_emulator: Factory,
) -> None:
    emu = make_emulator(faults=Faults(quota_exhausted=True))

    async def run() -> None:
        async with client_for(emu) as client:
            await client.submit(model=MODEL, prompt="x", size="1:1")

    with pytest.raises(AccountBlocked) as caught:
        asyncio.run(run())
    assert caught.value.reason == "quota" and caught.value.status == 402
    assert emu.stats()["submissions"] == [] and emu.stats()["submit_requests"] == 1


@pytest.mark.parametrize(("mode", "status"), [("not_found_error", 404), ("task_not_exist", 400)])
def test_an_unknown_task_in_the_documented_404_or_the_gateways_400_is_a_task_gone(
    make_emulator: Factory, mode: str, status: int
) -> None:
    """Over the socket, the task page's 404 (integer code, not_found_error) or the gateway's
    400 task_not_exist, every time: each poll is TaskNotFound, the engine's "task gone"."""
    emu = make_emulator(faults=Faults(unknown_task_answer=mode))

    async def run() -> list[ApiError]:
        errors: list[ApiError] = []
        async with client_for(emu) as client:
            for _ in range(2):
                try:
                    await client.get_task("task_img_does_not_exist")
                except ApiError as exc:
                    errors.append(exc)
        return errors

    errors = asyncio.run(run())
    assert [type(e) for e in errors] == [TaskNotFound, TaskNotFound]
    assert [e.status for e in errors] == [status, status]
    assert interpret_poll_error(errors[0], gone_before=0).kind is Kind.TASK_GONE
    assert emu.stats()["polls"] == 2  # not found is final: never retried


def test_an_unknown_task_is_not_found_in_every_documented_shape(make_emulator: Factory) -> None:
    """404 task_not_found, 404 not_found_error (integer code) and 400 task_not_exist."""
    emu = make_emulator()

    async def run() -> list[ApiError]:
        errors: list[ApiError] = []
        async with client_for(emu) as client:
            for _ in range(3):
                try:
                    await client.get_task("task_img_does_not_exist")
                except TaskNotFound as exc:
                    errors.append(exc)
        return errors

    errors = asyncio.run(run())
    assert [(e.status, e.code) for e in errors] == [
        (404, "task_not_found"),
        (404, 404),
        (400, None),
    ]
    assert emu.stats()["polls"] == 3  # not found is final: never retried


def test_a_task_the_api_forgets_is_not_found_on_every_poll(make_emulator: Factory) -> None:
    emu = make_emulator(faults=Faults(task_gone=1.0))

    async def run() -> tuple[TaskState, list[int | None]]:
        statuses: list[int | None] = []
        async with client_for(emu) as client:
            task = await client.submit(model=MODEL, prompt="gone", size="1:1")
            for _ in range(4):
                with pytest.raises(TaskNotFound) as caught:
                    await client.get_task(task.id)
                statuses.append(caught.value.status)
        return task, statuses

    task, statuses = asyncio.run(run())
    assert task.status == "running" and task.id
    assert statuses == [404, 404, 400, 404]
    assert emu.stats()["faults_injected"] == {"task_gone": 1}


def test_a_400_on_a_submit_is_a_rejection_not_a_missing_task(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> None:
        async with client_for(emu) as client:
            await client.submit(model=MODEL, prompt="x", size="7:3")

    with pytest.raises(RequestRejected) as caught:
        asyncio.run(run())
    assert not isinstance(caught.value, TaskNotFound) and caught.value.status == 400


def test_an_expired_result_is_unavailable(make_emulator: Factory) -> None:
    emu = make_emulator(faults=Faults(expired_results=1.0))

    async def run() -> None:
        async with client_for(emu) as client:
            done = await generate(client)
            await client.download(done.url or "")

    with pytest.raises(ResultUnavailable) as caught:
        asyncio.run(run())
    assert caught.value.status == 404
    assert emu.stats()["downloads"] == 1  # refused, so not retried


def test_a_truncated_download_is_retried_and_then_succeeds(make_emulator: Factory) -> None:
    emu = make_emulator()
    events = Events(heal=emu)

    async def run() -> str:
        async with client_for(emu, on_event=events) as client:
            done = await generate(client)
            emu.set_faults(Faults(malformed_json=1.0, endpoints=("download",)))
            return (await client.download(done.url or "")).format

    assert asyncio.run(run()) == "png"
    assert emu.stats()["downloads"] == 2
    assert "not a complete image" in events.named("retry")[0]["reason"]


def test_a_download_that_stays_truncated_is_unavailable(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> None:
        async with client_for(emu) as client:
            done = await generate(client)
            emu.set_faults(Faults(malformed_json=1.0, endpoints=("download",)))
            await client.download(done.url or "")

    with pytest.raises(ResultUnavailable, match="could not be downloaded whole"):
        asyncio.run(run())
    assert emu.stats()["downloads"] == FAST.attempts


# --- rate limits --------------------------------------------------------------------------


def test_client_side_limits_space_submits_so_the_server_never_refuses(
    make_emulator: Factory,
) -> None:
    emu = make_emulator()
    events = Events()

    async def run() -> float:
        async with client_for(emu, on_event=events) as client:
            started = time.monotonic()
            await asyncio.gather(
                *(client.submit(model=MODEL, prompt=f"p{i}", size="1:1") for i in range(12))
            )
            return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert elapsed >= 1.4
    stats = emu.stats()
    assert stats["rate_limited"] == 0 and "429" not in stats["responses_by_status"]
    assert len(stats["submissions"]) == 12
    assert events.named("rate_wait") and all(
        e["bucket"] == "submit" for e in events.named("rate_wait")
    )


def test_without_client_side_limits_the_server_refuses_a_burst(make_emulator: Factory) -> None:
    emu = make_emulator()

    async def run() -> list[Any]:
        results: list[Any] = []
        async with client_for(
            emu, rate_limits=RateLimits.unlimited(), retry=RetryPolicy(attempts=1)
        ) as client:
            for i in range(7):
                try:
                    results.append(await client.submit(model=MODEL, prompt=f"p{i}", size="1:1"))
                except RateLimited as exc:
                    results.append(exc)
        return results

    results = asyncio.run(run())
    assert sum(isinstance(r, RateLimited) for r in results) == 2
    assert len(emu.stats()["submissions"]) == 5


def test_the_query_bucket_limits_polls() -> None:
    limits = RateLimits(
        submit_per_s=5, submit_burst_10s=50, query_per_s=4, query_burst_10s=40, slack_s=0.0
    )
    emulator = Emulator(EmulatorConfig(api_key=CANARY, rate_limits=None)).start()
    try:

        async def run() -> float:
            async with client_for(emulator, rate_limits=limits) as client:
                task = await client.submit(model=MODEL, prompt="polled", size="1:1")
                started = time.monotonic()
                await asyncio.gather(*(client.get_task(task.id) for _ in range(6)))
                return time.monotonic() - started

        assert asyncio.run(run()) >= 0.95
    finally:
        emulator.stop()


def test_uploads_and_the_balance_are_not_counted_in_the_async_buckets(
    make_emulator: Factory,
) -> None:
    """The docs put only task submits and queries in the buckets: one a second each here,
    yet four uploads and four balances go at once."""
    emu = make_emulator(rate_limits=None)
    one_a_second = RateLimits(
        submit_per_s=1, submit_burst_10s=10, query_per_s=1, query_burst_10s=10, slack_s=0.0
    )
    events = Events()

    async def run() -> float:
        async with client_for(emu, rate_limits=one_a_second, on_event=events) as client:
            started = time.monotonic()
            await asyncio.gather(
                *(client.balance() for _ in range(4)),
                *(
                    client.upload_image(image_bytes(), filename="a.png", mime_type="image/png")
                    for _ in range(4)
                ),
            )
            return time.monotonic() - started

    assert asyncio.run(run()) < 0.5
    assert events.named("rate_wait") == []


async def _timed(work: Any) -> float:
    started = time.monotonic()
    await work
    return time.monotonic() - started


@pytest.mark.parametrize("refused", ["submit", "poll"])
def test_a_429_holds_the_bucket_its_category_names_and_not_the_other(
    make_emulator: Factory, refused: str
) -> None:
    """A submit 429 (async_submit) makes the next submit wait out its Retry-After while a poll
    goes at once; a poll 429 (async_query) the other way round."""
    emu = make_emulator(rate_limits=None, latency=5.0)
    limits = RateLimits(
        submit_per_s=50, submit_burst_10s=500, query_per_s=50, query_burst_10s=500, slack_s=0.0
    )
    policy = RetryPolicy(attempts=3, base=0.01, cap=0.04, retry_after_cap=0.8)
    events = Events(heal=emu)  # the fault is cleared at the first retry: one 429 in all

    async def run() -> tuple[float, float]:
        async with client_for(emu, rate_limits=limits, retry=policy, on_event=events) as client:
            task = await client.submit(model=MODEL, prompt="running", size="1:1")
            endpoints = ("submit",) if refused == "submit" else ("poll",)
            emu.set_faults(Faults(rate_429=1.0, endpoints=endpoints))
            if refused == "submit":
                first = asyncio.create_task(client.submit(model=MODEL, prompt="a", size="1:1"))
            else:
                first = asyncio.create_task(client.get_task(task.id))
            while not events.named("retry"):
                await asyncio.sleep(0.01)
            submit_took = await _timed(client.submit(model=MODEL, prompt="b", size="1:1"))
            poll_took = await _timed(client.get_task(task.id))
            await first
            return submit_took, poll_took

    submit_took, poll_took = asyncio.run(run())
    held, free = (submit_took, poll_took) if refused == "submit" else (poll_took, submit_took)
    assert held >= 0.5  # waited out most of the 0.8 s
    assert free < 0.3
    waits = events.named("rate_wait")
    assert {w["bucket"] for w in waits} == {"submit" if refused == "submit" else "query"}


def test_account_groups_have_the_documented_limits() -> None:
    vip = RateLimits.for_group("vip")
    assert (vip.submit_per_s, vip.submit_burst_10s, vip.query_per_s, vip.query_burst_10s) == (
        16.7,
        167,
        166.7,
        1667,
    )
    svip = RateLimits.for_group("svip")
    assert (svip.submit_per_s, svip.query_burst_10s) == (33.3, 5000)
    with pytest.raises(ValueError):
        RateLimits.for_group("gold")


def test_a_submit_rate_replaces_the_groups_submit_limits_and_keeps_its_query_limits() -> None:
    mine = RateLimits.for_group("svip").with_submit_rate(50)
    assert (mine.submit_per_s, mine.submit_burst_10s) == (50, 500)
    assert (mine.query_per_s, mine.query_burst_10s) == (500.0, 5000)
    slow = RateLimits.for_group("default").with_submit_rate(0.5)
    assert (slow.submit_per_s, slow.submit_burst_10s) == (1, 5)  # never 2 in a second
    assert RateLimits.unlimited().with_submit_rate(3).enabled
    for bad in (0, 0.05, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"at least 0\.1 per second"):
            RateLimits.for_group("vip").with_submit_rate(bad)


def test_a_submit_rate_holds_submissions_to_it_over_the_wire() -> None:
    limits = replace(RateLimits.for_group("default").with_submit_rate(8), slack_s=0.0)
    assert limits.sustained_submit_rate == 8
    emulator = Emulator(EmulatorConfig(api_key=CANARY, latency=0.0, rate_limits=None)).start()
    try:

        async def run() -> float:
            async with client_for(emulator, rate_limits=limits) as client:
                started = time.monotonic()
                await asyncio.gather(
                    *(client.submit(model=MODEL, prompt=f"p{i}", size="1:1") for i in range(10))
                )
                return time.monotonic() - started

        # 8 in the first second, the 9th and 10th one second after the first.
        assert asyncio.run(run()) >= 0.95
        assert len(emulator.stats()["submissions"]) == 10
    finally:
        emulator.stop()


# --- the key stays home -------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """A foreign host: records every request's headers; serves a PNG, or a redirect."""

    protocol_version = "HTTP/1.0"
    seen: list[tuple[str, str, dict[str, str]]]
    redirect_to: str | None = None

    def _handle(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.redirect_to is not None:
            self.send_response(307)
            self.send_header("Location", self.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = image_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def foreign_host() -> Iterator[Callable[..., tuple[str, list[tuple[str, str, dict[str, str]]]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(redirect_to: str | None = None) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
        seen: list[tuple[str, str, dict[str, str]]] = []
        handler = type("Recorder", (_Recorder,), {"seen": seen, "redirect_to": redirect_to})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_uploads_and_downloads_never_carry_the_key_to_the_files_host(
    make_emulator: Factory,
) -> None:
    emu = make_emulator()

    async def run() -> None:
        async with client_for(emu) as client:
            uploaded = await client.upload_image(
                image_bytes(), filename="a.png", mime_type="image/png"
            )
            await client.download(uploaded.url)
            task = await client.submit(
                model=MODEL, prompt="x", size="1:1", image_urls=[uploaded.url]
            )
            await client.download((await finish(client, task)).url or "")

    asyncio.run(run())
    stats = emu.stats()
    assert stats["downloads"] == 1 and len(stats["uploads"]) == 1
    assert stats["files_requests_with_authorization"] == 0


def test_a_foreign_result_host_and_its_redirects_never_see_the_key(
    make_emulator: Factory, foreign_host: Any
) -> None:
    emu = make_emulator()
    final_url, final_seen = foreign_host()
    hop_url, hop_seen = foreign_host(redirect_to=final_url)

    async def run() -> str:
        async with client_for(emu) as client:
            await client.balance()  # the API client is warm and authorised
            return (await client.download(hop_url + "/result.jpg")).format

    assert asyncio.run(run()) == "png"
    assert len(hop_seen) == 1 and len(final_seen) == 1
    for _, _, headers in hop_seen + final_seen:
        assert "authorization" not in {name.lower() for name in headers}
        assert CANARY not in str(headers)


def test_an_api_redirect_to_another_host_is_not_followed(foreign_host: Any) -> None:
    target_url, target_seen = foreign_host()
    api_url, api_seen = foreign_host(redirect_to=target_url)

    async def run() -> None:
        async with ToApisClient(CANARY, api_url, retry=FAST) as client:
            await client.submit(model=MODEL, prompt="x", size="1:1")

    with pytest.raises(ApiError, match="redirect"):
        asyncio.run(run())
    assert len(api_seen) == 1 and api_seen[0][2].get("Authorization") == f"Bearer {CANARY}"
    assert target_seen == []


def test_the_key_appears_in_no_error_repr_or_log_line_across_faults(
    make_emulator: Factory,
) -> None:
    faults = Faults(
        error_500=0.15,
        error_503=0.1,
        html_502=0.1,
        reset=0.1,
        malformed_json=0.1,
        rate_429=0.1,
        slow=0.05,
        slow_seconds=1.0,
        task_failed=0.3,
    )
    emu = make_emulator(faults=faults, seed=3)
    errors: list[BaseException] = []
    policy = RetryPolicy(attempts=3, base=0.01, cap=0.02, retry_after_cap=0.02)

    async def attempt(coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:
            errors.append(exc)
            return None

    async def run() -> None:
        async with client_for(emu, retry=policy, timeout=0.3) as client:
            assert CANARY not in repr(client) + str(client)
            await attempt(
                client.upload_image(image_bytes(), filename="a.png", mime_type="image/png")
            )
            for i in range(6):
                task = await attempt(client.submit(model=MODEL, prompt=f"p{i}", size="1:1"))
                if task is not None:
                    done = await attempt(finish(client, task))
                    if done is not None and done.url:
                        await attempt(client.download(done.url))
            await attempt(client.get_task("task_img_nope"))
        async with client_for(emu, key=CANARY + "-wrong", retry=policy) as client:
            await attempt(client.balance())

    with capture_logs() as logs:
        asyncio.run(run())
    assert errors, "the fault mix should have produced some errors"
    assert any(isinstance(e, AccountBlocked) for e in errors)
    for exc in errors:
        assert CANARY not in str(exc) and CANARY not in repr(exc)
        assert exc.__cause__ is None and exc.__context__ is None  # no httpx request chained
    assert logs and all(CANARY not in repr(entry) for entry in logs)
    assert {e["event"] for e in logs} >= {"api.retry"}


def test_a_secret_never_shows_itself() -> None:
    secret = Secret(CANARY)
    assert CANARY not in repr(secret) + str(secret) + f"{secret}" + repr([secret])
    assert secret.reveal() == CANARY
    with pytest.raises(ValueError) as caught:
        ToApisClient(CANARY[:6] + "\n" + CANARY[6:], "http://127.0.0.1:1")
    assert CANARY[6:] not in str(caught.value)
