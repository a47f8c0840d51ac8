"""`promptdrop pause`: the engine's side. Jobs of a paused rule are not submitted; polls and
downloads go on.

The pauses live in the ledger (so they outlive a restart and hold every host of a shared
ledger); the daemon's loop calls `refresh_pauses` every couple of seconds, which logs a change
and wakes the jobs held. A held job stays pending, waiting before it takes one of its rule's
slots, so it spends no budget and blocks no running task. The decision is `jobs.gate`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import structlog

from promptdrop.jobs.core import EngineCore
from promptdrop.jobs.gate import Decision, Gate, may_submit
from promptdrop.ledger import ALL_RULES, Job, JobState

S = JobState
log = structlog.get_logger("promptdrop.engine")
PAUSE_RECHECK = 5.0  # a held job looks at the pauses at least this often (seconds)
_HELD_STATES = (S.PENDING, S.UPLOADING)  # what is held: jobs that would submit next


def local_time(at: float) -> str:
    """An epoch time as local time to the second, for log and status lines."""
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


class UserPauses(EngineCore):
    """The pauses `promptdrop pause` asked for, as this engine last read them."""

    user_pauses: dict[str, float]  # rule (or ALL_RULES) -> since
    _pauses_changed: asyncio.Event
    _told_held: set[int]  # jobs whose hold was logged (once each, per change of the pauses)

    def _init_user_pauses(self) -> None:
        self.user_pauses = {}
        self._pauses_changed = asyncio.Event()
        self._told_held = set()
        self.refresh_pauses()

    def refresh_pauses(self) -> bool:
        """Read the pauses from the ledger; when they changed, say so and wake the jobs held.
        Returns whether they changed."""
        now = self.ledger.pauses()
        if now == self.user_pauses:
            return False
        began = sorted(set(now) - set(self.user_pauses))
        ended = sorted(set(self.user_pauses) - set(now))
        self.user_pauses = now
        self._told_held.clear()
        for rule in began:
            log.warning(
                "submissions paused by promptdrop pause; polls and downloads go on",
                rule="all rules" if rule == ALL_RULES else rule,
                since=local_time(now[rule]),
                fix="promptdrop resume" + ("" if rule == ALL_RULES else f" {rule}"),
            )
        for rule in ended:
            log.info(
                "submissions resumed by promptdrop resume",
                rule="all rules" if rule == ALL_RULES else rule,
            )
        woken, self._pauses_changed = self._pauses_changed, asyncio.Event()
        woken.set()
        return True

    def submit_decision(self, rule: str | None) -> Decision:
        """May a job of `rule` be submitted now (the user's pauses, then the account's)?"""
        account = self._account.current
        return may_submit(rule, self.user_pauses, account.until if account else None, self._clock())

    def paused_by_user(self, job: Job) -> bool:
        """True when `job` would submit next but `promptdrop pause` holds its rule."""
        gate = self.submit_decision(job.rule).gate
        return job.state in _HELD_STATES and gate in (Gate.RULE_PAUSED, Gate.ALL_PAUSED)

    async def _wait_resumed(self, job: Job) -> bool:
        """Wait while `promptdrop pause` holds `job` (before it takes a slot); True when it may
        go on, False on a stop, or at once when this engine does not wait for a resume
        (`--once`: the job stays pending for the next run)."""
        while self.paused_by_user(job):
            if job.id not in self._told_held:
                self._told_held.add(job.id)
                sources = self._live_sources(job)
                log.info(
                    "not submitted while paused by promptdrop pause",
                    source=str(sources[0]) if sources else None,
                    rule=job.rule,
                )
            if self.stopping or not self.options.wait_while_paused:
                return False
            changed = self._pauses_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=PAUSE_RECHECK)
            job = self.ledger.get_job(job.id)
        return not self.stopping

    def _wake_paused(self) -> None:
        """Wake every job held by a pause (a stop): they look at `stopping` and leave."""
        self._pauses_changed.set()


__all__ = ["PAUSE_RECHECK", "UserPauses", "local_time"]
