"""The engine in one process (`--once`) against the emulator misbehaving on purpose: a mixed
fault matrix, a full outage, a refused key and an empty quota. Every run must return, every
job must end in a final state that says why, and no prompt may be paid for twice."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from figures import record
from harness import CANARY
from promptdrop.api import Ambiguous, Downloaded, RetryPolicy, ToApisClient
from promptdrop.api.ratelimit import RateLimits
from promptdrop.emulator import Emulator, Faults
from promptdrop.jobs.engine import EngineOptions
from promptdrop.jobs.lookups import LookupPolicy
from promptdrop.ledger import LEDGER_NAME, JobState, Ledger
from promptdrop.outputs import note_path
from promptdrop.service.runner import WatchOptions, run
from promptdrop.spec import rules_for_folders

FAST = EngineOptions(
    poll_first=0.05,
    poll_interval=0.05,
    retry_later=0.2,
    pause_first=0.3,
    pause_cap=0.6,
    drain_timeout=2.0,
    # A lost answer's "not found" confirmed over 3 s, not a minute; a new task looked up by its
    # business id 1.5 s after it was made (past the delayed mode's 1 s).
    lookups=LookupPolicy(spread=3.0, proof_delay=1.5),
)


@pytest.fixture
def emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A fast emulator that only accepts the canary key."""
    return emulator_factory(latency=0.05, jitter=0.0, rate_limits=None)


def _once(
    folder: Path, state: Path, emu: Emulator, *, max_in_flight: int = 8, timeout: float = 30.0
) -> int:
    rules = rules_for_folders([folder])
    rules.rules[0] = rules.rules[0].model_copy(update={"max_in_flight": max_in_flight})
    rules.api = rules.api.model_copy(update={"timeout": timeout})
    opts = WatchOptions(
        rules=rules, state_dir=state, api_key=CANARY, base_url=emu.base_url, once=True, engine=FAST
    )
    return asyncio.run(run(opts))


def _drop(folder: Path, n: int, stem: str) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    made = {}
    for i in range(n):
        prompt = f"{stem} number {i}"
        path = folder / f"{stem}{i:02d}.prompt.toml"
        path.write_text(f'prompt = "{prompt}"\n', encoding="utf-8")
        made[prompt] = path
    return made


def _image(source: Path) -> Path | None:
    stem = source.name.removesuffix(".prompt.toml")
    for ext in (".png", ".jpg", ".webp"):
        if (candidate := source.with_name(stem + ext)).exists():
            return candidate
    return None


def _jobs(state: Path) -> dict[str, JobState]:
    """Prompt text -> the state of its one job."""
    with Ledger(state / LEDGER_NAME) as ledger:
        jobs = ledger.jobs()
        found = {j.request["prompt"]: (j.state, j.error) for j in jobs}
        assert len(found) == len(jobs)
    for prompt, (st, error) in found.items():
        if st is JobState.FAILED:
            assert error, f"failed job for {prompt!r} has no reason"
    return {p: s for p, (s, _e) in found.items()}


def _heal_after(
    emu: Emulator, cond: Callable[[], bool], hold: float, timeout: float = 20.0
) -> threading.Thread:
    """A thread that waits for `cond` (or `timeout`), `hold` seconds more, then clears faults."""

    def heal() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cond():
            time.sleep(0.02)
        time.sleep(hold)
        emu.set_faults(Faults())

    thread = threading.Thread(target=heal, daemon=True)
    thread.start()
    return thread


# The per-request faults (30 % of answers together), plus task and result faults.
MIXED = Faults(
    rate_429=0.04,
    error_500=0.04,
    error_503=0.04,
    html_502=0.04,
    html_504=0.04,
    reset=0.04,
    slow=0.02,
    malformed_json=0.04,
    task_failed=0.1,
    expired_results=0.1,
)


