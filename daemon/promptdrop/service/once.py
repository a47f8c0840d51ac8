"""`promptdrop watch --once`: one pass over every prompt file present, then exit.

Each rule's root is scanned (off the event loop: a root may be on a slow share), every file is
handed to the engine, and the pass waits until the engine is idle. The exit code says whether
every file's images were made or wait for the next day's budget (0), or some failed, are held
for a missing price, or the pass was stopped (1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from promptdrop import logs
from promptdrop.jobs.credits import Verdict
from promptdrop.jobs.engine import Engine
from promptdrop.jobs.gate import Gate, paused_rules
from promptdrop.ledger import FINAL, JobState
from promptdrop.service.config import WatchOptions
from promptdrop.service.lifecycle import Flags, installed_signals
from promptdrop.spec import RuleConfig
from promptdrop.watch import is_conflict_copy

log = structlog.get_logger("promptdrop.service")
PROGRESS_EVERY = 1.0  # how often the progress bar (or line) is brought up to date
LOG_EVERY = 10.0  # without a terminal: seconds between two progress log lines

Scan = Callable[[RuleConfig], Iterator[Path]]


async def run_once(engine: Engine, opts: WatchOptions, scan: Scan) -> int:
    """Hand every prompt file `scan` finds under the rules' roots to the engine and wait for
    their images; 0 when all were made (or wait for tomorrow's budget), else 1."""
    flags = Flags()
    with installed_signals(flags):
        return await _one_pass(engine, opts, scan, flags)


async def _one_pass(engine: Engine, opts: WatchOptions, scan: Scan, flags: Flags) -> int:
    # A rule held by `promptdrop pause` keeps its jobs pending for the next run: the pass ends.
    engine.options = dataclasses.replace(engine.options, wait_while_paused=False)
    engine.resume()
    sources = await _hand_over(engine, opts.rules.rules, scan)
    log.info("scan done", prompt_files=len(sources))
    if not await _wait_idle(engine, sources, flags, progress=opts.progress):
        log.info("stopping on signal; running tasks resume on the next start")
        await engine.drain()
        return 1
    # Stop the engine's timers (the budget's midnight wake-up) before the ledger is closed.
    await engine.drain()
    waiting = waiting_sources(engine, sources)
    if waiting:
        log.info(
            "files wait for the next day's budget; run again tomorrow, or keep the daemon running",
            files=waiting,
        )
    paused = paused_sources(engine, sources)
    if paused:
        log.warning(
            "files not submitted: their rule is paused by promptdrop pause",
            files=paused,
            rules=paused_rules(engine.user_pauses),
            undo="promptdrop resume",
        )
    held = held_sources(engine, sources)
    if held:
        log.warning(
            "files held: no price for their model and resolution, or dearer than a whole "
            "day's daily_credits",
            files=held,
            fix="add the price under [prices] or raise daily_credits in the rules file",
        )
    return 0 if all_done(engine, sources) and not held else 1


async def _hand_over(engine: Engine, rules: list[RuleConfig], scan: Scan) -> list[Path]:
    """Every prompt file found, handed to the engine; returns them (conflict copies aside)."""
    sources: list[Path] = []
    for rule in rules:
        for path in await asyncio.to_thread(_listed, scan, rule):
            if is_conflict_copy(path.name):
                engine.handle_conflict(path, rule)
                continue
            sources.append(path)
            await engine.handle_file(path, rule)
    return sources


async def _wait_idle(engine: Engine, sources: list[Path], flags: Flags, *, progress: bool) -> bool:
    """Wait for the engine to be idle, showing progress; False when a signal stopped it."""
    waiter = asyncio.ensure_future(engine.wait_idle())
    stopped = asyncio.ensure_future(flags.stop.wait())
    bar = Progress(engine, sources, enabled=progress)
    try:
        while not waiter.done():
            await asyncio.wait(
                {waiter, stopped}, timeout=PROGRESS_EVERY, return_when=asyncio.FIRST_COMPLETED
            )
            bar.update()
            if flags.stop.is_set():
                return False
        return True
    finally:
        bar.close()
        waiter.cancel()
        stopped.cancel()


def _listed(scan: Scan, rule: RuleConfig) -> list[Path]:
    return list(scan(rule))


def jobs_of(engine: Engine, path: Path) -> tuple[str, list[JobState]]:
    """A prompt file's status in the ledger and the states of the jobs it asks for now."""
    src = engine.ledger.get_source(path)
    if src is None:
        return "unknown", []
    if src.status != "active" or not src.request_hash:
        return src.status, []
    states = [
        j.state
        for j in engine.ledger.jobs_for_request(src.request_hash)
        if j.image_index <= (src.image_count or 1)
    ]
    return src.status, states


def waiting_sources(engine: Engine, sources: list[Path]) -> int:
    """How many of `sources` have a job held back by a spent daily budget."""
    return sum(1 for p in sources if JobState.WAITING in jobs_of(engine, p)[1])


def held_sources(engine: Engine, sources: list[Path]) -> int:
    """How many of `sources` have a waiting job no new day would start: its model and
    resolution have no price while credits are counted, or it costs more than a whole day's
    credits. Those are not what the rule asked for: --once then exits 1."""
    stuck = (Verdict.UNPRICED, Verdict.TOO_DEAR)
    n = 0
    for path in sources:
        src = engine.ledger.get_source(path)
        if src is None or src.status != "active" or not src.request_hash:
            continue
        jobs = engine.ledger.jobs_for_request(src.request_hash)
        if any(
            j.state is JobState.WAITING
            and j.image_index <= (src.image_count or 1)
            and engine.verdict(j) in stuck
            for j in jobs
        ):
            n += 1
    return n


def paused_sources(engine: Engine, sources: list[Path]) -> int:
    """How many of `sources` have a job left pending because `promptdrop pause` holds it."""
    n = 0
    for path in sources:
        src = engine.ledger.get_source(path)
        if src is None or src.status != "active" or not src.request_hash:
            continue
        jobs = engine.ledger.jobs_for_request(src.request_hash)
        if any(j.image_index <= (src.image_count or 1) and engine.paused_by_user(j) for j in jobs):
            n += 1
    return n


def all_done(engine: Engine, sources: list[Path]) -> bool:
    """Whether every source is valid and each of its jobs is done, or waits for the budget or
    for `promptdrop resume`."""
    ok = True
    for path in sources:
        status, states = jobs_of(engine, path)
        src = engine.ledger.get_source(path)
        # Waiting for tomorrow's budget or a resume is not a failure: the user asked for it.
        fine = [JobState.DONE, JobState.WAITING]
        gate = engine.submit_decision(src.rule).gate if src is not None else Gate.GO
        if gate in (Gate.RULE_PAUSED, Gate.ALL_PAUSED):
            fine += [JobState.PENDING, JobState.UPLOADING]
        if status != "active" or any(s not in fine for s in states):
            ok = False
    return ok


class Progress:
    """A progress bar on a terminal; a log line every 10 s otherwise.

    Counted in memory: the ledger is read once, when every file has been handed over; from then
    on the engine says which jobs finished (`EngineObserver.job_finished`). While the bar is
    shown, log lines are written above it (`logs.around_bars`), never over it.
    """

    def __init__(self, engine: Engine, sources: list[Path], *, enabled: bool) -> None:
        self.total = 0
        self.finished = 0
        self._open: dict[int, int] = {}  # unfinished job id -> how many of the sources want it
        for path in sources:
            self._count(engine, path)
        engine.observe(self)
        self.bar: Any = None
        self.last_log = time.monotonic()
        self._bars = contextlib.ExitStack()
        if enabled:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self._bars.enter_context(logs.around_bars())
            self.bar = tqdm(total=self.total, unit="image", file=sys.stderr, dynamic_ncols=True)

    def _count(self, engine: Engine, path: Path) -> None:
        status, _ = jobs_of(engine, path)
        src = engine.ledger.get_source(path)
        if status != "active" or src is None or not src.request_hash:
            self.total += 1  # refused, blocked...: one step, already taken
            self.finished += 1
            return
        jobs = [
            j
            for j in engine.ledger.jobs_for_request(src.request_hash)
            if j.image_index <= (src.image_count or 1)
        ]
        self.total += max(len(jobs), 1)
        for job in jobs:
            if job.state in FINAL:
                self.finished += 1
            else:
                self._open[job.id] = self._open.get(job.id, 0) + 1

    # EngineObserver
    def submitted(self, rule: str | None) -> None:
        """Not counted: the bar counts finished images."""

    def task_done(self, seconds: float) -> None:
        """Not counted: `job_finished` follows."""

    def job_finished(self, job_id: int, state: JobState) -> None:
        """One of the pass's jobs is done, failed or ambiguous: one step (per file wanting it)."""
        self.finished += self._open.pop(job_id, 0)

    def update(self) -> None:
        """Bring the bar (or, every LOG_EVERY seconds, the log) up to date."""
        if self.bar is not None:
            self.bar.n = self.finished
            self.bar.refresh()
        elif time.monotonic() - self.last_log >= LOG_EVERY:
            self.last_log = time.monotonic()
            log.info("progress", finished=self.finished, total=self.total)

    def close(self) -> None:
        """Show the final count and release the terminal line."""
        if self.bar is not None:
            self.update()
            self.bar.close()
            self.bar = None
        self._bars.close()
