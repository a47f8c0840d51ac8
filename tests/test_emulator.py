"""The emulator behaves like the documented ToAPIs API, over real sockets."""

from __future__ import annotations

import email.utils
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from harness import CANARY
from promptdrop import imaging
from promptdrop.emulator import Emulator, EmulatorConfig, Faults, RateLimitConfig

KEY = CANARY
Factory = Callable[..., Emulator]


def api(emu: Emulator, key: str | None = KEY, timeout: float = 5.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}".strip()} if key is not None else {}
    return httpx.Client(base_url=emu.base_url, headers=headers, timeout=timeout)


def body(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": "gemini-2.5-flash-image-preview",
        "prompt": "A cat in a spacesuit walking on the moon",
        "size": "1:1",
        "n": 1,
    }
    request.update(overrides)
    return {k: v for k, v in request.items() if v is not ...}


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


def wait_final(client: httpx.Client, task_id: str, timeout: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = client.get(f"/v1/images/generations/{task_id}").json()
        if task["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return task
        time.sleep(0.02)


def result_url(task: dict[str, Any]) -> str:
    url: str = task["result"]["data"][0]["url"]
    return url


def upload(client: httpx.Client, data: bytes, name: str = "ref.png") -> httpx.Response:
    return client.post(
        "/v1/uploads/images",
        files={"file": (name, data, "application/octet-stream")},
        data={"purpose": "generation"},
    )


# --- start-up and the happy path ------------------------------------------------------------


def test_emulator_starts_in_well_under_a_second_on_two_origins() -> None:
    started = time.perf_counter()
    emu = Emulator(EmulatorConfig(api_key=KEY)).start()
    try:
        assert time.perf_counter() - started < 2.0
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.files_url.startswith("http://127.0.0.1:")
        assert emu.base_url != emu.files_url
    finally:
        emu.stop()


def test_submit_answers_the_documented_task_object(emulator: Emulator) -> None:
    with api(emulator) as client:
        resp = client.post(
            "/v1/images/generations", json=body(metadata={"orientation": "portrait"})
        )
    assert resp.status_code == 200
    task = resp.json()
    assert re.fullmatch(r"task_img_[0-9a-f]+", task["id"])
    assert task["object"] == "generation.task"
    assert task["model"] == "gemini-2.5-flash-image-preview"
    assert task["status"] == "queued"
    assert task["progress"] == 0
    assert abs(task["created_at"] - time.time()) < 5
    assert task["metadata"] == {"orientation": "portrait"}


def test_task_moves_from_queued_through_in_progress_to_completed(factory_emu: Factory) -> None:
    emu = factory_emu(latency=1.0)
    with api(emu) as client:
        task_id = client.post("/v1/images/generations", json=body()).json()["id"]
        first = client.get(f"/v1/images/generations/{task_id}").json()
        time.sleep(0.5)
        middle = client.get(f"/v1/images/generations/{task_id}").json()
        time.sleep(0.6)
        done = client.get(f"/v1/images/generations/{task_id}").json()
    assert (first["status"], first["progress"]) == ("queued", 0)
    assert middle["status"] == "in_progress"
    assert 0 < middle["progress"] < 100
    assert done["status"] == "completed"
    assert done["progress"] == 100
    assert done["expires_at"] - done["completed_at"] == pytest.approx(86400, abs=1)
    assert result_url(done).startswith(emu.files_url + "/generated/")


def test_results_decode_at_the_exact_size_and_alternate_formats(factory_emu: Factory) -> None:
    emu = factory_emu(latency=0.0, image_format="alternate")
    expected = {
        "1:1": (1024, 1024),
        "16:9": (1792, 1024),
        "9:16": (1024, 1792),
        "4:3": (1365, 1024),
        "3:4": (1024, 1365),
        "3:2": (1536, 1024),
        "2:3": (1024, 1536),
    }
    formats = []
    with api(emu) as client, httpx.Client() as files:
        for size, pixels in expected.items():
            task_id = client.post("/v1/images/generations", json=body(size=size)).json()["id"]
            url = result_url(wait_final(client, task_id))
            assert url.endswith(".jpg")
            data = files.get(url).content
            info = imaging.inspect(data)
            assert (info.width, info.height) == pixels
            formats.append(info.format)
    assert formats[:2] == ["png", "jpeg"]
    assert set(formats) == {"png", "jpeg"}


def test_different_prompts_give_different_images_and_equal_prompts_equal_ones(
    emulator: Emulator,
) -> None:
    images = []
    with api(emulator) as client, httpx.Client() as files:
        for prompt in ("a red fox", "a blue whale", "a red fox"):
            task_id = client.post("/v1/images/generations", json=body(prompt=prompt)).json()["id"]
            images.append(files.get(result_url(wait_final(client, task_id))).content)
    assert images[0] != images[1]
    assert images[0] == images[2]


BALANCE_PATHS = ["/v1/balance", "/balance", "/v1/user/balance", "/user/balance"]


@pytest.mark.parametrize("path", BALANCE_PATHS)
def test_the_balance_answers_the_documented_fields_on_each_documented_path(
    emulator: Emulator, path: str
) -> None:
    with api(emulator) as client:
        resp = client.get(path)
    assert resp.status_code == 200
    assert resp.json() == {
        "success": True,
        "remain_balance": 100.0,
        "used_balance": 0.0,
        "remain_credits": 20000.0,
        "used_credits": 0.0,
        "credits_per_usd": 200.0,
        "unlimited_quota": False,
    }
    assert "X-RateLimit-Category" not in resp.headers  # in neither async bucket


def test_the_balance_counts_what_the_tasks_cost_in_credits(emulator: Emulator) -> None:
    with api(emulator) as client:
        for _ in range(2):
            assert client.post("/v1/images/generations", json=body()).status_code == 200
        answer = client.get("/v1/balance").json()
    assert answer["used_credits"] == 16.0 and answer["remain_credits"] == 19984.0
    assert answer["used_balance"] == 0.08


def test_an_unlimited_quota_says_so_with_a_remain_balance_of_minus_1(emulator: Emulator) -> None:
    emulator.set_faults(Faults(unlimited_quota=True))
    with api(emulator) as client:
        answer = client.get("/v1/balance").json()
    assert answer["unlimited_quota"] is True and answer["remain_balance"] == -1
    assert answer["remain_credits"] == 20000.0  # as in the docs' examples: still a number


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/balance", "Failed to get token info: record not found"),
        ("/balance", "Failed to get token info: record not found"),
        ("/v1/user/balance", "Failed to get user quota"),
        ("/user/balance", "Failed to get user quota"),
    ],
)
def test_a_failed_balance_is_http_200_with_success_false(
    emulator: Emulator, path: str, message: str
) -> None:
    emulator.set_faults(Faults(balance_fails=True))
    with api(emulator) as client:
        resp = client.get(path)
    assert resp.status_code == 200
    assert resp.json() == {"success": False, "message": message}


