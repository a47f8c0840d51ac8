"""What every part of the engine shares: its options, its state, and the one way a job moves.

A job moves only through `_apply` (or `_commit` where nothing needs awaiting): the outcome's
row is looked up in `jobs.table`, the move is committed to the ledger, and the row's effects
are performed. Nothing else here decides a state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from promptdrop import outputs
from promptdrop.api import ToApisClient
from promptdrop.backoff import ACCOUNT_PAUSE, DISK_FULL, Backoff
from promptdrop.config.prices import Prices
from promptdrop.jobs import notes
from promptdrop.jobs.limits import Limits
from promptdrop.jobs.lookups import LookupPolicy, new_business_id
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.jobs.pausing import AccountPause, Pause
from promptdrop.jobs.table import Effect, Row, lookup
from promptdrop.ledger import FINAL, Budget, Job, JobState, LedgerBase, disk_full
from promptdrop.spec import RuleConfig

S = JobState
log = structlog.get_logger("promptdrop.engine")


@dataclass(frozen=True)
class EngineOptions:
    # None: the rules file's [api] poll_first / poll_interval (the service fills them in), or
    # the docs' advice when there is no rules file: first poll about 5 s after submitting...
    poll_first: float | None = None
    poll_interval: float | None = None  # ...then every 5-10 s, with jitter
    poll_jitter: float = 0.2  # a fraction of the interval, so many jobs spread out
    # The first poll is spread much less: a short task must not wait a fifth longer.
    poll_first_jitter: float = 0.05
    retry_later: float = 30.0  # a job the API could not take now (outage, rate limit) waits this
    # A refused key or empty quota: first wait before trying again, doubling up to the cap.
    pause_first: float = ACCOUNT_PAUSE.first
    pause_cap: float = ACCOUNT_PAUSE.cap
    drain_timeout: float = 8.0  # SIGTERM: how long writes and in-flight POSTs may finish
    # Waiting jobs: the budget is looked at again at local midnight, and at least this often
    # (seconds) so a clock that jumps (suspend, a time zone change) is noticed.
    budget_check: float = 60.0
    # A shared ledger: seconds a claim on a job lasts unless renewed (every third of it); a
    # host that dies has its jobs taken over this long after its last renewal.
    lease_ttl: float = 30.0
    # A task the API says it does not know is asked about again over this many seconds
    # before its job fails (see jobs.timing).
    gone_window: float = 60.0
    # Tasks in flight per rule that sets no max_in_flight (the service sizes it from the
    # account group: jobs.timing.in_flight_for).
    in_flight: int = 50
    # Lost answers looked up by business id: how often, how long, and the proof's life.
    lookups: LookupPolicy = field(default_factory=LookupPolicy)
    # `promptdrop pause`: a held job waits for the resume (the daemon), or is left pending for
    # the next run (False: `watch --once`, which must end).
    wait_while_paused: bool = True

    def pause_backoff(self) -> Backoff:
        """The account pause's policy with this engine's first wait and cap."""
        return dataclasses.replace(ACCOUNT_PAUSE, first=self.pause_first, cap=self.pause_cap)


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot for status lines and metrics: read on the engine's thread."""

    jobs: dict[str, int] = field(default_factory=dict)  # job count by state
    budget_left: dict[str, int] = field(default_factory=dict)  # only rules with a budget
    paused: bool = False
    credits_left: dict[str, float] = field(default_factory=dict)  # only rules with credits


class EngineObserver(Protocol):
    """Told what the engine did (metrics subscribe; the engine never imports them)."""

    def submitted(self, rule: str | None) -> None:
        """A paid submission's intent was just committed."""

    def task_done(self, seconds: float) -> None:
        """A task's image was written `seconds` after it was submitted."""

    def job_finished(self, job_id: int, state: JobState) -> None:
        """A job reached a final state (done, failed, ambiguous)."""