@pytest.mark.parametrize(
    ("retry_after_format", "seed", "business_ids"),
    [
        ("seconds", 7, "honoured"),
        ("date", 11, "honoured"),
        ("seconds", 7, "ignored"),
        ("date", 11, "ignored"),
        ("seconds", 7, "delayed"),
    ],
)
def test_a_mixed_fault_matrix_ends_every_job_with_a_reason_and_pays_each_prompt_once(
    tmp_path: Path,
    emulator_factory: Callable[..., Emulator],
    retry_after_format: str,
    seed: int,
    business_ids: str,
) -> None:
    # Slow answers outlast the request timeout (the rules file's `[api] timeout`, cut to 1 s
    # here so that each one costs a second, not half a minute).
    faults = dataclasses.replace(
        MIXED,
        slow_seconds=1.5,
        retry_after_format=retry_after_format,
        business_ids=business_ids,
        business_id_delay=1.0,
    )
    emu = emulator_factory(latency=0.05, jitter=0.0, rate_limits=None, seed=seed, faults=faults)
    folder, state = tmp_path / "drop", tmp_path / "state"
    sources = _drop(folder, 30, "matrix")

    started = time.monotonic()
    code = _once(folder, state, emu, timeout=1.0)
    elapsed = time.monotonic() - started

    stats = emu.stats()
    states = _jobs(state)
    assert set(states) == set(sources)
    assert set(states.values()) <= {JobState.DONE, JobState.FAILED, JobState.AMBIGUOUS}
    created = Counter(s["prompt"] for s in stats["submissions"])
    assert max(created.values()) <= 1, created.most_common(3)
    for prompt, st in states.items():
        source = sources[prompt]
        if st is JobState.DONE:
            assert created[prompt] == 1 and _image(source) is not None
            assert not note_path(source).exists()
        else:
            assert note_path(source).read_text(encoding="utf-8").strip()
            assert _image(source) is None
    assert code == (0 if set(states.values()) == {JobState.DONE} else 1)
    if business_ids != "ignored":
        # Every lost answer was settled by looking its business id up.
        assert JobState.AMBIGUOUS not in states.values()
    injected = stats["faults_injected"]
    assert sum(injected.values()) > 0
    states_count = Counter(str(s) for s in states.values())
    record(
        f"fault_matrix_{business_ids}",
        {
            "runs": 1,
            "prompt_files": len(sources),
            "faults_injected": sum(injected.values()),
            "submit_requests": stats["submit_requests"],
            "tasks_created": len(stats["submissions"]),
            "jobs_done": states_count.get("done", 0),
            "jobs_failed": states_count.get("failed", 0),
            "jobs_ambiguous": states_count.get("ambiguous", 0),
            "duplicate_submissions": sum(n - 1 for n in created.values() if n > 1),
        },
    )
    print(
        f"\nfault matrix ({business_ids}, {retry_after_format}, seed {seed}): {elapsed:.1f} s, "
        f"{stats['submit_requests']} submit requests, {len(stats['submissions'])} created, "
        f"{stats['polls']} polls, {stats['downloads']} downloads; "
        f"jobs {dict(Counter(str(s) for s in states.values()))}; "
        f"faults injected {injected}; answers {stats['responses_by_status']}"
    )