# --- validation -------------------------------------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    (body(prompt=...), "The 'prompt' field is required."),
    (body(prompt=""), "The 'prompt' field is required."),
    (body(prompt="x" * 1001), "at most 1000 characters"),
    (body(n="1"), "The 'n' field must be the integer 1."),
    (body(n=2), "The 'n' field must be the integer 1."),
    (body(n=True), "The 'n' field must be the integer 1."),
    (body(size="5:4"), "The 'size' field must be one of"),
    (body(model="dall-e-3"), "The model 'dall-e-3' is not supported"),
    (body(model=...), "The 'model' field is required."),
    (body(image_urls=[f"https://example.com/{i}.png" for i in range(15)]), "at most 14"),
    (body(image_urls=[{"href": "https://example.com/a.png"}]), "image_urls[0] must be"),
    (body(image_urls=["https://example.com/a.png", "ftp://x/b.png"]), "image_urls[1] must be"),
    (body(image_urls=["data:image/png;base64,iVBORw0KGgo="]), "image_urls[0] must be"),
    (body(image_urls="https://example.com/a.png"), "must be a list"),
    (body(metadata={"resolution": "2K"}), "metadata.resolution"),
]


@pytest.mark.parametrize(("request_body", "message"), REFUSED)
def test_invalid_requests_are_refused_with_a_documented_400_and_create_nothing(
    emulator: Emulator, request_body: dict[str, Any], message: str
) -> None:
    with api(emulator) as client:
        resp = client.post("/v1/images/generations", json=request_body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert emulator.stats()["submissions"] == []


def test_a_body_that_is_not_json_is_a_400(emulator: Emulator) -> None:
    with api(emulator) as client:
        resp = client.post(
            "/v1/images/generations",
            content=b'{"prompt": ',
            headers={"Content-Type": "application/json"},
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "The request body is not valid JSON."


def test_a_chunked_request_body_is_read(emulator: Emulator) -> None:
    with api(emulator) as client:
        resp = client.post(
            "/v1/images/generations",
            content=iter([json.dumps(body()).encode()[:10], json.dumps(body()).encode()[10:]]),
            headers={"Content-Type": "application/json"},
        )
    assert resp.request.headers["Transfer-Encoding"] == "chunked"
    assert resp.status_code == 200


def test_boundary_values_are_accepted(emulator: Emulator) -> None:
    urls = [f"https://example.com/{i}.png" for i in range(14)]
    with api(emulator) as client:
        ok = [
            client.post("/v1/images/generations", json=body(prompt="x" * 1000)),
            client.post("/v1/images/generations", json=body(n=..., image_urls=urls)),
            client.post("/v1/images/generations", json=body(model="nano-banana", size=...)),
        ]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert len(emulator.stats()["submissions"]) == 3


def test_references_to_missing_or_expired_uploads_could_not_be_downloaded(
    factory_emu: Factory,
) -> None:
    emu = factory_emu(upload_ttl=0.3)
    with api(emu) as client, httpx.Client() as files:
        url = upload(client, image_bytes()).json()["data"]["url"]
        fresh = client.post("/v1/images/generations", json=body(image_urls=[url]))
        missing = client.post(
            "/v1/images/generations",
            json=body(image_urls=[url, f"{emu.files_url}/uploads/1_deadbeef.png"]),
        )
        assert files.get(url).status_code == 200
        time.sleep(0.35)
        expired = client.post("/v1/images/generations", json=body(image_urls=[url]))
        assert files.get(url).status_code == 404
    assert fresh.status_code == 200
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "image_urls[1] could not be downloaded"
    assert expired.status_code == 400
    assert expired.json()["error"]["message"] == "image_urls[0] could not be downloaded"


# --- authentication and unknown tasks ----------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_requests_without_the_configured_key_get_the_documented_401(
    emulator: Emulator, key: str | None
) -> None:
    with api(emulator, key=key) as client:
        answers = [
            client.post("/v1/images/generations", json=body()),
            client.get("/v1/images/generations/task_img_x"),
            upload(client, image_bytes()),
            client.get("/v1/balance"),
        ]
    for resp in answers:
        assert resp.status_code == 401
        assert resp.json() == {
            "error": {
                "code": 401,
                "message": "Authentication failed, please check your API key",
                "type": "authentication_error",
            }
        }
    assert emulator.stats()["submissions"] == []


def test_without_a_configured_key_any_bearer_token_is_accepted(factory_emu: Factory) -> None:
    emu = factory_emu(api_key=None)
    with api(emu, key="anything") as client, api(emu, key="") as empty:
        assert client.get("/v1/balance").status_code == 200
        assert empty.get("/v1/balance").status_code == 401


UNKNOWN_TASK_ANSWERS = [
    (404, {"error": {"code": "task_not_found", "message": "Task not found"}}),
    (404, {"error": {"code": 404, "message": "Task not found", "type": "not_found_error"}}),
    (400, {"message": "task_not_exist"}),
]


def _unknown_answer(resp: httpx.Response) -> tuple[int, dict[str, Any]]:
    """The status and body of an unknown-task answer, without the body's `type` for
    task_not_found (the docs do not agree on it)."""
    data: dict[str, Any] = resp.json()
    error = data.get("error")
    if isinstance(error, dict) and error.get("code") == "task_not_found":
        data = {"error": {k: v for k, v in error.items() if k != "type"}}
    return resp.status_code, data


def test_unknown_tasks_answer_in_turn_in_the_three_documented_shapes(emulator: Emulator) -> None:
    with api(emulator) as client:
        answers = [client.get("/v1/images/generations/task_img_nope") for _ in range(6)]
    assert [_unknown_answer(r) for r in answers] == UNKNOWN_TASK_ANSWERS * 2


@pytest.mark.parametrize(
    ("mode", "answer"),
    [
        ("task_not_found", UNKNOWN_TASK_ANSWERS[0]),
        ("not_found_error", UNKNOWN_TASK_ANSWERS[1]),
        ("task_not_exist", UNKNOWN_TASK_ANSWERS[2]),
    ],
)
def test_unknown_tasks_can_be_answered_always_in_one_shape(
    emulator: Emulator, mode: str, answer: tuple[int, dict[str, Any]]
) -> None:
    emulator.set_faults(Faults(unknown_task_answer=mode))
    with api(emulator) as client:
        answers = [client.get("/v1/images/generations/task_img_nope") for _ in range(3)]
    assert [_unknown_answer(r) for r in answers] == [answer] * 3


def test_an_unknown_task_answer_mode_must_be_one_of_the_shapes() -> None:
    with pytest.raises(ValueError, match="unknown_task_answer must be one of rotate"):
        Faults(unknown_task_answer="teapot")


def test_the_first_answer_for_an_unknown_task_is_the_error_tables_404(emulator: Emulator) -> None:
    with api(emulator) as client:
        first = client.get("/v1/images/generations/task_img_nope")
    assert _unknown_answer(first) == UNKNOWN_TASK_ANSWERS[0]


def test_a_gone_task_is_created_then_every_poll_answers_as_for_an_unknown_task(
    factory_emu: Factory,
) -> None:
    # No latency: a task the emulator still knew would answer "completed" at once.
    emu = factory_emu(latency=0.0, faults=Faults(task_gone=1.0))
    with api(emu) as client:
        created = client.post("/v1/images/generations", json=body())
        assert created.status_code == 200 and created.json()["id"].startswith("task_img_")
        task_id = created.json()["id"]
        polls = [client.get(f"/v1/images/generations/{task_id}") for _ in range(3)]
    assert [_unknown_answer(r) for r in polls] == UNKNOWN_TASK_ANSWERS
    stats = emu.stats()
    assert stats["faults_injected"] == {"task_gone": 1}
    assert [s["task_id"] for s in stats["submissions"]] == [task_id]


def test_task_gone_is_a_share_of_new_tasks_counted_in_stats(factory_emu: Factory) -> None:
    emu = factory_emu(seed=3, latency=0.0, faults=Faults(task_gone=0.5))
    with api(emu) as client:
        ids = [client.post("/v1/images/generations", json=body()).json()["id"] for _ in range(20)]
        statuses = [client.get(f"/v1/images/generations/{i}").status_code for i in ids]
    gone = sum(1 for status in statuses if status != 200)
    assert 0 < gone < 20
    assert emu.stats()["faults_injected"] == {"task_gone": gone}


def test_task_gone_is_off_by_default_and_takes_a_rate_from_0_to_1() -> None:
    assert Faults().task_gone == 0.0
    assert Faults.from_dict({"task_gone": 1}).task_gone == 1.0
    assert Faults(task_gone=0.25).to_dict()["task_gone"] == 0.25
    for bad in (-0.1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="task_gone"):
            Faults.from_dict({"task_gone": bad})


# --- uploads -----------------------------------------------------------------------------------


def test_an_uploaded_image_is_served_from_the_files_origin(emulator: Emulator) -> None:
    data = image_bytes("JPEG")
    with api(emulator) as client, httpx.Client() as files:
        resp = upload(client, data, "photo.jpg")
        answer = resp.json()
        served = files.get(answer["data"]["url"])
    assert resp.status_code == 200
    assert answer["success"] is True
    assert answer["message"] == ""
    assert answer["data"]["id"].startswith("upload_")
    assert answer["data"]["url"].startswith(emulator.files_url + "/uploads/")
    assert answer["data"]["mime_type"] == "image/jpeg"
    assert answer["data"]["size"] == len(data)
    assert served.content == data
    assert served.headers["content-type"] == "image/jpeg"
    [record] = emulator.stats()["uploads"]
    assert record["size"] == len(data)
    assert record["format"] == "jpeg"


def test_a_gif_upload_is_accepted_but_refused_as_a_generation_reference(
    emulator: Emulator,
) -> None:
    with api(emulator) as client:
        resp = upload(client, image_bytes("GIF"), "anim.gif")
        url = resp.json()["data"]["url"]
        submit = client.post("/v1/images/generations", json=body(image_urls=[url]))
    assert resp.status_code == 200
    assert resp.json()["data"]["mime_type"] == "image/gif"
    assert submit.status_code == 400
    assert "GIF" in submit.json()["error"]["message"]


def test_an_upload_over_10_mb_is_refused(emulator: Emulator) -> None:
    data = image_bytes() + b"\0" * (10 * 1024 * 1024)
    with api(emulator) as client:
        resp = upload(client, data)
    assert resp.status_code == 400
    assert resp.json() == {"success": False, "message": "Image too large. Maximum size is 10MB"}
    assert emulator.stats()["uploads"] == []


@pytest.mark.parametrize("data", [b"just some text, not an image", image_bytes()[:40]])
def test_an_upload_that_is_not_an_image_by_its_bytes_is_refused(
    emulator: Emulator, data: bytes
) -> None:
    with api(emulator) as client:
        resp = upload(client, data, "looks-like.png")
    assert resp.status_code == 400
    assert resp.json() == {
        "success": False,
        "message": "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF",
    }


def test_an_upload_without_a_file_field_is_refused(emulator: Emulator) -> None:
    with api(emulator) as client:
        resp = client.post("/v1/uploads/images", files={"image": ("a.png", image_bytes())})
    assert resp.status_code == 400
    assert resp.json()["success"] is False


# --- result expiry --------------------------------------------------------------------------


def test_results_are_refused_after_result_ttl(factory_emu: Factory) -> None:
    emu = factory_emu(latency=0.0, result_ttl=0.3)
    with api(emu) as client, httpx.Client() as files:
        task = wait_final(client, client.post("/v1/images/generations", json=body()).json()["id"])
        assert files.get(result_url(task)).status_code == 200
        time.sleep(0.35)
        assert files.get(result_url(task)).status_code == 404


def test_a_result_is_not_served_before_the_task_completes(factory_emu: Factory) -> None:
    emu = factory_emu(latency=1.0)
    with api(emu) as client:
        client.post("/v1/images/generations", json=body())
    [sub] = emu.stats()["submissions"]
    # The name the completed task will announce: completion second and the id's first hex.
    name = f"{int(sub['at'] + 1.0)}_{sub['task_id'].removeprefix('task_img_')[:8]}.jpg"
    with httpx.Client() as files:
        assert files.get(f"{emu.files_url}/generated/{name}").status_code == 404


# --- rate limits ---------------------------------------------------------------------------


def test_the_submit_bucket_answers_429_with_retry_after_and_rate_headers(
    factory_emu: Factory,
) -> None:
    emu = factory_emu(rate_limits=RateLimitConfig(submit_per_s=2, query_per_s=100))
    with api(emu) as client:
        first = client.post("/v1/images/generations", json=body())
        second = client.post("/v1/images/generations", json=body())
        refused = client.post("/v1/images/generations", json=body())
        query = client.get(f"/v1/images/generations/{first.json()['id']}")
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Category"] == "async_submit"
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert int(first.headers["X-RateLimit-Reset"]) >= 0
    assert second.status_code == 200
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Category"] == "async_submit"
    assert refused.json() == {
        "error": {"code": "rate_limit_exceeded", "message": "Async task request rate exceeded"}
    }
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert query.status_code == 200
    assert query.headers["X-RateLimit-Category"] == "async_query"
    stats = emu.stats()
    assert stats["rate_limited"] == 1
    assert len(stats["submissions"]) == 2


def test_uploads_and_the_balance_are_not_counted_in_the_async_buckets(
    factory_emu: Factory,
) -> None:
    emu = factory_emu(
        rate_limits=RateLimitConfig(
            submit_per_s=1, submit_burst_10s=1, query_per_s=1, query_burst_10s=1
        )
    )
    with api(emu) as client:
        uploads = [upload(client, image_bytes()) for _ in range(3)]
        balances = [client.get("/v1/balance") for _ in range(3)]
        submit = client.post("/v1/images/generations", json=body())
        poll = client.get(f"/v1/images/generations/{submit.json()['id']}")
    assert [r.status_code for r in uploads + balances] == [200] * 6
    assert not any("X-RateLimit-Category" in r.headers for r in uploads + balances)
    # Each bucket still had its one request of the 10 s left.
    assert (submit.status_code, poll.status_code) == (200, 200)
    assert emu.stats()["rate_limited"] == 0


@pytest.mark.parametrize(
    ("endpoints", "category"),
    [(("submit",), "async_submit"), (("poll",), "async_query")],
)
def test_an_injected_429_names_its_async_category(
    emulator: Emulator, endpoints: tuple[str, ...], category: str
) -> None:
    emulator.set_faults(Faults(rate_429=1.0, endpoints=endpoints))
    with api(emulator) as client:
        if endpoints == ("submit",):
            resp = client.post("/v1/images/generations", json=body())
        else:
            resp = client.get("/v1/images/generations/task_img_x")
    assert resp.status_code == 429
    assert resp.headers["X-RateLimit-Category"] == category
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"


def test_an_injected_429_on_an_upload_or_the_balance_is_the_plain_shape_without_category(
    emulator: Emulator,
) -> None:
    emulator.set_faults(Faults(rate_429=1.0, endpoints=("upload", "poll")))
    with api(emulator) as client:
        answers = [upload(client, image_bytes()), client.get("/v1/balance")]
    for resp in answers:
        assert resp.status_code == 429 and "X-RateLimit-Category" not in resp.headers
        assert resp.json() == {
            "error": {
                "code": 429,
                "message": "Too many requests, please try again later",
                "type": "rate_limit_error",
            }
        }


def test_the_10_second_burst_window_is_enforced(factory_emu: Factory) -> None:
    emu = factory_emu(rate_limits=RateLimitConfig(query_per_s=100, query_burst_10s=3))
    with api(emu) as client:
        answers = [client.get("/v1/images/generations/task_img_x") for _ in range(4)]
    assert [r.status_code for r in answers] == [404, 404, 400, 429]
    assert 9 <= int(answers[3].headers["Retry-After"]) <= 10


def test_refused_requests_do_not_use_up_the_allowance(factory_emu: Factory) -> None:
    emu = factory_emu(rate_limits=RateLimitConfig(query_per_s=2))
    with api(emu) as client:
        task = client.post("/v1/images/generations", json=body()).json()["id"]
        poll = f"/v1/images/generations/{task}"
        start = time.monotonic()
        assert [client.get(poll).status_code for _ in range(2)] == [200, 200]
        time.sleep(0.3)
        assert {client.get(poll).status_code for _ in range(5)} == {429}
        # Had the refusals counted, the window would still be full when the first two leave it.
        time.sleep(max(0.0, start + 1.1 - time.monotonic()))
        assert [client.get(poll).status_code for _ in range(2)] == [200, 200]
    assert emu.stats()["rate_limited"] == 5


# --- faults --------------------------------------------------------------------------------


def submit_under(emu: Emulator, faults: Faults, timeout: float = 5.0) -> httpx.Response:
    emu.set_faults(faults)
    with api(emu, timeout=timeout) as client:
        return client.post("/v1/images/generations", json=body())


@pytest.mark.parametrize(
    ("faults", "status", "stat"),
    [
        (Faults(error_500=1.0), 500, "500"),
        (Faults(error_503=1.0), 503, "503"),
        (Faults(rate_429=1.0), 429, "429"),
    ],
)
def test_json_errors_on_submit_create_no_task(
    emulator: Emulator, faults: Faults, status: int, stat: str
) -> None:
    resp = submit_under(emulator, faults)
    assert resp.status_code == status
    assert "error" in resp.json()
    stats = emulator.stats()
    assert stats["submissions"] == []
    assert stats["submit_requests"] == 1
    assert stats["faults_injected"] == {stat: 1}


@pytest.mark.parametrize(("fault", "status"), [("html_502", 502), ("html_504", 504)])
def test_gateway_html_errors_on_submit_still_create_the_task(
    emulator: Emulator, fault: str, status: int
) -> None:
    resp = submit_under(emulator, Faults.from_dict({fault: 1.0}))
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("text/html")
    assert f"<h1>{status} " in resp.text
    stats = emulator.stats()
    assert len(stats["submissions"]) == 1
    assert stats["faults_injected"] == {str(status): 1}


def test_a_reset_submit_raises_a_transport_error_but_creates_the_task(
    emulator: Emulator,
) -> None:
    with pytest.raises(httpx.TransportError):
        submit_under(emulator, Faults(reset=1.0))
    stats = emulator.stats()
    assert len(stats["submissions"]) == 1
    assert stats["faults_injected"] == {"reset": 1}


def test_a_malformed_json_submit_does_not_parse_but_creates_the_task(emulator: Emulator) -> None:
    resp = submit_under(emulator, Faults(malformed_json=1.0))
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.content)
    assert len(emulator.stats()["submissions"]) == 1


