"""The engine in one process, on a real folder, a real ledger file and the emulator over TCP."""

from __future__ import annotations

import asyncio
import io
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from harness import CANARY
from promptdrop.api import ToApisClient
from promptdrop.api.ratelimit import RateLimits
from promptdrop.commands.retry import retry
from promptdrop.emulator import Emulator, Faults
from promptdrop.jobs.engine import Engine, EngineOptions
from promptdrop.jobs.timing import gone_checks
from promptdrop.ledger import LEDGER_NAME, JobState, Ledger
from promptdrop.outputs import note_path, read_provenance
from promptdrop.service.runner import WatchOptions, engine_options, rate_limits, run
from promptdrop.spec import RulesFile, rules_for_folders

FAST = EngineOptions(
    poll_first=0.05, poll_interval=0.05, retry_later=0.2, pause_first=0.3, pause_cap=0.6
)


def _opts(
    folder: Path,
    state: Path,
    emu: Emulator,
    *,
    max_in_flight: int = 4,
    resubmit_ambiguous: bool = False,
) -> WatchOptions:
    rules = rules_for_folders([folder])
    rules.rules[0] = rules.rules[0].model_copy(
        update={"max_in_flight": max_in_flight, "resubmit_ambiguous": resubmit_ambiguous}
    )
    return WatchOptions(
        rules=rules, state_dir=state, api_key=CANARY, base_url=emu.base_url, once=True, engine=FAST
    )


def _once(
    folder: Path,
    state: Path,
    emu: Emulator,
    *,
    max_in_flight: int = 4,
    resubmit_ambiguous: bool = False,
) -> int:
    opts = _opts(
        folder, state, emu, max_in_flight=max_in_flight, resubmit_ambiguous=resubmit_ambiguous
    )
    return asyncio.run(run(opts))


def _png(path: Path, colour: tuple[int, int, int] = (10, 200, 30)) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "PNG")
    path.write_bytes(buf.getvalue())


def test_once_makes_every_image_with_provenance_and_exits_zero(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "cat.prompt.toml").write_text('prompt = "a cat"\nsize = "16:9"\n')
    (folder / "dogs.prompt.toml").write_text('prompt = "two dogs"\ncount = 2\n')

    assert _once(folder, tmp_path / "state", emulator) == 0

    cat = folder / "cat.png"
    with Image.open(cat) as img:
        assert img.size == (1792, 1024)
    info = read_provenance(cat.read_bytes())
    assert info["promptdrop:prompt"] == "a cat"
    assert info["promptdrop:source"] == "cat.prompt.toml"
    assert info["promptdrop:task_id"].startswith(("task_img_", "img_", "tsk_img_"))
    assert (folder / "dogs-1.png").exists() and (folder / "dogs-2.png").exists()
    assert sorted(s["prompt"] for s in emulator.stats()["submissions"]) == [
        "a cat",
        "two dogs",
        "two dogs",
    ]


