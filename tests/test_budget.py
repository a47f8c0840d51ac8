"""Daily budgets: the engine in one process, a real ledger file, the emulator over TCP, and an
injected clock so a test can move to tomorrow without waiting a day."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from harness import CANARY
from promptdrop.api import RateLimits, RetryPolicy, ToApisClient
from promptdrop.commands.status import print_status
from promptdrop.config.prices import Prices
from promptdrop.emulator import Emulator, Faults
from promptdrop.jobs import budget
from promptdrop.jobs.engine import Engine, EngineOptions, day_start, next_day
from promptdrop.ledger import LEDGER_NAME, JobState, Ledger
from promptdrop.outputs import note_path
from promptdrop.service.runner import WatchOptions, run, scan
from promptdrop.spec import RuleConfig, rules_for_folders

FAST = EngineOptions(
    poll_first=0.05,
    poll_interval=0.05,
    retry_later=0.1,
    pause_first=0.3,
    pause_cap=0.6,
    budget_check=0.05,
)
S = JobState


class Clock:
    """A clock the test moves by hand; starts at noon today (local time)."""

    def __init__(self) -> None:
        self.now = day_start(time.time()) + 12 * 3600

    def __call__(self) -> float:
        return self.now

    def tomorrow(self) -> None:
        self.now = next_day(self.now) + 60


def _rule(folder: Path, budget: int | None, *, max_in_flight: int = 10) -> RuleConfig:
    rule = rules_for_folders([folder]).rules[0]
    return rule.model_copy(update={"daily_budget": budget, "max_in_flight": max_in_flight})


@asynccontextmanager
async def _engine(
    state: Path,
    emu: Emulator,
    rule: RuleConfig,
    clock: Clock,
    *,
    options: EngineOptions = FAST,
    retry: RetryPolicy | None = None,
    prices: Prices | None = None,
) -> AsyncIterator[Engine]:
    ledger = Ledger(state / LEDGER_NAME, clock=clock)
    try:
        ledger.recover()
        async with ToApisClient(
            CANARY, emu.base_url, rate_limits=RateLimits.unlimited(), retry=retry
        ) as client:
            engine = Engine(ledger, client, [rule], options, clock=clock, prices=prices)
            try:
                yield engine
            finally:
                await engine.drain()
    finally:
        ledger.close()


async def _take_up(engine: Engine, rule: RuleConfig) -> None:
    engine.resume()
    for path in scan(rule):
        await engine.handle_file(path, rule)


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _prompts(folder: Path, n: int, extra: str = "") -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.prompt.toml"
        path.write_text(f'prompt = "picture number {i}"\n{extra}')
        paths.append(path)
    return paths


def _submitted(emu: Emulator) -> int:
    return len(emu.stats()["submissions"])


def _waiting_notes(paths: list[Path]) -> list[Path]:
    return [
        p for p in paths if note_path(p).exists() and "daily budget" in note_path(p).read_text()
    ]


def _made(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.with_name(p.name.replace(".prompt.toml", ".png")).exists()]


def test_a_spent_budget_makes_the_rest_wait_with_a_note_and_status_says_so(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 5)
    rule = _rule(folder, 3)
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert engine.budget_left(rule.name) == 0
            assert engine.ledger.state_counts() == {"done": 3, "waiting": 2}

    asyncio.run(main())
    assert _submitted(emulator) == 3
    waiting = _waiting_notes(paths)
    assert len(waiting) == 2 and not set(waiting) & set(_made(paths))
    text = note_path(waiting[0]).read_text()
    assert "daily budget of 3 images is used up" in text and "00:00" in text
    assert "Nothing was sent or paid" in text
    out = io.StringIO()
    with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
        print_status(ledger, out, as_json=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "jobs: 3 done, 2 waiting"
    assert sum(1 for line in lines if line.startswith("waiting") and "budget" in line) == 2


def test_at_midnight_waiting_files_start_by_themselves_within_each_days_budget(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 5)
    rule = _rule(folder, 2)
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert _submitted(emulator) == 2
            await asyncio.sleep(0.3)  # the timer ticks many times: still today, nothing starts
            assert _submitted(emulator) == 2

            clock.tomorrow()  # the engine's own timer notices: no restart, no call from here
            await _until(lambda: len(_made(paths)) == 4, "the second day's images")
            await asyncio.sleep(0.3)
            assert _submitted(emulator) == 4
            assert engine.ledger.state_counts() == {"done": 4, "waiting": 1}
            assert len(_waiting_notes(paths)) == 1

            clock.tomorrow()
            await _until(lambda: len(_made(paths)) == 5, "the third day's image")
            await engine.wait_idle()

    asyncio.run(main())
    assert _submitted(emulator) == 5
    assert not any(note_path(p).exists() for p in paths)  # each note went when its file started


def test_waiting_jobs_survive_a_restart_and_start_on_the_next_day(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 4)
    rule = _rule(folder, 2)
    clock = Clock()
    slow = EngineOptions(poll_first=0.05, poll_interval=0.05, budget_check=3600.0)

    async def first_day() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, options=slow) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()

    async def restart() -> dict[str, int]:
        async with _engine(tmp_path / "state", emulator, rule, clock, options=slow) as engine:
            engine.resume()  # what the daemon does at start, before its first scan
            await engine.wait_idle()
            return engine.ledger.state_counts()

    asyncio.run(first_day())
    assert _submitted(emulator) == 2
    assert asyncio.run(restart()) == {"done": 2, "waiting": 2}  # same day: still waiting
    assert _submitted(emulator) == 2
    clock.tomorrow()
    assert asyncio.run(restart()) == {"done": 4}
    assert _submitted(emulator) == 4
    assert len(_made(paths)) == 4 and not _waiting_notes(paths)


def test_many_jobs_reaching_the_last_unit_of_budget_at_once_submit_only_the_budget(
    tmp_path: Path, emulator: Emulator
) -> None:
    """The references make every job await an upload between its first budget look and its
    intent: only the check made together with the commit keeps the count right."""
    folder = tmp_path / "drop"
    folder.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, "PNG")
    (folder / "style.png").write_bytes(buf.getvalue())
    paths = _prompts(folder, 10, 'references = ["style.png"]\n')
    rule = _rule(folder, 2)
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            counts = engine.ledger.state_counts()
            assert counts == {"done": 2, "waiting": 8}

    asyncio.run(main())
    assert _submitted(emulator) == 2
    assert len(_waiting_notes(paths)) == 8


def test_a_submission_the_api_refused_does_not_use_up_the_budget(
    tmp_path: Path, emulator: Emulator
) -> None:
    """429s create nothing: the intents they cost are given back to the day's budget."""
    folder = tmp_path / "drop"
    paths = _prompts(folder, 2)
    rule = _rule(folder, 2)
    clock = Clock()
    emulator.set_faults(Faults(rate_429=1.0, endpoints=("submit",)))

    async def main() -> None:
        async with _engine(
            tmp_path / "state", emulator, rule, clock, retry=RetryPolicy(attempts=1)
        ) as engine:
            await _take_up(engine, rule)
            await _until(lambda: emulator.stats()["submit_requests"] >= 4, "refused submits")
            emulator.set_faults(Faults())
            await engine.wait_idle()
            intents = sum(
                1
                for job in engine.ledger.jobs()
                for e in engine.ledger.events(job.id)
                if e["to_state"] == "submitting"
            )
            assert intents >= 4  # the refused ones were real intents, counted and given back
            assert engine.budget_left(rule.name) == 0

    asyncio.run(main())
    assert _submitted(emulator) == 2
    assert len(_made(paths)) == 2


