"""Lost answers settled by the submission's business id (the decisions are `jobs.lookups`).

A job whose submission answer was lost is AMBIGUOUS. If its attempt carried a business id, the
task is looked up by it: found, the job polls that task; not found often enough at an API
proven to find tasks by business id, it is sent again with a new id; otherwise it stays
ambiguous with its note. The proof comes from our own traffic: now and then a task just created
is looked up by its business id, and the answer is recorded per API address in the ledger.
"""

from __future__ import annotations

import asyncio

import structlog

from promptdrop.api import ApiError, TaskState
from promptdrop.jobs.core import EngineCore
from promptdrop.jobs.lookups import (
    Settled,
    after_lookup,
    is_proven,
    lookup_retry_wait,
    needs_proof,
    next_lookup_wait,
)
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.ledger import Job, JobState

S = JobState
log = structlog.get_logger("promptdrop.engine")


class Settling(EngineCore):
    """Looks lost submissions up by business id, and proves that such lookups work."""

    _misses: dict[int, tuple[int, float]]  # job id -> ("not found" answers, the first's time)
    _proof_attempt: float | None
    _proof_task: asyncio.Task[None] | None

    def _init_settling(self) -> None:
        self._misses = {}
        self._proof_attempt = None
        self._proof_task = None

    def _lookups_proven(self) -> bool:
        proven_at = self.ledger.proven_at(self.client.base_url)
        return is_proven(proven_at, self._clock(), self.options.lookups)

    async def _settle(self, job: Job) -> Job:
        """Look `job`'s lost submission up until it is settled or left ambiguous; return the
        job as it is then (RUNNING: found; PENDING: to be sent again; AMBIGUOUS: left so)."""
        assert job.business_id is not None
        policy = self.options.lookups
        failures = 0
        while not self.stopping:
            try:
                task = await self.client.find_by_business_id(job.business_id)
            except ApiError as exc:
                await self._apply(job, Outcome(Kind.LOOKUP_FAILED, exc.message))
                await asyncio.sleep(lookup_retry_wait(failures))
                failures += 1
                continue
            now = self._clock()
            job = self.ledger.get_job(job.id)
            if job.state is not S.AMBIGUOUS:
                return job  # moved meanwhile (promptdrop retry, or the rules' opt-in)
            if task is not None:
                self._proved(job.business_id or "", task)  # finding one is proof enough
            misses, first = self._misses.get(job.id, (0, now))
            verdict = after_lookup(
                task is not None, self._lookups_proven(), misses, first, now, policy
            )
            if verdict is Settled.LOOK_AGAIN:
                self._misses[job.id] = (misses + 1, first)
                await self._apply(job, Outcome(Kind.LOOKUP_MISSED, f"{misses + 1}"))
                await asyncio.sleep(next_lookup_wait(misses + 1, first, now, policy))
                continue
            self._misses.pop(job.id, None)
            if verdict is Settled.FOUND:
                job = await self._apply(job, Outcome(Kind.LOOKUP_FOUND, task=task))
                for source in self._live_sources(job):
                    self._settle_note(source)
            elif verdict is Settled.NOT_CREATED:
                said = f"not found by its business id {misses + 1} times over {now - first:.0f} s"
                job = await self._apply(job, Outcome(Kind.NOT_CREATED, said))
            elif await self._prove_from_ledger():
                # Proven now by a task this ledger knows: the spread of misses means not made.
                said = f"not found by its business id {misses + 1} times over {now - first:.0f} s"
                job = await self._apply(job, Outcome(Kind.NOT_CREATED, said))
            elif (rule := self.rules.get(job.rule or "")) and rule.resubmit_ambiguous:
                job = await self._apply(job, Outcome(Kind.RESUBMIT_ALLOWED))
            else:
                job = await self._apply(job, Outcome(Kind.LOOKUP_UNPROVEN))
            return job
        return job

    async def _prove_from_ledger(self) -> bool:
        """Before leaving a job ambiguous for want of a proof: look up, by business id, tasks
        this ledger knows exist (the latest running or done ones); True when one is found as
        itself, which is recorded as the proof. A miss here proves nothing either way (the
        task may simply be too new to be found yet)."""
        for known in self.ledger.known_tasks():
            if self.stopping:
                return False
            assert known.business_id is not None and known.task_id is not None
            try:
                task = await self.client.find_by_business_id(known.business_id)
            except ApiError:
                return False
            if task is not None and task.id == known.task_id:
                self._proved(known.business_id, task)
                return True
        return False

    def _maybe_prove(self, business_id: str | None, task: TaskState) -> None:
        """After a task was created: look it up by its business id later, if the proof that
        such lookups work here is missing or getting old (one proof at a time)."""
        if business_id is None or (self._proof_task is not None and not self._proof_task.done()):
            return
        now = self._clock()
        proven_at = self.ledger.proven_at(self.client.base_url)
        if not needs_proof(proven_at, self._proof_attempt, now, self.options.lookups):
            return
        self._proof_attempt = now
        self._proof_task = asyncio.get_running_loop().create_task(
            self._prove(business_id, task.id), name="lookup-proof"
        )

    async def _prove(self, business_id: str, task_id: str) -> None:
        await asyncio.sleep(self.options.lookups.proof_delay)
        try:
            task = await self.client.find_by_business_id(business_id)
        except ApiError as exc:
            log.info("could not check lookups by business id now", detail=exc.message)
            return
        if task is not None and task.id == task_id:
            self._proved(business_id, task)
        else:
            if self.ledger.proven_at(self.client.base_url) is not None:
                self.ledger.revoke_proof(self.client.base_url)
            log.warning(
                "the API did not find a task by the business id it was sent with; a "
                "submission whose answer is lost stays ambiguous (promptdrop retry decides)",
                task=task_id,
            )

    def _proved(self, business_id: str, task: TaskState) -> None:
        first = self.ledger.proven_at(self.client.base_url) is None
        self.ledger.record_proof(self.client.base_url, task.id, business_id)
        if first:
            log.info(
                "the API finds tasks by business id: lost submission answers are settled by "
                "looking them up",
                task=task.id,
            )
            self._resettle()

    def _resettle(self) -> None:
        """Drive every ambiguous job whose attempt carried a business id (a lookup is free)."""
        for job in self.ledger.jobs(S.AMBIGUOUS, free_for=self.host):
            if job.business_id is not None:
                self.launch(job.id)