def test_a_second_run_on_unchanged_files_pays_nothing(tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.prompt.toml").write_text('prompt = "a"\n')
    assert _once(folder, tmp_path / "state", emulator) == 0
    os.utime(folder / "a.prompt.toml")
    assert _once(folder, tmp_path / "state", emulator) == 0
    assert len(emulator.stats()["submissions"]) == 1


def test_a_reference_shared_by_many_prompts_is_uploaded_once(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _png(folder / "style.png")
    for i in range(10):
        (folder / f"p{i}.prompt.toml").write_text(
            f'prompt = "variation {i}"\nreferences = ["style.png"]\n'
        )
    assert _once(folder, tmp_path / "state", emulator) == 0
    stats = emulator.stats()
    assert len(stats["uploads"]) == 1
    assert len(stats["submissions"]) == 10
    assert all(
        s["image_urls"] == [s0]
        for s in stats["submissions"]
        for s0 in [stats["submissions"][0]["image_urls"][0]]
    )


def test_a_lost_submit_answer_is_ambiguous_noted_and_never_resent(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    source = folder / "lost.prompt.toml"
    source.write_text('prompt = "lost answer"\n')
    # An API that ignores client_business_id: nothing can settle the lost answer.
    emulator.set_faults(Faults(reset=1.0, endpoints=("submit",), business_ids="ignored"))

    assert _once(folder, tmp_path / "state", emulator) == 1
    assert len(emulator.stats()["submissions"]) == 1  # the task was created behind the reset
    assert "may or may not have been made" in note_path(source).read_text()

    emulator.set_faults(Faults(business_ids="ignored"))
    assert _once(folder, tmp_path / "state", emulator) == 1  # still ambiguous: not resent
    assert len(emulator.stats()["submissions"]) == 1

    with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
        assert retry(ledger, source, io.StringIO()) == 1
    assert _once(folder, tmp_path / "state", emulator) == 0
    assert len(emulator.stats()["submissions"]) == 2
    assert (folder / "lost.png").exists()
    assert not note_path(source).exists()


def test_rules_may_opt_in_to_resubmitting_ambiguous_jobs(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "x.prompt.toml").write_text('prompt = "opt in"\n')
    emulator.set_faults(Faults(html_502=1.0, endpoints=("submit",), business_ids="ignored"))
    assert _once(folder, tmp_path / "state", emulator) == 1
    emulator.set_faults(Faults(business_ids="ignored"))
    assert _once(folder, tmp_path / "state", emulator, resubmit_ambiguous=True) == 0
    assert len(emulator.stats()["submissions"]) == 2


def test_a_refused_key_pauses_submissions_then_work_resumes(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    for i in range(5):
        (folder / f"k{i}.prompt.toml").write_text(f'prompt = "key test {i}"\n')
    emulator.set_faults(Faults(auth_fail=True))
    note = note_path(folder / "k0.prompt.toml")

    def heal() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            note_path(folder / f"k{i}.prompt.toml").exists() for i in range(5)
        ):
            time.sleep(0.05)
        time.sleep(1.0)
        emulator.set_faults(Faults())

    healer = threading.Thread(target=heal)
    healer.start()
    try:
        assert _once(folder, tmp_path / "state", emulator, max_in_flight=1) == 0
    finally:
        healer.join()
    stats = emulator.stats()
    assert len(stats["submissions"]) == 5
    # One refused POST per pause round (about 3 in the second of refusals), not one per file
    # per retry: with five files and no pause there would be dozens.
    refused = stats["responses_by_status"].get("401", 0)
    assert 1 <= refused <= 6
    assert not note.exists()
    with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
        assert {j.state for j in ledger.jobs()} == {JobState.DONE}


def test_an_api_refusal_fails_the_job_with_the_api_message(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    source = folder / "bad.prompt.toml"
    source.write_text('prompt = "will fail"\n')
    emulator.set_faults(Faults(task_failed=1.0))
    assert _once(folder, tmp_path / "state", emulator) == 1
    text = note_path(source).read_text()
    assert "upstream returned status 422" in text
    assert not list(folder.glob("bad.*g"))


def test_demo_command_makes_the_example_images(tmp_path: Path) -> None:
    """The README's first command, minus the install: `promptdrop demo`."""
    demo = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "promptdrop", "demo", str(demo)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TOAPIS_API_KEY": ""},
    )
    assert proc.returncode == 0, proc.stderr
    prompts = list(demo.glob("*.prompt.toml"))
    assert len(prompts) >= 4
    images = [p for p in demo.iterdir() if p.suffix in (".png", ".jpg") and p.name != "sketch.png"]
    assert len(images) >= len(prompts)
    for image in images:
        with Image.open(image) as img:
            img.load()
    assert "paid submissions" in proc.stdout


# --- poll timing and submit rate from the rules file ----------------------------------------


def _rules_with_api(folder: Path, **api: object) -> RulesFile:
    rules = rules_for_folders([folder])
    return rules.model_copy(update={"api": rules.api.model_copy(update=api)})


def test_the_rules_files_poll_timing_applies_unless_the_caller_sets_its_own(tmp_path: Path) -> None:
    rules = _rules_with_api(tmp_path, poll_first=0.3, poll_interval=7.0)

    def chosen(engine: EngineOptions) -> tuple[float | None, float | None]:
        got = engine_options(
            WatchOptions(rules=rules, state_dir=tmp_path, api_key=CANARY, engine=engine)
        )
        return got.poll_first, got.poll_interval

    # What `watch` passes when --poll-interval is not given: the rules file decides.
    assert chosen(EngineOptions()) == (0.3, 7.0)
    # Given on the command line, even at the usual 5 s, it wins.
    assert chosen(EngineOptions(poll_first=5.0, poll_interval=5.0)) == (5.0, 5.0)
    assert chosen(EngineOptions(poll_first=1.0, poll_interval=1.0)) == (1.0, 1.0)
    assert chosen(FAST) == (0.05, 0.05)


def test_a_submit_rate_in_the_rules_file_sets_the_clients_submit_limit(tmp_path: Path) -> None:
    group = RateLimits.for_group("vip")
    assert rate_limits(_rules_with_api(tmp_path, account_group="vip").api) == group
    mine = rate_limits(_rules_with_api(tmp_path, account_group="vip", submit_rate=2.5).api)
    assert (mine.submit_per_s, mine.submit_burst_10s) == (2.5, 25)
    assert (mine.query_per_s, mine.query_burst_10s) == (group.query_per_s, group.query_burst_10s)


def test_a_short_poll_first_in_the_rules_file_delivers_a_quick_image_quickly(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "quick.prompt.toml").write_text('prompt = "a quick one"\n')
    opts = WatchOptions(
        rules=_rules_with_api(folder, poll_first=0.1, poll_interval=0.1),
        state_dir=tmp_path / "state",
        api_key=CANARY,
        base_url=emulator.base_url,
        once=True,
    )
    started = time.monotonic()
    assert asyncio.run(run(opts)) == 0
    # The docs' default (5 s before the first poll) would take longer than this.
    assert time.monotonic() - started < 4.0
    assert (folder / "quick.png").exists()


def test_the_first_poll_is_spread_by_at_most_five_percent_and_later_ones_by_twenty(
    tmp_path: Path,
) -> None:
    random.seed(7)

    async def waits() -> tuple[list[float], list[float], float]:
        with Ledger(tmp_path / LEDGER_NAME) as ledger:
            async with ToApisClient(CANARY, "http://127.0.0.1:9") as client:
                engine = Engine(
                    ledger, client, [], EngineOptions(poll_first=2.0, poll_interval=10.0)
                )
                firsts, laters = [], []
                for job_id in range(500):
                    engine._fresh.add(job_id)
                    firsts.append(engine._poll_wait(job_id))
                    laters.append(engine._poll_wait(job_id))
                engine._polled.clear()
                resumed = engine._poll_wait(1)  # not submitted by this process: at once
                return firsts, laters, resumed

    firsts, laters, resumed = asyncio.run(waits())
    assert all(2.0 <= w <= 2.1 for w in firsts)
    assert all(10.0 <= w <= 12.0 for w in laters)
    assert max(laters) > 11.0  # later polls still spread out
    assert resumed == 0.0


def test_taking_up_a_prompt_file_records_it_and_all_its_jobs_in_one_go(tmp_path: Path) -> None:
    with Ledger(tmp_path / LEDGER_NAME) as ledger:
        request = {"prompt": "three", "references": []}
        jobs = ledger.take_up(
            tmp_path / "three.prompt.toml",
            rule="r",
            content_sha256="c1",
            request_hash="h" * 64,
            image_count=3,
            request=request,
        )
        assert [(j.image_index, j.state) for j in jobs] == [
            (1, JobState.PENDING),
            (2, JobState.PENDING),
            (3, JobState.PENDING),
        ]
        source = ledger.get_source(tmp_path / "three.prompt.toml")
        assert source is not None and (source.status, source.image_count) == ("active", 3)
        ledger.transition(jobs[0].id, JobState.PENDING, JobState.SUBMITTING)
        # Again, with fewer images: the same jobs, unchanged, and no new ones.
        again = ledger.take_up(
            tmp_path / "three.prompt.toml",
            rule="r",
            content_sha256="c2",
            request_hash="h" * 64,
            image_count=2,
            request=request,
        )
        assert [(j.id, j.state) for j in again] == [
            (jobs[0].id, JobState.SUBMITTING),
            (jobs[1].id, JobState.PENDING),
        ]
        assert len(ledger.jobs()) == 3


def test_a_prompt_file_is_settled_only_when_each_image_is_done_and_written_for_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "two.prompt.toml"
    with Ledger(tmp_path / LEDGER_NAME) as ledger:
        jobs = ledger.take_up(
            source,
            rule="r",
            content_sha256="c1",
            request_hash="h" * 64,
            image_count=2,
            request={"prompt": "two", "references": []},
        )
        assert not ledger.is_settled(source, "c1")
        for job in jobs:
            for src, dst in (
                (JobState.PENDING, JobState.SUBMITTING),
                (JobState.SUBMITTING, JobState.RUNNING),
                (JobState.RUNNING, JobState.DOWNLOADING),
                (JobState.DOWNLOADING, JobState.DONE),
            ):
                job = ledger.transition(job.id, src, dst)
            if job.image_index == 1:
                ledger.record_output(
                    tmp_path / "two-1.png", job=job, source_path=source, sha256="s1", fmt="png"
                )
        assert not ledger.is_settled(source, "c1")  # image 2 was never written for it
        ledger.record_output(
            tmp_path / "two-2.png",
            job=ledger.get_job(jobs[1].id),
            source_path=source,
            sha256="s2",
            fmt="png",
        )
        assert ledger.is_settled(source, "c1")
        assert not ledger.is_settled(source, "c2")  # other bytes: read it again
        assert not ledger.is_settled(tmp_path / "copy.prompt.toml", "c1")
        ledger.set_source_status(source, "retry")
        assert not ledger.is_settled(source, "c1")


# --- a task the API no longer knows ----------------------------------------------------------


def test_a_task_the_api_forgot_fails_after_a_few_confirmations_and_is_never_resent(
    tmp_path: Path, emulator: Emulator, emulator_factory: Callable[..., Emulator]
) -> None:
    """Submitted to one emulator, resumed against a fresh one that never heard of the task."""
    folder = tmp_path / "drop"
    folder.mkdir()
    source = folder / "forgotten.prompt.toml"
    source.write_text('prompt = "a task the API forgets"\n')
    rule = rules_for_folders([folder]).rules[0]
    fresh = emulator_factory(latency=0.05, jitter=0.0, rate_limits=None)
    window = 0.4

    async def main() -> tuple[JobState, str | None, float]:
        with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
            async with ToApisClient(CANARY, emulator.base_url) as client:
                first = Engine(ledger, client, [rule], EngineOptions(poll_first=60.0))
                await first.handle_file(source, rule)
                deadline = time.monotonic() + 10
                while ledger.jobs()[0].state is not JobState.RUNNING:
                    assert time.monotonic() < deadline, "never submitted"
                    await asyncio.sleep(0.02)
                await first.drain()
            async with ToApisClient(CANARY, fresh.base_url) as client:
                again = Engine(
                    ledger,
                    client,
                    [rule],
                    EngineOptions(poll_first=0.05, poll_interval=0.05, gone_window=window),
                )
                started = time.monotonic()
                again.resume()
                await asyncio.wait_for(again.wait_idle(), timeout=30)
                job = ledger.jobs()[0]
                return job.state, job.error, time.monotonic() - started

    state, error, took = asyncio.run(main())
    assert state is JobState.FAILED
    assert error is not None and "no longer knows this task" in error
    text = note_path(source).read_text()
    assert "no longer knows this task" in text and "promptdrop retry" in text
    assert "paid again" in text
    assert len(emulator.stats()["submissions"]) == 1
    stats = fresh.stats()
    assert stats["submissions"] == [] and stats["submit_requests"] == 0  # never resent
    assert stats["polls"] == 1 + gone_checks()  # the first answer, then the confirmations
    assert took >= window * 0.9  # spread over the window, not given up at the first answer
    assert not list(folder.glob("forgotten.*g"))