def test_deleting_a_waiting_file_fails_its_job_and_bringing_it_back_waits_again(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 2)
    rule = _rule(folder, 1)
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            [job] = engine.ledger.jobs(S.WAITING)
            [waiting] = _waiting_notes(paths)
            text = waiting.read_text()
            waiting.unlink()
            engine.handle_deleted(waiting)
            failed = engine.ledger.get_job(job.id)
            assert failed.state is S.FAILED and "deleted or changed" in (failed.error or "")
            assert engine.recheck_budgets() == 0

            waiting.write_text(text)
            await engine.handle_file(waiting, rule)
            await engine.wait_idle()
            assert engine.ledger.get_job(job.id).state is S.WAITING
            assert _waiting_notes([waiting]) == [waiting]

            clock.tomorrow()
            assert engine.recheck_budgets() == 1
            await engine.wait_idle()
            assert engine.ledger.get_job(job.id).state is S.DONE

    asyncio.run(main())
    assert _submitted(emulator) == 2


def test_raising_the_budget_on_reload_starts_waiting_files_at_once(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 3)
    rule = _rule(folder, 1)
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert _submitted(emulator) == 1
            engine.update_rules([rule.model_copy(update={"daily_budget": 2})])
            await engine.wait_idle()
            assert engine.ledger.state_counts() == {"done": 2, "waiting": 1}
            engine.update_rules([rule.model_copy(update={"daily_budget": None})])
            await engine.wait_idle()

    asyncio.run(main())
    assert _submitted(emulator) == 3 and len(_made(paths)) == 3


