"""Jobs waiting for the daily budget: started, oldest first, when a day has room for them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from promptdrop.jobs import budget
from promptdrop.jobs.core import EngineCore
from promptdrop.jobs.credits import Room, Verdict
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.ledger import JobState, StaleTransition

S = JobState
log = structlog.get_logger("promptdrop.engine")


class Waiting(EngineCore):
    """The budget's side of the engine: recheck at midnight, start what fits."""

    def recheck_budgets(self) -> int:
        """Start the waiting jobs today's budgets have room for, oldest first; return how many.

        Called at local midnight by the engine's own timer, by `resume`, and after a reload;
        tests call it after moving the clock. Waiting jobs no prompt file wants any more fail.
        A job held for a missing price or one dearer than a whole day's credits stays held.
        """
        if self.stopping:
            return 0
        started = 0
        rooms: dict[str, Room] = {}
        sources: set[Path] = set()
        remaining = 0
        for job in self.ledger.jobs(S.WAITING):
            name = job.rule or ""
            if name not in rooms:
                rooms[name] = self.room(name)
            price = self.price_of(job)
            # First fit, oldest first: a cheaper job may use credits a dearer one cannot.
            if rooms[name].verdict(price) is not Verdict.GO:
                remaining += 1
                continue
            live = self._live_sources(job)
            try:
                self._commit(job, Outcome(Kind.BUDGET_ROOM if live else Kind.ORPHANED))
            except StaleTransition:
                continue
            if not live:
                continue
            rooms[name] = rooms[name].after(price)
            sources.update(live)
            self.launch(job.id)
            started += 1
        for source in sources:
            self._settle_note(source, keep_failed=True)
        if started:
            log.info("waiting jobs started", count=started, still_waiting=remaining)
        if remaining:
            self._arm_budget_timer()
        return started

    def _arm_budget_timer(self) -> None:
        if self.stopping or (self._budget_timer is not None and not self._budget_timer.done()):
            return
        self._budget_timer = asyncio.get_running_loop().create_task(
            self._budget_loop(), name="budget-timer"
        )

    async def _budget_loop(self) -> None:
        # Not a job task: `wait_idle` (and so --once) does not wait for tomorrow.
        while not self.stopping:
            await asyncio.sleep(budget.next_check(self._clock(), self.options.budget_check))
            try:
                self.recheck_budgets()
            except Exception:
                log.exception("could not start waiting jobs; trying again later")
            if not self.ledger.jobs(S.WAITING):
                return
