"""Moves jobs from state to state: the only module that talks to both the ledger and the API.

Each job runs as one asyncio task that walks the states in `ledger.states`, committing each
step before taking the next; after a crash, `Ledger.recover` plus `Engine.resume` pick up
where the ledger says it stopped. A step does its I/O, interprets what came back into an
outcome (`jobs.outcomes`), and hands it to `_apply`, which looks the move up in `jobs.table`.

The engine is put together from one mixin per concern, all on `jobs.core.EngineCore` (the
shared state and the table-driven move, on `jobs.limits.Limits`, the daily budgets and credits
left): `Intake` (prompt files) on `Delivery` (writing images), `Waiting` (jobs held by those
limits), `Leases` (a shared ledger) and `UserPauses` (`promptdrop pause`). Mixins rather than
separate objects because those concerns share one job's state and one move; parts with state
of their own (`Uploads`, `AccountPause`) are separate objects.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from promptdrop.api import ApiError, TaskState, ToApisClient
from promptdrop.config.prices import Prices
from promptdrop.crashpoints import reached
from promptdrop.jobs import notes, timing
from promptdrop.jobs.budget import day_start, next_day
from promptdrop.jobs.core import EngineObserver, EngineOptions, EngineStatus
from promptdrop.jobs.credits import Verdict
from promptdrop.jobs.intake import Intake
from promptdrop.jobs.leases import Leases
from promptdrop.jobs.outcomes import (
    Kind,
    Outcome,
    interpret_created,
    interpret_download_error,
    interpret_poll_error,
    interpret_submit_error,
    interpret_task,
    interpret_upload_error,
    interpret_write_error,
    interpret_written,
)
from promptdrop.jobs.pausing import Pause
from promptdrop.jobs.settle import Settling
from promptdrop.jobs.uploads import Uploads
from promptdrop.jobs.user_pauses import UserPauses
from promptdrop.jobs.waiting import Waiting
from promptdrop.ledger import (
    FINAL,
    BudgetSpent,
    Job,
    JobState,
    LeaseLost,
    LedgerBase,
    StaleTransition,
)
from promptdrop.spec import RuleConfig

__all__ = [
    "Engine",
    "EngineObserver",
    "EngineOptions",
    "EngineStatus",
    "Pause",
    "day_start",
    "next_day",
]

S = JobState
log = structlog.get_logger("promptdrop.engine")


class Engine(Intake, Waiting, Leases, Settling, UserPauses):
    """Turns settled prompt files into jobs and jobs into images."""

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
        super().__init__(ledger, client, rules, options, clock=clock, prices=prices)
        self._slots = {r.name: asyncio.Semaphore(self._in_flight(r)) for r in rules}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._critical = 0  # POSTs on the wire and files being written: drained on stop
        self._uploads = Uploads(ledger, client)
        self._init_settling()
        # (model, resolution) -> recent task times in seconds, for the learned first poll.
        self._task_times: dict[tuple[str, str], deque[float]] = {}
        self._init_user_pauses()

    def update_rules(self, rules: list[RuleConfig], prices: Prices | None = None) -> None:
        """Take new rules and prices (a reload) without touching running jobs.

        A job already running keeps the slot it holds; a changed `max_in_flight` applies to jobs
        that start from now on. Jobs of a rule that disappeared keep running to the end. The
        prices are replaced too (None: none), so a price added lets held jobs start now.
        """
        old = self.rules
        self.rules = {r.name: r for r in rules}
        self.prices = dict(prices or {})
        if self.host is not None:
            # A shared ledger stores paths relative to the roots: follow moved folders.
            self.ledger.register_roots(self.host, {r.name: Path(r.path) for r in rules})
        for rule in rules:
            before = old.get(rule.name)
            if before is None or before.max_in_flight != rule.max_in_flight:
                self._slots[rule.name] = asyncio.Semaphore(self._in_flight(rule))
        if _running_loop() is not None:
            # A raised or removed budget, or a price added, lets waiting jobs start now.
            self.recheck_budgets()

    def _in_flight(self, rule: RuleConfig) -> int:
        """The rule's in-flight limit: its own, else sized from the account group."""
        return rule.max_in_flight or self.options.in_flight

    # Driving jobs ---------------------------------------------------------------------------

    def launch(self, job_id: int) -> None:
        """Make sure one task is driving this job (no-op when one already is)."""
        if self.stopping:
            return
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            return
        task = asyncio.get_running_loop().create_task(self._run(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task
        # A finished job's task is dropped, so memory does not grow with every job ever run.
        task.add_done_callback(functools.partial(self._forget_task, job_id))

    def _forget_task(self, job_id: int, done: asyncio.Task[None]) -> None:
        if self._tasks.get(job_id) is done:
            del self._tasks[job_id]
        if job_id not in self._tasks:
            self._polled.discard(job_id)
            self._fresh.discard(job_id)

    async def wait_idle(self) -> None:
        """Return when no job task is running."""
        while True:
            live = [t for t in self._tasks.values() if not t.done()]
            if not live:
                return
            await asyncio.wait(live)

    def resume(self) -> None:
        """Drive every job the ledger says is unfinished: running tasks are polled again.

        Also picks up jobs that `promptdrop retry` moved back to pending while we run. Jobs
        another host is working on are left to it, without a task or a claim attempt each.
        """
        unfinished = (S.PENDING, S.UPLOADING, S.RUNNING, S.DOWNLOADING)
        for job in self.ledger.jobs(*unfinished, free_for=self.host):
            self.launch(job.id)
        self._resettle()  # lost answers: looked up by their business ids
        self.recheck_budgets()
        self._arm_lease_timer()

    async def drain(self) -> None:
        """Stop taking work; let POSTs on the wire and file writes finish; cancel the rest."""
        self.stopping = True
        self._account.release()
        self._wake_paused()
        if self._budget_timer is not None:
            self._budget_timer.cancel()
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        if self._proof_task is not None:
            self._proof_task.cancel()
        deadline = time.monotonic() + self.options.drain_timeout
        while self._critical and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, job_id: int) -> None:
        job = self.ledger.get_job(job_id)
        slot = self._slots.get(job.rule or "")
        # Every log line of this job's task carries the job, its prompt file and its task id.
        sources = self._live_sources(job)
        structlog.contextvars.bind_contextvars(
            job=job.id, source=str(sources[0]) if sources else None, task=job.task_id
        )
        try:
            # Held by `promptdrop pause`: wait before taking a slot, so running tasks keep theirs.
            if not await self._wait_resumed(job):
                return
            if slot is None:
                await self._drive(job_id)
            else:
                async with slot:
                    await self._drive(job_id)
        except StaleTransition:
            log.info("job moved by someone else; leaving it", job=job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "job stopped by an unexpected error; it resumes on the next start", job=job_id
            )

    async def _drive(self, job_id: int) -> None:
        if not self._claim(job_id):
            return  # another host is working on it
        while not self.stopping:
            job = self.ledger.get_job(job_id)
            if job.state is S.AMBIGUOUS:
                if job.business_id is None:
                    # Sent before submissions carried a business id: nothing to look up.
                    self._note_sources(job, lambda j, s: notes.ambiguous_text(s, j.request))
                    return
                if not self._claim(job_id):
                    return  # a final move ended the claim: another host settles it
                job = await self._settle(job)
                if job.state is S.AMBIGUOUS:
                    return  # left ambiguous, with its note
                continue
            if job.state in FINAL or job.state is S.WAITING:
                return  # waiting jobs are started by recheck_budgets, not by a task
            if job.state is S.PENDING and not self._live_sources(job):
                return  # its prompt file was deleted or changed before anything was sent
            if job.state is S.SUBMITTING:
                # Only reachable if a previous task of ours died mid-POST: as after a crash.
                await self._apply(job, Outcome(Kind.INTERRUPTED))
            elif job.state is S.RUNNING:
                await self._poll(job)
            elif job.state is S.DOWNLOADING:
                await self._download(job)
            elif self.paused_by_user(job):
                return  # `promptdrop pause`: left pending; the daemon's loop launches it again
            else:
                await self._submit(job)

    # Submitting -----------------------------------------------------------------------------

    async def _submit(self, job: Job) -> None:
        await self._wait_unpaused()
        if self.stopping or self.paused_by_user(job):
            return
        if self.verdict(job) is not Verdict.GO:
            await self._apply(job, self._budget_spent(job))  # before uploading: not now
            return
        refs = job.request["references"]
        if job.state is S.PENDING and any(r["kind"] == "file" for r in refs):
            job = await self._apply(job, Outcome(Kind.UPLOAD_NEEDED))
        image_urls: list[str] = []
        for ref in refs:
            try:
                url = ref["url"] if ref["kind"] == "url" else await self._uploads.url(ref)
            except (OSError, ValueError, ApiError) as exc:
                await self._apply(job, interpret_upload_error(exc, ref["source"]))
                return
            image_urls.append(url)
        # The intent is committed before the request leaves: a crash from here on is ambiguous.
        try:
            job = await self._apply(job, Outcome(Kind.READY))
        except BudgetSpent:
            await self._apply(job, self._budget_spent(job))
            return
        reached("after_intent")
        await self._send(job, image_urls)

    async def _send(self, job: Job, image_urls: list[str]) -> None:
        req = job.request
        self._critical += 1
        try:
            task = await self.client.submit(
                model=req["model"],
                prompt=req["prompt"],
                size=req["size"],
                image_urls=image_urls,
                metadata=req["metadata"] or None,
                client_business_id=job.business_id,
            )
        except ApiError as exc:
            requeued = bool(image_urls) and self._requeued(job)
            outcome = interpret_submit_error(exc, sent_urls=image_urls, requeued=requeued)
        else:
            outcome = interpret_created(task)
        finally:
            self._critical -= 1
        if outcome.kind is not Kind.CREATED:
            await self._apply(job, outcome)
            return
        reached("after_answer")
        await self._apply(job, outcome)
        self._maybe_prove(job.business_id, task)
        reached("after_running")
        structlog.contextvars.bind_contextvars(task=task.id)

    def _budget_spent(self, job: Job) -> Outcome:
        """The job is held: its rule's daily budget or credits are spent, or it has no price."""
        rule = self.rules.get(job.rule or "")
        return Outcome(
            Kind.BUDGET_SPENT,
            notes.hold_reason(self._hold(job)),
            budget=rule.daily_budget if rule else None,
        )

    def _requeued(self, job: Job) -> bool:
        return any("refused upload URL" in (e["detail"] or "") for e in self.ledger.events(job.id))

    # Polling and fetching ---------------------------------------------------------------------

    def _poll_wait(self, job_id: int, kind: tuple[str, str] = ("", "")) -> float:
        """Seconds to wait before this job's next poll, counting it as polled (jobs.timing);
        `kind` (model, resolution) picks the task times a learned first poll comes from."""
        gone = self._gone.get(job_id, 0)
        if gone:
            return timing.gone_wait(gone, self.options.gone_window)
        if job_id in self._fresh:
            self._fresh.discard(job_id)
            phase = timing.PollPhase.FIRST
        elif job_id not in self._polled:
            phase = timing.PollPhase.RESUMED
        else:
            phase = timing.PollPhase.LATER
        self._polled.add(job_id)
        opts = self.options
        first = opts.poll_first
        if first is None and phase is timing.PollPhase.FIRST:
            # Not set by the user: learned from this daemon's recent tasks of this kind.
            first = timing.learned_first_poll(list(self._task_times.get(kind, ())))
        rhythm = timing.PollTiming(
            first, opts.poll_interval, opts.poll_first_jitter, opts.poll_jitter
        )
        return timing.poll_wait(phase, rhythm, random.random())

    async def _poll(self, job: Job) -> None:
        await asyncio.sleep(self._poll_wait(job.id, _kind_of(job)))
        assert job.task_id is not None
        try:
            task = await self.client.get_task(job.task_id)
        except ApiError as exc:
            outcome = interpret_poll_error(exc, gone_before=self._gone.get(job.id, 0))
        else:
            outcome = interpret_task(task)
            if outcome.kind is Kind.TASK_DONE:
                self._learn(job, task)
        await self._apply(job, outcome)

    def _learn(self, job: Job, task: TaskState) -> None:
        """Remember how long this task took, for the next tasks' first poll (jobs.timing)."""
        started = self._submitted_at.get(job.id)
        now = time.monotonic()
        raw = task.raw if isinstance(task.raw, dict) else {}
        seconds = timing.task_seconds(
            _number(raw.get("created_at")),
            _number(raw.get("completed_at")),
            now if started is None else started,
            now,
        )
        if started is None and seconds == 0.0 and "completed_at" not in raw:
            return  # submitted before a restart, and the API gave no times: nothing learned
        kept = self._task_times.setdefault(_kind_of(job), deque(maxlen=timing.LEARN_WINDOW))
        kept.append(seconds)

    async def _download(self, job: Job) -> None:
        assert job.result_url is not None
        self._critical += 1
        try:
            try:
                result = await self.client.download(job.result_url)
            except ApiError as exc:
                await self._apply(job, interpret_download_error(exc))
                return
            reached("after_download")
            if self.host is not None and self.ledger.holder(job.id) != self.host:
                # Only the host holding the claim writes: another one took this job over.
                raise LeaseLost(f"job {job.id} is no longer claimed by {self.host}")
            written = 0
            try:
                for source in self._live_sources(job):
                    if await self._place(job, source, result.data, result.format):
                        written += 1
            except OSError as exc:
                # Disk full, a share gone read-only...: nothing partial was left under a final
                # name; fetch and write again later (the result link lives about a day).
                await self._apply(job, interpret_write_error(exc))
                return
            reached("before_done")
            sha = hashlib.sha256(result.data).hexdigest()
            await self._apply(job, interpret_written(written, sha, result.format))
        finally:
            self._critical -= 1


def _kind_of(job: Job) -> tuple[str, str]:
    """What a task's time depends on: its model and resolution."""
    return (str(job.request.get("model")), str(job.request.get("resolution") or ""))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