class EngineCore(Limits, ABC):
    """The engine's state and the table-driven move; the mixins build on it."""

    def __init__(
        self,
        ledger: LedgerBase,
        client: ToApisClient,
        rules: list[RuleConfig],
        options: EngineOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        prices: Prices | None = None,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.options = options or EngineOptions()
        self.rules = {r.name: r for r in rules}
        self.prices: Prices = dict(prices or {})  # the rules file's [prices], canonical ids
        self._clock = clock
        self.stopping = False
        self._account = AccountPause(self.options.pause_backoff(), clock)
        self._fresh: set[int] = set()  # submitted by this process, not yet polled
        self._polled: set[int] = set()
        self._gone: dict[int, int] = {}  # job id -> "unknown task" answers in a row
        # Set for a ledger shared by several hosts: this host's name in it. Each job is then
        # claimed before anything is done for it, and only moved while the claim holds.
        self.host: str | None = None
        self._claimed: set[int] = set()
        self._submitted_at: dict[int, float] = {}  # job id -> time.monotonic() of its intent
        self._observers: list[EngineObserver] = []
        self._budget_timer: asyncio.Task[None] | None = None
        self._lease_timer: asyncio.Task[None] | None = None

    @abstractmethod
    def launch(self, job_id: int) -> None:
        """Make sure one task is driving this job."""

    @abstractmethod
    def _arm_budget_timer(self) -> None:
        """Wake up at the next midnight to start waiting jobs."""

    @property
    def pause(self) -> Pause | None:
        """The account pause in force, if any."""
        return self._account.current

    def note_success(self) -> None:
        """Called when a submission went through: the account works again."""
        self._account.lift()

    def observe(self, observer: EngineObserver) -> None:
        """Tell `observer` about submissions and finished tasks from now on."""
        self._observers.append(observer)

    def status(self) -> EngineStatus:
        """Job counts by state, each budgeted rule's room today, and whether paused."""
        budgets: dict[str, int] = {}
        left_credits: dict[str, float] = {}
        for name, rule in self.rules.items():
            if rule.daily_budget is not None:
                left = self.budget_left(name)
                budgets[name] = rule.daily_budget if left is None else left
            if rule.daily_credits is not None:
                room = self.credits_left(name)
                left_credits[name] = rule.daily_credits if room is None else room
        return EngineStatus(
            self.ledger.state_counts(), budgets, self.pause is not None, left_credits
        )

    # The move -------------------------------------------------------------------------------

    async def _apply(self, job: Job, outcome: Outcome) -> Job:
        """Move `job` as the table says for `outcome`, and perform the row's effects."""
        row = lookup(job.state, outcome.kind)
        attempt = 0
        while True:
            try:
                moved = self._commit(job, outcome, row)
                break
            except Exception as exc:
                # A paid task's id is in hand: while the ledger's disk is full keep it and try
                # again, rather than let a restart turn a known task into an ambiguous one.
                if not (row.effects & Effect.RECORD_TASK and disk_full(exc)):
                    raise
                wait = DISK_FULL.delay(attempt)
                attempt += 1
                log.error(
                    "cannot record a submitted task: the disk holding the ledger is full; "
                    "trying again",
                    task=outcome.task.id if outcome.task else None,
                    retry_in=wait,
                    fix="free space on the disk of the state folder",
                )
                await asyncio.sleep(wait)
        if row.effects & Effect.RETRY_LATER:
            await asyncio.sleep(self.options.retry_later)
        if row.effects & Effect.WAIT_UNPAUSED:
            await self._wait_unpaused()
        return moved

    def _commit(self, job: Job, outcome: Outcome, row: Row | None = None) -> Job:
        """The synchronous part of `_apply`: the move and every effect that does not wait."""
        row = row or lookup(job.state, outcome.kind)
        fx = row.effects
        if fx & Effect.OBSERVE_LATENCY:
            self._observe_latency(job)
        if fx & Effect.NOTE_UNWANTED:
            self.ledger.note_event(
                job.id,
                "no prompt file wants this image any more (deleted or changed); nothing written",
            )
        if fx & Effect.FORGET_UPLOADS:
            self.ledger.forget_uploads(list(outcome.urls))
        if row.next_state is not job.state:
            job = self._move_by(job, outcome, row)
        if fx & Effect.UPDATE_RUNNING and outcome.task is not None:
            self.ledger.update_running(job.id, _json(outcome.task.raw))
        if fx & Effect.CONFIRM_GONE:
            self._gone[job.id] = self._gone.get(job.id, 0) + 1
        else:
            self._gone.pop(job.id, None)
        if fx & Effect.FRESH:
            self._fresh.add(job.id)
        if fx & Effect.ACCOUNT_WORKS and self.pause is not None:
            self.note_success()
        if row.say:
            # No empty fields: a task id only once there is one, a detail only when it says more.
            said: dict[str, Any] = {"job": job.id, "outcome": str(outcome.kind)}
            if job.task_id:
                said["task"] = job.task_id
            if outcome.message:
                said["detail"] = outcome.message
            getattr(log, row.level)(row.say, **said)
        self._notes_for(job, outcome, fx)
        if fx & Effect.LAUNCH:
            self.launch(job.id)
        return job

    def _move_by(self, job: Job, outcome: Outcome, row: Row) -> Job:
        fx = row.effects
        fields: dict[str, Any] = {}
        if fx & Effect.SET_ERROR:
            fields["error"] = row.error_text(outcome)
        if fx & Effect.CLEAR_ERROR:
            fields["error"] = None
        if fx & Effect.FINISHED:
            fields["finished_at"] = self._clock()
        task = outcome.task
        if fx & Effect.RECORD_TASK and task is not None:
            fields.update(task_id=task.id, task_json=_json(task.raw), submitted_at=self._clock())
        if fx & Effect.RECORD_RESULT and task is not None:
            fields.update(
                result_url=task.url, expires_at=task.expires_at, task_json=_json(task.raw)
            )
        if fx & Effect.RECORD_FOUND and task is not None:
            fields.update(task_id=task.id or None, task_json=_json(task.raw))
        if fx & Effect.RECORD_IMAGE:
            fields.update(image_sha256=outcome.image_sha256, image_format=outcome.image_format)
        if fx & Effect.COUNT_INTENT:
            # The budget is checked again inside the commit, under a lock every host's intents
            # of this rule take, so nobody racing for the last unit can overspend it.
            # Each attempt gets a fresh business id, recorded before the request leaves, so a
            # lost answer can be looked up by it (jobs.settle).
            fields.update(
                count_attempt=True,
                budget=self._budget_of(job.rule, job),
                intent_at=self._clock(),
                business_id=new_business_id(),
            )
        moved = self._move(job, job.state, row.next_state, row.detail(outcome), **fields)
        if fx & Effect.COUNT_INTENT:
            self._submitted_at[job.id] = time.monotonic()
            for observer in self._observers:
                observer.submitted(job.rule)
        return moved

    def _notes_for(self, job: Job, outcome: Outcome, fx: Effect) -> None:
        if fx & Effect.PAUSE:
            reason = "auth" if outcome.kind is Kind.UNAUTHORIZED else "quota"
            pause = self._account.begin(reason, outcome.message)
            log.error(
                "submissions paused",
                reason=notes.pause_cause(reason),
                retry_in=round(pause.wait),
                fix=notes.pause_fix(reason),
            )
            if fx & Effect.NOTE_PAUSED:
                text = notes.paused_text(reason, pause.wait)
                self._note_sources(job, lambda _j, _s: text)
        if fx & Effect.NOTE_FAILED:
            self._note_sources(job, lambda j, _s: notes.failed_text(j.error, j.request))
        if fx & Effect.NOTE_AMBIGUOUS:
            self._note_sources(job, lambda j, s: notes.ambiguous_text(s, j.request))
        if fx & Effect.NOTE_WAITING:
            self._note_sources(job, self._waiting_text)
            self._arm_budget_timer()

    def _move(
        self,
        job: Job,
        src: JobState,
        dst: JobState,
        detail: str,
        *,
        count_attempt: bool = False,
        budget: Budget | None = None,
        **fields: Any,
    ) -> Job:
        # A job this host claimed moves only while the claim is still ours (LeaseLost if not).
        holder = self.host if self.host is not None and job.id in self._claimed else None
        moved = self.ledger.transition(
            job.id,
            src,
            dst,
            detail=detail,
            count_attempt=count_attempt,
            holder=holder,
            budget=budget,
            **fields,
        )
        if dst in FINAL:
            self._submitted_at.pop(job.id, None)
            self._claimed.discard(job.id)
            self._gone.pop(job.id, None)
            for observer in self._observers:
                observer.job_finished(job.id, dst)
        return moved

    async def _wait_unpaused(self) -> None:
        await self._account.wait(lambda: self.stopping)

    # Prompt files of a job --------------------------------------------------------------------

    def _live_sources(self, job: Job) -> list[Path]:
        """The prompt files that want this job's image now: active, still there, asking for
        this many images, and inside the folders of the rules now loaded (a prompt file that
        shares the request from a folder no rule watches gets nothing written beside it)."""
        found = []
        for src in self.ledger.sources_for_request(job.request_hash):
            path = Path(src.path)
            if (
                (src.image_count or 1) >= job.image_index
                and self._in_roots(path)
                and os.path.isfile(path)
            ):
                found.append(path)
        return found

    def _in_roots(self, path: Path) -> bool:
        """True when `path` is in a folder a loaded rule watches (below it only if recursive)."""
        for rule in self.rules.values():
            root = Path(rule.path)
            if path.parent == root or (rule.recursive and root in path.parents):
                return True
        return False

    def _note_sources(self, job: Job, text: Callable[[Job, Path], str]) -> None:
        for source in self._live_sources(job):
            outputs.write_note(source, text(job, source))

    def _settle_note(self, source: Path, *, keep_failed: bool = False) -> None:
        """A job of `source` started or finished: clear its note unless a job still waits
        (then the waiting note stays), or, with keep_failed, one failed or is ambiguous."""
        src = self.ledger.get_source(source)
        jobs = (
            []
            if src is None or not src.request_hash
            else [
                j
                for j in self.ledger.jobs_for_request(src.request_hash)
                if j.image_index <= (src.image_count or 1)
            ]
        )
        waiting = [j for j in jobs if j.state is S.WAITING]
        if waiting:
            outputs.write_note(source, self._waiting_text(waiting[0], source))
        elif not (keep_failed and any(j.state in (S.FAILED, S.AMBIGUOUS) for j in jobs)):
            outputs.clear_note(source)

    def _observe_latency(self, job: Job) -> None:
        started = self._submitted_at.pop(job.id, None)
        if started is not None:
            seconds = time.monotonic() - started
        else:
            # Submitted before a restart: the ledger's record of the intent says when.
            intents = [
                e["at"]
                for e in self.ledger.events(job.id)
                if e["to_state"] == S.SUBMITTING and e["from_state"] != e["to_state"]
            ]
            if not intents:
                return
            seconds = self._clock() - intents[-1]
        for observer in self._observers:
            observer.task_done(seconds)


def _json(raw: Any) -> str:
    return json.dumps(raw, sort_keys=True)