def test_a_slow_submit_beyond_the_client_timeout_creates_the_task(emulator: Emulator) -> None:
    with pytest.raises(httpx.ReadTimeout):
        submit_under(emulator, Faults(slow=1.0, slow_seconds=2.0), timeout=0.2)
    assert len(emulator.stats()["submissions"]) == 1


def test_a_slow_answer_arrives_after_slow_seconds(emulator: Emulator) -> None:
    emulator.set_faults(Faults(slow=1.0, slow_seconds=0.3, endpoints=("poll",)))
    with api(emulator) as client:
        started = time.monotonic()
        resp = client.get("/v1/balance")
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_a_429_fault_can_say_retry_after_as_an_http_date(emulator: Emulator) -> None:
    resp = submit_under(emulator, Faults(rate_429=1.0, retry_after_format="date"))
    assert resp.status_code == 429
    when = email.utils.parsedate_to_datetime(resp.headers["Retry-After"]).timestamp()
    assert time.time() - 2 < when < time.time() + 5


def test_failed_tasks_carry_the_documented_error(emulator: Emulator) -> None:
    emulator.set_faults(Faults(task_failed=1.0))
    with api(emulator) as client:
        task = wait_final(client, client.post("/v1/images/generations", json=body()).json()["id"])
    assert task["status"] == "failed"
    assert task["error"] == {
        "code": "generation_failed",
        "message": "call upstream API failed: upstream returned status 422",
    }
    assert "result" not in task
    assert emulator.stats()["faults_injected"] == {"task_failed": 1}


