"""The learned first poll through a real engine, the emulator over loopback and a real ledger:
with no first-poll time set, the first tasks are polled after the docs' 5 s, and once three of a
kind are done the next ones are polled near the time those took (the emulator's own
created_at/completed_at), never sooner than the floor."""

from __future__ import annotations

import asyncio
from pathlib import Path

from promptdrop.emulator import Emulator
from promptdrop.jobs.engine import EngineOptions
from promptdrop.jobs.timing import FIRST_POLL_FLOOR
from test_budget import Clock, _engine, _prompts, _rule, _take_up

LEARNING = EngineOptions(poll_interval=0.05, retry_later=0.2, drain_timeout=2.0)


def test_the_first_poll_is_learned_from_three_done_tasks(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    _prompts(folder, 3)
    rule = _rule(folder, None, max_in_flight=3)
    kind = ("gemini-2.5-flash-image-preview", "1K")

    async def main() -> tuple[float, float, int]:
        async with _engine(tmp_path / "state", emulator, rule, Clock(), options=LEARNING) as engine:
            engine._fresh.add(10_001)
            before = engine._poll_wait(10_001, kind)  # nothing learned: the advice
            await _take_up(engine, rule)
            await engine.wait_idle()
            engine._fresh.add(10_002)
            after = engine._poll_wait(10_002, kind)
            return before, after, len(engine._task_times[kind])

    before, after, learned = asyncio.run(main())
    assert 5.0 <= before <= 5.0 * 1.05
    assert learned == 3
    # The emulator's tasks take 0.05 s: created_at == completed_at in whole seconds.
    assert FIRST_POLL_FLOOR <= after <= FIRST_POLL_FLOOR * 1.05
    assert len(emulator.stats()["submissions"]) == 3