def test_an_outage_delays_work_and_then_every_job_is_made_once(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state"
    sources = _drop(folder, 10, "outage")
    # The 60 s outage on demand (PROMPTDROP_LONG=1); 5 s in the quick suite.
    outage = 60.0 if os.environ.get("PROMPTDROP_LONG") else 5.0
    emulator.set_faults(Faults(outage=True))
    healer = _heal_after(emulator, lambda: True, hold=outage)

    started = time.monotonic()
    code = _once(folder, state, emulator, max_in_flight=4)
    elapsed = time.monotonic() - started
    healer.join()
    # Work resumes within one backoff cap (the client's RetryPolicy.cap, 30 s) of recovery.
    resumed_after = elapsed - outage
    assert resumed_after < 30.0 + 5.0

    stats = emulator.stats()
    assert code == 0
    assert Counter(s["prompt"] for s in stats["submissions"]) == Counter(list(sources))
    assert set(_jobs(state).values()) == {JobState.DONE}
    assert all(_image(s) is not None and not note_path(s).exists() for s in sources.values())
    refused = stats["responses_by_status"].get("503", 0)
    assert refused >= 1
    record(
        "outage",
        {
            "outage_seconds": round(outage, 1),
            "answers_503": refused,
            "finished_after_recovery_seconds": round(resumed_after, 1),
            "run_seconds": round(elapsed, 1),
            "submit_requests": stats["submit_requests"],
            "tasks_created": len(stats["submissions"]),
            "prompt_files": len(sources),
        },
    )
    print(
        f"\noutage of {outage:.1f} s: {refused} answers 503, run took {elapsed:.1f} s, "
        f"{stats['submit_requests']} submit requests, {len(stats['submissions'])} created"
    )


def test_an_empty_quota_pauses_submissions_then_work_resumes(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state"
    sources = _drop(folder, 5, "quota")
    emulator.set_faults(Faults(quota_exhausted=True))
    healer = _heal_after(
        emulator, lambda: any(note_path(s).exists() for s in sources.values()), hold=1.0
    )
    try:
        code = _once(folder, state, emulator, max_in_flight=1)
    finally:
        healer.join()
    stats = emulator.stats()
    refused = stats["responses_by_status"].get("402", 0)
    assert code == 0
    assert Counter(s["prompt"] for s in stats["submissions"]) == Counter(list(sources))
    # One refused POST per pause round, not one per file per retry.
    assert 1 <= refused <= 6
    assert set(_jobs(state).values()) == {JobState.DONE}
    assert not any(note_path(s).exists() for s in sources.values())
    record("refused_account", {"quota_402_refusals_for_5_files": refused})
    print(
        f"\nempty quota: {refused} POSTs refused with 402, "
        f"{stats['submit_requests']} submit requests for 5 files"
    )


def test_a_key_refused_while_polling_pauses_and_then_every_job_finishes(
    tmp_path: Path, emulator_factory: Callable[..., Emulator]
) -> None:
    # Tasks take 1 s, so the key can be refused after they were created and before they end.
    emu = emulator_factory(latency=1.0, jitter=0.0, rate_limits=None)
    folder, state = tmp_path / "drop", tmp_path / "state"
    sources = _drop(folder, 5, "pollkey")
    refused_from = threading.Event()

    def refuse_once_all_submitted() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(emu.stats()["submissions"]) < 5:
            time.sleep(0.01)
        emu.set_faults(Faults(auth_fail=True))
        refused_from.set()
        time.sleep(1.5)
        emu.set_faults(Faults())

    thread = threading.Thread(target=refuse_once_all_submitted, daemon=True)
    thread.start()
    try:
        code = _once(folder, state, emu, max_in_flight=5)
    finally:
        thread.join()
    stats = emu.stats()
    refused = stats["responses_by_status"].get("401", 0)
    assert refused_from.is_set()
    assert code == 0
    assert Counter(s["prompt"] for s in stats["submissions"]) == Counter(list(sources))
    assert refused >= 1
    assert set(_jobs(state).values()) == {JobState.DONE}
    assert all(_image(s) is not None and not note_path(s).exists() for s in sources.values())
    record("refused_account", {"key_401_at_poll_time": refused})
    print(
        f"\nkey refused at poll time: {refused} answers 401, {stats['polls']} polls, "
        f"{len(stats['submissions'])} created"
    )


# Answers slower than the timeout, one endpoint at a time, through a job's whole API path
# (upload a reference, submit, poll, download): what each endpoint does with a lost answer. The
# mixed matrix above has them at the daemon level, among the other faults.
TIMEOUT = 0.3
SLOW = 1.0  # how long the emulator holds the answer: well past TIMEOUT


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (20, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("endpoint", ["upload", "submit", "poll", "download"])
def test_an_answer_slower_than_the_timeout_is_retried_or_ambiguous_but_never_paid_twice(
    emulator_factory: Callable[..., Emulator], endpoint: str
) -> None:
    emu = emulator_factory(latency=0.2, jitter=0.0, rate_limits=None)
    retries: list[str] = []

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name == "retry":  # the first retry heals the emulator
            retries.append(str(fields["endpoint"]))
            emu.set_faults(Faults())

    async def job() -> Downloaded:
        async with ToApisClient(
            CANARY,
            emu.base_url,
            timeout=TIMEOUT,
            on_event=on_event,
            rate_limits=RateLimits.unlimited(),
            retry=RetryPolicy(attempts=3, base=0.01, cap=0.02),
        ) as client:
            emu.set_faults(Faults(slow=1.0, slow_seconds=SLOW, endpoints=(endpoint,)))
            ref = await client.upload_image(_png_bytes(), filename="ref.png", mime_type="image/png")
            task = await client.submit(
                model="nano-banana", prompt="slow answers", size="1:1", image_urls=[ref.url]
            )
            while task.status != "completed":
                await asyncio.sleep(0.05)
                task = await client.get_task(task.id)
            assert task.url is not None
            return await client.download(task.url)

    if endpoint == "submit":
        with pytest.raises(Ambiguous):
            asyncio.run(job())
        assert retries == []  # a submit whose answer was lost is never resent
    else:
        assert asyncio.run(job()).data
        assert retries == [{"poll": "task"}.get(endpoint, endpoint)]
    stats = emu.stats()
    assert stats["submit_requests"] == 1 and len(stats["submissions"]) == 1
    assert stats["faults_injected"] == {"slow": 1}
    record(
        "slow_answers",
        {
            f"{endpoint}_slower_than_timeout": "ambiguous, not resent"
            if endpoint == "submit"
            else "retried once, then done",
            "duplicate_submissions": 0,
        },
    )


def test_while_the_submit_limiter_is_down_running_tasks_finish_and_nothing_is_paid_twice(
    tmp_path: Path, emulator_factory: Callable[..., Emulator]
) -> None:
    """The documented 503 rate_limit_unavailable refuses submits only: the two jobs already
    running are polled and written while the other four wait, and each prompt is paid once."""
    # Tasks take 1 s, so the limiter can go down after the first two were created.
    emu = emulator_factory(latency=1.0, jitter=0.0, rate_limits=None)
    folder, state = tmp_path / "drop", tmp_path / "state"
    sources = _drop(folder, 6, "limiter")
    seen: dict[str, int] = {}

    def limiter_down_after_two_submits() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(emu.stats()["submissions"]) < 2:
            time.sleep(0.01)
        emu.set_faults(Faults(submit_limiter_down=True))
        # Down until the running tasks were downloaded and some submits were refused.
        while time.monotonic() < deadline:
            stats = emu.stats()
            if stats["downloads"] >= 2 and stats["faults_injected"].get("submit_limiter_down"):
                break
            time.sleep(0.02)
        stats = emu.stats()
        seen.update(
            downloads=stats["downloads"],
            created=len(stats["submissions"]),
            refused=stats["faults_injected"].get("submit_limiter_down", 0),
        )
        time.sleep(0.5)
        emu.set_faults(Faults())

    healer = threading.Thread(target=limiter_down_after_two_submits, daemon=True)
    healer.start()
    try:
        # Two in flight: the first two are running when the limiter goes down.
        code = _once(folder, state, emu, max_in_flight=2)
    finally:
        healer.join()
    stats = emu.stats()
    # While submits were refused, the two running tasks were polled to the end and fetched.
    assert seen["downloads"] >= 2 and seen["created"] == 2 and seen["refused"] >= 1
    assert code == 0
    assert Counter(s["prompt"] for s in stats["submissions"]) == Counter(list(sources))
    assert set(_jobs(state).values()) == {JobState.DONE}
    assert all(_image(s) is not None and not note_path(s).exists() for s in sources.values())
    print(
        f"\nsubmit limiter down: {seen['refused']} submits refused with 503 while "
        f"{seen['downloads']} running images were fetched; {stats['submit_requests']} submit "
        f"requests, {len(stats['submissions'])} created for {len(sources)} files"
    )