@pytest.mark.parametrize("alias", ["pending", "submitted", ""])
def test_the_queued_status_name_can_be_an_alias(factory_emu: Factory, alias: str) -> None:
    emu = factory_emu(latency=5.0, faults=Faults(running_status=alias))
    with api(emu) as client:
        task = client.post("/v1/images/generations", json=body()).json()
        polled = client.get(f"/v1/images/generations/{task['id']}").json()
    assert task["status"] == alias
    assert polled["status"] == alias


def test_url_top_level_only_moves_the_url_out_of_result(emulator: Emulator) -> None:
    emulator.set_faults(Faults(url_top_level_only=1.0))
    with api(emulator) as client, httpx.Client() as files:
        task = wait_final(client, client.post("/v1/images/generations", json=body()).json()["id"])
        assert files.get(task["url"]).status_code == 200
    assert task["status"] == "completed"
    assert "result" not in task
    assert task["url"].startswith(emulator.files_url)


def test_expired_results_are_refused_at_download(emulator: Emulator) -> None:
    with api(emulator) as client, httpx.Client() as files:
        task = wait_final(client, client.post("/v1/images/generations", json=body()).json()["id"])
        emulator.set_faults(Faults(expired_results=1.0))
        assert files.get(result_url(task)).status_code == 404
    assert emulator.stats()["faults_injected"] == {"expired_results": 1}


