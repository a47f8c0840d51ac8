"""The `watch --once` progress counts from what the engine reports, not from the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import CANARY, write_prompt
from promptdrop.api import ToApisClient
from promptdrop.emulator import Emulator
from promptdrop.jobs.engine import Engine, EngineOptions
from promptdrop.ledger import LEDGER_NAME, Ledger
from promptdrop.service.once import Progress
from promptdrop.spec import rules_for_folders


class CountingLedger(Ledger):
    """The real SQLite ledger, counting the queries that read it."""

    reads = 0

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self.reads += 1
        return super()._rows(sql, params)


def test_the_progress_counts_finished_images_without_reading_the_ledger_again(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    sources = [write_prompt(folder / f"p{i}.prompt.toml", f"picture {i}") for i in range(3)]
    bad = write_prompt(folder / "bad.prompt.toml", "bad", size="5:4")
    rule = rules_for_folders([folder]).rules[0]

    async def run() -> tuple[int, int, int, int]:
        ledger = CountingLedger(tmp_path / LEDGER_NAME)
        try:
            async with ToApisClient(CANARY, emulator.base_url) as client:
                engine = Engine(ledger, client, [rule], EngineOptions(poll_first=0.05))
                for path in [*sources, bad]:
                    await engine.handle_file(path, rule)
                progress = Progress(engine, [*sources, bad], enabled=False)
                await engine.wait_idle()
                before = ledger.reads
                for _ in range(5):
                    progress.update()  # what the pass does every second
                reads = ledger.reads - before
                await engine.drain()
                return progress.finished, progress.total, reads, len(sources)
        finally:
            ledger.close()

    finished, total, reads, made = asyncio.run(run())
    assert (finished, total) == (made + 1, made + 1)  # the refused file is one finished step
    assert reads == 0