def test_once_exits_0_when_the_only_unfinished_files_wait_for_the_budget(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    state.mkdir()
    _prompts(folder, 3)
    rules = rules_for_folders([folder])
    rules.rules[0] = _rule(folder, 2)
    opts = WatchOptions(
        rules=rules,
        state_dir=state,
        api_key=CANARY,
        base_url=emulator.base_url,
        once=True,
        engine=FAST,
    )

    assert asyncio.run(run(opts)) == 0

    assert _submitted(emulator) == 2
    with Ledger(state / LEDGER_NAME) as ledger:
        assert sorted(j.state for j in ledger.jobs()) == sorted([S.DONE, S.DONE, S.WAITING])


# --- the pure rules, with the clock passed in -----------------------------------------------

_NOON = datetime(2025, 3, 14, 12, 0).timestamp()


@pytest.mark.parametrize(
    ("at", "start", "end"),
    [
        (datetime(2025, 3, 14, 12, 0), datetime(2025, 3, 14), datetime(2025, 3, 15)),
        (datetime(2025, 3, 14, 0, 0), datetime(2025, 3, 14), datetime(2025, 3, 15)),
        (datetime(2025, 3, 14, 23, 59, 59), datetime(2025, 3, 14), datetime(2025, 3, 15)),
        (datetime(2025, 12, 31, 18, 0), datetime(2025, 12, 31), datetime(2026, 1, 1)),
        (datetime(2024, 2, 28, 9, 0), datetime(2024, 2, 28), datetime(2024, 2, 29)),
    ],
)
def test_a_day_runs_from_local_midnight_to_the_next(
    at: datetime, start: datetime, end: datetime
) -> None:
    assert budget.day_start(at.timestamp()) == start.timestamp()
    assert budget.next_day(at.timestamp()) == end.timestamp()


@pytest.mark.parametrize(
    ("limit", "spent", "left", "room"),
    [
        (None, 0, None, True),
        (None, 1000, None, True),
        (3, 0, 3, True),
        (3, 2, 1, True),
        (3, 3, 0, False),
        (3, 5, 0, False),  # a budget lowered under today's spending has no room, never less
        (0, 0, 0, False),
    ],
)
def test_the_budget_left_is_the_limit_less_what_was_spent_today(
    limit: int | None, spent: int, left: int | None, room: bool
) -> None:
    assert budget.budget_left(limit, spent) == left
    assert budget.has_room(left) is room


@pytest.mark.parametrize(
    ("now", "every", "wait"),
    [
        (_NOON, 60.0, 60.0),  # midnight is far: look again within a minute anyway
        (budget.next_day(_NOON) - 5, 60.0, 5.0),  # midnight comes first
        (budget.next_day(_NOON) - 0.001, 60.0, 0.01),  # never a busy loop
    ],
)
def test_waiting_jobs_are_looked_at_at_midnight_or_every_so_often(
    now: float, every: float, wait: float
) -> None:
    assert budget.next_check(now, every) == pytest.approx(wait)