@pytest.mark.parametrize(
    ("faults", "status", "code"),
    [
        (Faults(outage=True), 503, "service_unavailable"),
        (Faults(auth_fail=True), 401, 401),
    ],
)
def test_outage_and_auth_fail_answer_every_api_request(
    emulator: Emulator, faults: Faults, status: int, code: object
) -> None:
    emulator.set_faults(faults)
    with api(emulator) as client:
        answers = [
            client.post("/v1/images/generations", json=body()),
            client.get("/v1/images/generations/task_img_x"),
            client.get("/v1/balance"),
        ]
    assert [r.status_code for r in answers] == [status] * 3
    assert all(r.json()["error"]["code"] == code for r in answers)
    assert emulator.stats()["submissions"] == []


def test_exhausted_quota_refuses_submits_with_402(emulator: Emulator) -> None:
    resp = submit_under(emulator, Faults(quota_exhausted=True))
    assert resp.status_code == 402
    assert resp.json()["error"]["code"] == "insufficient_quota"
    assert emulator.stats()["submissions"] == []
    with api(emulator) as client:
        answer = client.get("/v1/balance").json()
    assert answer["success"] is True
    assert answer["remain_credits"] == 0 and answer["remain_balance"] == 0


def test_a_down_submit_limiter_refuses_submits_with_the_documented_503_and_answers_the_rest(
    emulator: Emulator,
) -> None:
    with api(emulator) as client:
        task_id = client.post("/v1/images/generations", json=body()).json()["id"]
        emulator.set_faults(Faults(submit_limiter_down=True))
        refused = client.post("/v1/images/generations", json=body())
        done = wait_final(client, task_id)
        others = [upload(client, image_bytes()), client.get("/v1/balance")]
    assert refused.status_code == 503
    assert refused.json() == {
        "error": {
            "code": "rate_limit_unavailable",
            "message": "The async task submit limiter is temporarily unavailable",
        }
    }
    assert done["status"] == "completed"
    assert [r.status_code for r in others] == [200, 200]
    stats = emulator.stats()
    assert len(stats["submissions"]) == 1 and stats["submit_requests"] == 2
    assert stats["faults_injected"] == {"submit_limiter_down": 1}


def test_an_injected_503_on_a_submit_is_the_limiters_and_elsewhere_a_server_error(
    emulator: Emulator,
) -> None:
    emulator.set_faults(Faults(error_503=1.0, endpoints=("submit", "poll")))
    with api(emulator) as client:
        submit = client.post("/v1/images/generations", json=body())
        poll = client.get("/v1/images/generations/task_img_x")
    assert submit.json()["error"]["code"] == "rate_limit_unavailable"
    assert poll.json()["error"]["code"] == "service_unavailable"


def test_request_faults_apply_only_to_the_listed_endpoints(emulator: Emulator) -> None:
    emulator.set_faults(Faults(error_500=1.0, endpoints=("download",)))
    with api(emulator) as client, httpx.Client() as files:
        task = wait_final(client, client.post("/v1/images/generations", json=body()).json()["id"])
        download = files.get(result_url(task))
    assert task["status"] == "completed"
    assert download.status_code == 500
    assert emulator.stats()["faults_injected"] == {"500": 1}


def test_faults_are_repeatable_with_a_seed(factory_emu: Factory) -> None:
    runs = []
    for _ in range(2):
        emu = factory_emu(seed=7, faults=Faults(error_500=0.5))
        with api(emu) as client:
            runs.append([client.get("/v1/balance").status_code for _ in range(20)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


def test_faults_can_be_set_over_http(emulator: Emulator) -> None:
    with api(emulator, key=None) as control, api(emulator) as client:
        set_resp = control.post("/_emulator/faults", json={"html_502": 1.0, "endpoints": ["poll"]})
        assert set_resp.status_code == 200
        assert control.get("/_emulator/faults").json()["endpoints"] == ["poll"]
        assert client.get("/v1/balance").status_code == 502
        assert emulator.faults == Faults(html_502=1.0, endpoints=("poll",))
        bad = control.post("/_emulator/faults", json={"html_503": 1.0})
        assert bad.status_code == 400
        assert control.post("/_emulator/faults", json={"reset": 2}).status_code == 400
        assert emulator.faults.html_502 == 1.0
        assert control.post("/_emulator/faults", json={"task_gone": 2}).status_code == 400
        gone = control.post("/_emulator/faults", json={"task_gone": 1.0})
        assert gone.status_code == 200 and gone.json()["task_gone"] == 1.0
        assert emulator.faults == Faults(task_gone=1.0)


# --- stats and control -----------------------------------------------------------------------


def test_stats_count_requests_and_stay_clean_of_authorization_on_files(
    emulator: Emulator,
) -> None:
    with api(emulator) as client, httpx.Client() as files:
        task_id = client.post("/v1/images/generations", json=body(prompt="stats")).json()["id"]
        url = result_url(wait_final(client, task_id))
        files.get(url)
        polls = emulator.stats()["polls"]
        assert emulator.stats()["files_requests_with_authorization"] == 0
        files.get(url, headers={"Authorization": "Bearer leaked"})
        over_http = client.get("/_emulator/stats").json()
    assert over_http["files_requests_with_authorization"] == 1
    assert over_http["downloads"] == 2
    assert over_http["polls"] == polls >= 1
    assert over_http["submit_requests"] == 1
    [submission] = over_http["submissions"]
    assert submission["task_id"] == task_id
    assert submission["prompt"] == "stats"
    assert submission["n"] == 1
    assert submission["image_urls"] == []
    assert over_http["responses_by_status"]["200"] == 1 + polls + 2


def test_reset_clears_stats_and_tasks(emulator: Emulator) -> None:
    with api(emulator) as client, api(emulator, key=None) as control:
        task_id = client.post("/v1/images/generations", json=body()).json()["id"]
        assert control.post("/_emulator/reset").status_code == 200
        assert emulator.stats()["submit_requests"] == 0
        assert client.get(f"/v1/images/generations/{task_id}").status_code == 404
    emulator.reset_stats()
    assert emulator.stats()["polls"] == 0


def test_stop_ends_idle_keep_alive_connections(factory_emu: Factory) -> None:
    emu = factory_emu()
    with api(emu) as client:
        assert client.get("/v1/balance").status_code == 200
        emu.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/v1/balance")


# --- the command --------------------------------------------------------------------------


def test_the_emulator_command_serves_and_exits_0_on_sigterm() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptdrop", "emulator", "--port", "0", "--latency", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"promptdrop emulator: API on (http://\S+) files on (http://\S+) \(Ctrl-C to stop\)\n",
            line,
        )
        assert match, line
        with httpx.Client(base_url=match.group(1), headers={"Authorization": "Bearer k"}) as c:
            task_id = c.post("/v1/images/generations", json=body()).json()["id"]
            assert result_url(wait_final(c, task_id)).startswith(match.group(2))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert err == ""


def test_the_emulator_command_refuses_bad_faults_json() -> None:
    from promptdrop.cli import main

    assert main(["emulator", "--port", "0", "--faults", '{"nonsense": 1}']) == 2
    assert main(["emulator", "--port", "0", "--faults", '{"task_gone": 2}']) == 2


def test_the_emulator_command_takes_task_gone_in_its_faults_json() -> None:
    faults = '{"task_gone": 1.0}'
    command = [sys.executable, "-m", "promptdrop", "emulator", "--port", "0", "--faults", faults]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        match = re.search(r"API on (http://\S+) ", proc.stdout.readline())
        assert match
        with httpx.Client(base_url=match.group(1), headers={"Authorization": "Bearer k"}) as c:
            task_id = c.post("/v1/images/generations", json=body()).json()["id"]
            assert c.get(f"/v1/images/generations/{task_id}").status_code == 404
            assert c.get("/_emulator/stats").json()["faults_injected"] == {"task_gone": 1}
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


# --- fixture ---------------------------------------------------------------------------------


@pytest.fixture
def factory_emu(emulator_factory: Factory) -> Factory:
    """emulator_factory with the test key, fast tasks and no rate limits unless overridden."""

    def make(**kwargs: Any) -> Emulator:
        settings: dict[str, Any] = {"api_key": KEY, "latency": 0.05, "rate_limits": None}
        settings.update(kwargs)
        return emulator_factory(**settings)

    return make
