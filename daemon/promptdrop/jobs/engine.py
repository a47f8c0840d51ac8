"""Moves jobs from state to state: the only module that talks to both the ledger and the API.

A prompt file becomes a *source*; its effective request becomes one *job* per image index,
keyed by (request hash, index), so the same request never costs twice whichever file asks
for it. Each job runs as one asyncio task that walks the states in `ledger.states`, committing
each step before taking the next; after a crash, `Ledger.recover` plus `Engine.resume` pick up
where the ledger says it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from promptdrop import __version__, outputs
from promptdrop.api import (
    AccountBlocked,
    Ambiguous,
    ApiError,
    RateLimited,
    RequestRejected,
    ResultUnavailable,
    TaskNotFound,
    ToApisClient,
    TransientError,
)
from promptdrop.crashpoints import reached
from promptdrop.imaging import EXTENSIONS, MIME_TYPES
from promptdrop.ledger import (
    FINAL,
    Budget,
    BudgetSpent,
    Job,
    JobState,
    LeaseLost,
    LedgerBase,
    Source,
    StaleTransition,
    disk_full,
)
from promptdrop.service.metrics import Metrics
from promptdrop.spec import RuleConfig, SpecError, read_prompt_file

S = JobState
log = structlog.get_logger("promptdrop.engine")

# Seconds before the first and between later polls when neither the caller nor a rules file
# says (the docs' advice).
DEFAULT_POLL = 5.0
# Output names an image of this job could take, whatever format the API returns.
_OUTPUT_FORMATS = ("png", "jpeg", "webp")
# The error of a waiting job whose prompt file went away; the job is taken up again if the
# same request comes back, since nothing was ever sent for it.
_ORPHANED = (
    "its prompt file was deleted or changed before its turn came in the daily budget; "
    "nothing was sent or paid"
)


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
    pause_first: float = 60.0  # a refused key or empty quota: first wait before trying again
    pause_cap: float = 900.0
    drain_timeout: float = 8.0  # SIGTERM: how long writes and in-flight POSTs may finish
    # Waiting jobs: the budget is looked at again at local midnight, and at least this often
    # (seconds) so a clock that jumps (suspend, a time zone change) is noticed.
    budget_check: float = 60.0
    # A shared ledger: seconds a claim on a job lasts unless renewed (every third of it); a
    # host that dies has its jobs taken over this long after its last renewal.
    lease_ttl: float = 30.0


@dataclass
class Pause:
    reason: str
    until: float
    wait: float


class Engine:
    """Turns settled prompt files into jobs and jobs into images."""

    def __init__(
        self,
        ledger: LedgerBase,
        client: ToApisClient,
        rules: list[RuleConfig],
        options: EngineOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.options = options or EngineOptions()
        self.rules = {r.name: r for r in rules}
        self._clock = clock
        self._slots = {r.name: asyncio.Semaphore(r.max_in_flight) for r in rules}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._critical = 0  # POSTs on the wire and files being written: drained on stop
        self.stopping = False
        self.pause: Pause | None = None
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._fresh: set[int] = set()  # submitted by this process, not yet polled
        self._polled: set[int] = set()
        self._upload_locks: dict[str, asyncio.Lock] = {}
        # Set for a ledger shared by several hosts: this host's name in it. Each job is then
        # claimed before anything is done for it, and only moved while the claim holds.
        self.host: str | None = None
        self._claimed: set[int] = set()
        self._lease_timer: asyncio.Task[None] | None = None
        self._budget_timer: asyncio.Task[None] | None = None
        self._submitted_at: dict[int, float] = {}  # job id -> time.monotonic() of its intent
        self.metrics = Metrics(self)
        client.on_answer = _chain(client.on_answer, self.metrics.answer)
        client.on_retry = _chain(client.on_retry, self.metrics.retry)
        with_loop = _running_loop()
        if with_loop is not None:
            self.metrics.attach_loop(with_loop)

    def update_rules(self, rules: list[RuleConfig]) -> None:
        """Take new rules (a reload) without touching running jobs.

        A job already running keeps the slot it holds; a changed `max_in_flight` applies to jobs
        that start from now on. Jobs of a rule that disappeared keep running to the end.
        """
        old = self.rules
        self.rules = {r.name: r for r in rules}
        if self.host is not None:
            # A shared ledger stores paths relative to the roots: follow moved folders.
            self.ledger.register_roots(self.host, {r.name: Path(r.path) for r in rules})
        for rule in rules:
            before = old.get(rule.name)
            if before is None or before.max_in_flight != rule.max_in_flight:
                self._slots[rule.name] = asyncio.Semaphore(rule.max_in_flight)
        if _running_loop() is not None:
            self.recheck_budgets()  # a raised or removed budget lets waiting jobs start now

    # Sources --------------------------------------------------------------------------------

    def rule_for(self, path: Path) -> RuleConfig | None:
        """The rule whose root holds `path` (the deepest one when roots nest)."""
        best: RuleConfig | None = None
        for rule in self.rules.values():
            root = Path(rule.path)
            inside = path == root or root in path.parents
            if inside and (best is None or len(str(root)) > len(str(best.path))):
                best = rule
        return best

    async def handle_file(self, path: Path, rule: RuleConfig, *, settle_retry: bool = True) -> None:
        """Take up a settled prompt file: validate it, and start or reuse its jobs."""
        bound = log.bind(source=str(path))
        try:
            data = await asyncio.to_thread(_read_small, path)
        except OSError:
            data = None  # vanished, or not a regular file: the spec check says which
        content_sha = hashlib.sha256(data).hexdigest() if data is not None else None
        if content_sha is not None and self.ledger.is_settled(path, content_sha):
            # Touched, re-synced or rescanned (every start) with the same bytes, and each image
            # is made and written for it: what the checks below conclude, in one query.
            return
        prev = self.ledger.get_source(path)
        if (
            prev is not None
            and content_sha is not None
            and prev.content_sha256 == content_sha
            and prev.status in ("active", "invalid")
        ):
            # Touched, re-synced or rescanned with the same bytes: nothing new to pay for.
            if prev.status == "active" and prev.request_hash:
                for job in self.ledger.jobs_for_request(prev.request_hash):
                    if job.image_index <= (prev.image_count or 1):
                        await self._consider(job, path, rule)
            return
        try:
            request = await asyncio.to_thread(
                read_prompt_file, path, Path(rule.path), rule.defaults
            )
        except SpecError as exc:
            if exc.not_ready and settle_retry:
                # Maybe caught half-written: give the writer one more settle period.
                await asyncio.sleep(max(rule.settle, 0.2))
                await self.handle_file(path, rule, settle_retry=False)
                return
            if not path.exists():
                return
            message = _problems_text(exc)
            self.ledger.put_source(
                path, rule=rule.name, status="invalid", content_sha256=content_sha, error=message
            )
            self._drop_orphans(prev, None)
            outputs.write_note(path, message)
            bound.warning("prompt file refused", problems=len(exc.problems))
            return
        h = request.request_hash
        foreign = self._foreign_output(path, request.count, h)
        if foreign is not None:
            message = (
                f'"{foreign.name}" already exists in this folder and promptdrop did not make it, '
                "so nothing was generated (promptdrop never replaces files it did not write).\n"
                f'What to do: rename or move "{foreign.name}", or give this prompt file another '
                "name, then save it again."
            )
            self.ledger.put_source(
                path,
                rule=rule.name,
                status="blocked",
                content_sha256=content_sha,
                request_hash=h,
                image_count=request.count,
                error=message,
            )
            self._drop_orphans(prev, None)
            outputs.write_note(path, message)
            bound.warning("output name taken by a foreign file", file=str(foreign))
            return
        # The source and its jobs in one commit: a crash can never leave it recorded as
        # taken up without the jobs that make its images.
        jobs = self.ledger.take_up(
            path,
            rule=rule.name,
            content_sha256=content_sha,
            request_hash=h,
            image_count=request.count,
            request=request.canonical(),
        )
        self._drop_orphans(prev, h)
        bound.info("prompt file taken up", request=h[:12], images=request.count)
        for i, job in enumerate(jobs):
            # Read again after the first: considering one job may await (a copy, a download).
            await self._consider(job if i == 0 else self.ledger.get_job(job.id), path, rule)

    def handle_deleted(self, path: Path) -> None:
        """A prompt file went away: its running tasks finish, but nothing is written for it.

        Its jobs waiting for the daily budget fail (nothing was sent for them), unless another
        prompt file asks for the same request.
        """
        src = self.ledger.get_source(path)
        if src is not None and src.status != "deleted":
            self.ledger.set_source_status(path, "deleted", "the prompt file was deleted")
            log.info("prompt file deleted", source=str(path))
            self._drop_orphans(src, None)

    def handle_conflict(self, path: Path, rule: RuleConfig) -> None:
        """A sync client's conflict copy: never processed, and the folder says why."""
        self.ledger.put_source(
            path, rule=rule.name, status="conflict", error="conflict copy made by a sync app"
        )
        outputs.write_note(
            path,
            "This file looks like a conflict copy made by your sync app (two people or two "
            "computers changed the same prompt file at once), so promptdrop did not use it.\n"
            "What to do: compare it with the original, keep the version you want under the "
            "original name, and delete this copy.",
        )

    def _drop_orphans(self, prev: Source | None, new_hash: str | None) -> None:
        """Fail the waiting jobs of `prev`'s old request that no prompt file wants any more."""
        if prev is None or not prev.request_hash or prev.request_hash == new_hash:
            return
        for job in self.ledger.jobs_for_request(prev.request_hash):
            if job.state is S.WAITING and not self._live_sources(job):
                self._move(
                    job, S.WAITING, S.FAILED, _ORPHANED, error=_ORPHANED, finished_at=self._clock()
                )
                log.info("waiting job dropped: no prompt file wants it", job=job.id)

    async def _consider(self, job: Job, source: Path, rule: RuleConfig) -> None:
        if job.state is S.DONE:
            await self._deliver_existing(job, source)
        elif job.state is S.FAILED and job.error == _ORPHANED:
            # It waited for the budget, its file went away, and the same request is back.
            self._move(job, S.FAILED, S.PENDING, "a prompt file asks for it again")
            self.launch(job.id)
        elif job.state is S.FAILED:
            outputs.write_note(source, _failed_text(job))
        elif job.state is S.WAITING:
            outputs.write_note(source, self._waiting_text(job, source))
            self._arm_budget_timer()
        elif job.state is S.AMBIGUOUS:
            if rule.resubmit_ambiguous:
                self._move(job, S.AMBIGUOUS, S.PENDING, "rules allow resubmitting ambiguous jobs")
                self.launch(job.id)
            else:
                outputs.write_note(source, _ambiguous_text(job, source))
        else:
            self.launch(job.id)

    def _foreign_output(self, source: Path, count: int, request_hash: str) -> Path | None:
        """A file under one of this source's output names that promptdrop did not write."""
        for index in range(1, count + 1):
            for fmt in _OUTPUT_FORMATS:
                candidate = outputs.output_path(source, index, count, fmt)
                if os.path.lexists(candidate) and not self._is_ours(candidate, request_hash):
                    return candidate
        return None

    def _is_ours(self, path: Path, request_hash: str | None = None) -> bool:
        if self.ledger.output_at(path) is not None:
            return True
        # Written just before a crash, before the ledger recorded it: its provenance says so.
        if request_hash is None or path.is_symlink() or not path.is_file():
            return False
        try:
            info = outputs.read_provenance(path.read_bytes())
        except OSError:
            return False
        return info.get("promptdrop:request") == request_hash

    # Jobs ---------------------------------------------------------------------------------

    def launch(self, job_id: int) -> None:
        """Make sure one task is driving this job (no-op when one already is)."""
        if self.stopping:
            return
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            return
        task = asyncio.get_running_loop().create_task(self._run(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task

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
        self.recheck_budgets()
        self._arm_lease_timer()

    async def drain(self) -> None:
        """Stop taking work; let POSTs on the wire and file writes finish; cancel the rest."""
        self.stopping = True
        self._unpaused.set()
        if self._budget_timer is not None:
            self._budget_timer.cancel()
        if self._lease_timer is not None:
            self._lease_timer.cancel()
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
            if job.state in FINAL or job.state is S.WAITING:
                return  # waiting jobs are started by recheck_budgets, not by a task
            if job.state is S.PENDING and not self._live_sources(job):
                return  # its prompt file was deleted or changed before anything was sent
            step = {
                S.PENDING: self._submit,
                S.UPLOADING: self._submit,
                S.SUBMITTING: self._lost_answer,
                S.RUNNING: self._poll,
                S.DOWNLOADING: self._download,
            }[job.state]
            await step(job)

    async def _lost_answer(self, job: Job) -> None:
        # Only reachable if a previous task of ours died mid-POST: same rule as after a crash.
        self._move(
            job,
            S.SUBMITTING,
            S.AMBIGUOUS,
            "the answer to the submission was lost",
            error="the answer to the submission was lost",
        )
        self._note_sources(job, _ambiguous_text)

    async def _submit(self, job: Job) -> None:
        await self._wait_unpaused()
        if self.stopping:
            return
        if not self._budget_allows(job):
            self._hold(job)  # before uploading: nothing to do today
            return
        bound = log.bind(job=job.id, request=job.request_hash[:12], index=job.image_index)
        req = job.request
        image_urls: list[str] = []
        local = [r for r in req["references"] if r["kind"] == "file"]
        if local and job.state is S.PENDING:
            job = self._move(job, S.PENDING, S.UPLOADING, "uploading references")
        for ref in req["references"]:
            if ref["kind"] == "url":
                image_urls.append(ref["url"])
                continue
            try:
                image_urls.append(await self._upload(ref))
            except (OSError, ValueError) as exc:
                self._fail(
                    job,
                    f"the reference image {ref['source']!r} could not be read "
                    f"({exc}); save the prompt file again once it is back",
                )
                return
            except RequestRejected as exc:
                self._fail(
                    job, f"the API refused the reference image {ref['source']!r}: {exc.message}"
                )
                return
            except AccountBlocked as exc:
                self._pause(exc)
                self._move(job, job.state, S.PENDING, "paused: account refused")
                return
            except ApiError as exc:
                bound.warning("upload failed; will try again", error=exc.message)
                self._move(job, job.state, S.PENDING, "upload failed; retrying later")
                await asyncio.sleep(self.options.retry_later)
                return
        # The intent is committed before the request leaves: a crash from here on is ambiguous.
        # The budget is checked again inside that same commit, under a lock every host's
        # intents of this rule take, so neither jobs nor hosts racing for the last unit can
        # overspend it.
        intent_at = self._clock()
        try:
            job = self._move(
                job,
                job.state,
                S.SUBMITTING,
                "submitting",
                count_attempt=True,
                budget=self._budget(job),
                intent_at=intent_at,
            )
        except BudgetSpent:
            self._hold(job)
            return
        self.metrics.submitted(job.rule)
        self._submitted_at[job.id] = time.monotonic()
        reached("after_intent")
        self._critical += 1
        try:
            task = await self.client.submit(
                model=req["model"],
                prompt=req["prompt"],
                size=req["size"],
                image_urls=image_urls,
                metadata=req["metadata"] or None,
            )
        except RequestRejected as exc:
            if image_urls and "image_urls" in exc.message and not self._requeued(job):
                # A cached upload URL the API no longer accepts: upload again, once.
                self.ledger.forget_uploads(image_urls)
                self._move(job, S.SUBMITTING, S.PENDING, "refused upload URL; uploading again")
                return
            self._fail(job, f"the API refused this request: {exc.message}", src=S.SUBMITTING)
            return
        except AccountBlocked as exc:
            self._move(job, S.SUBMITTING, S.PENDING, f"not submitted: {exc.message}")
            self._pause(exc, job)
            return
        except (RateLimited, TransientError) as exc:
            # The client only raises these when nothing was created: safe to send later.
            self._move(job, S.SUBMITTING, S.PENDING, f"not submitted: {exc.message}")
            bound.warning(
                "the API could not take the request; trying again later",
                error=exc.message,
                wait=self.options.retry_later,
            )
            await asyncio.sleep(self.options.retry_later)
            return
        except Ambiguous as exc:
            self._move(
                job, S.SUBMITTING, S.AMBIGUOUS, f"answer lost: {exc.message}", error=exc.message
            )
            bound.error(
                "submission answer lost; not resending (it may have been paid)", error=exc.message
            )
            self._note_sources(job, _ambiguous_text)
            return
        finally:
            self._critical -= 1
        reached("after_answer")
        await self._record_answer(job, task)
        reached("after_running")
        structlog.contextvars.bind_contextvars(task=task.id)
        self._fresh.add(job.id)
        if self.pause is not None:
            self.note_success()
        bound.info("submitted", task=task.id)

    async def _record_answer(self, job: Job, task: Any) -> None:
        """Commit the task id of a paid submission.

        The answer is in hand: while the ledger's disk is full, keep it and try again, rather
        than let a restart turn a known task into an ambiguous one (paid for, never delivered).
        """
        wait = 0.5
        while True:
            try:
                self._move(
                    job,
                    S.SUBMITTING,
                    S.RUNNING,
                    f"task {task.id}",
                    task_id=task.id,
                    task_json=_json(task.raw),
                    submitted_at=self._clock(),
                )
                return
            except Exception as exc:
                if not disk_full(exc):
                    raise
                log.error(
                    "cannot record a submitted task: the disk holding the ledger is full; "
                    "trying again",
                    task=task.id,
                    retry_in=wait,
                    fix="free space on the disk of the state folder",
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, 10.0)

    def _requeued(self, job: Job) -> bool:
        return any("refused upload URL" in (e["detail"] or "") for e in self.ledger.events(job.id))

    async def _upload(self, ref: dict[str, Any]) -> str:
        # One upload per content hash, even when many jobs want the same reference at once.
        lock = self._upload_locks.setdefault(ref["sha256"], asyncio.Lock())
        async with lock:
            cached = self.ledger.cached_upload(ref["sha256"])
            if cached:
                return cached
            return await self._upload_now(ref)

    async def _upload_now(self, ref: dict[str, Any]) -> str:
        data = await asyncio.to_thread(Path(ref["path"]).read_bytes)
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise ValueError("it changed after the prompt file was read")
        fmt = ref["format"] or "png"
        up = await self.client.upload_image(
            data, filename=f"reference{EXTENSIONS[fmt]}", mime_type=MIME_TYPES[fmt]
        )
        self.ledger.record_upload(ref["sha256"], up.url, up.id, up.raw)
        return up.url

    def _poll_wait(self, job_id: int) -> float:
        """Seconds to wait before this job's next poll, counting it as polled.

        Just submitted: poll_first, stretched by at most poll_first_jitter (5%), so a short
        task is not held much past it. Resumed after a restart: at once. Later polls:
        poll_interval, stretched by up to poll_jitter (20%), so many jobs spread out.
        """
        opts = self.options
        if job_id in self._fresh:
            self._fresh.discard(job_id)
            base, jitter = opts.poll_first, opts.poll_first_jitter
        elif job_id not in self._polled:
            base, jitter = 0.0, 0.0
        else:
            base, jitter = opts.poll_interval, opts.poll_jitter
        self._polled.add(job_id)
        return (DEFAULT_POLL if base is None else base) * (1 + random.uniform(0, jitter))

    async def _poll(self, job: Job) -> None:
        await asyncio.sleep(self._poll_wait(job.id))
        assert job.task_id is not None
        bound = log.bind(job=job.id, task=job.task_id)
        try:
            task = await self.client.get_task(job.task_id)
        except TaskNotFound:
            self._fail(job, "the API no longer knows this task", src=S.RUNNING)
            return
        except AccountBlocked as exc:
            self._pause(exc, job)
            await self._wait_unpaused()
            return
        except ApiError as exc:
            bound.warning("poll failed; will poll again", error=exc.message)
            return
        if task.status == "completed" and task.url:
            self._move(
                job,
                S.RUNNING,
                S.DOWNLOADING,
                "completed",
                result_url=task.url,
                expires_at=task.expires_at,
                task_json=_json(task.raw),
            )
        elif task.status == "failed":
            self._fail(
                job,
                f"the API could not make this image: {task.error or 'no reason given'}",
                src=S.RUNNING,
            )
        else:
            self.ledger.update_running(job.id, _json(task.raw))

    async def _download(self, job: Job) -> None:
        assert job.result_url is not None
        self._critical += 1
        try:
            try:
                result = await self.client.download(job.result_url)
            except ResultUnavailable as exc:
                self._fail(
                    job,
                    f"the finished image could not be downloaded ({exc.message}); "
                    "its link may have expired",
                    src=S.DOWNLOADING,
                )
                return
            except ApiError as exc:
                log.warning("download failed; polling again", job=job.id, error=exc.message)
                self._move(job, S.DOWNLOADING, S.RUNNING, f"download failed: {exc.message}")
                return
            reached("after_download")
            if self.host is not None and self.ledger.holder(job.id) != self.host:
                # Only the host holding the claim writes: another one took this job over.
                raise LeaseLost(f"job {job.id} is no longer claimed by {self.host}")
            sha = hashlib.sha256(result.data).hexdigest()
            written = 0
            try:
                for source in self._live_sources(job):
                    if await self._place(job, source, result.data, result.format):
                        written += 1
            except OSError as exc:
                # Disk full, a share gone read-only...: nothing partial was left under a final
                # name; fetch and write again later (the result link lives about a day).
                log.error(
                    "could not write the image; will try again",
                    job=job.id,
                    error=exc.strerror or str(exc),
                    wait=self.options.retry_later,
                )
                self._move(job, S.DOWNLOADING, S.RUNNING, f"write failed: {exc}")
                await asyncio.sleep(self.options.retry_later)
                return
            reached("before_done")
            self._observe_latency(job)
            if written == 0:
                self.ledger.note_event(
                    job.id,
                    "no prompt file wants this image any more "
                    "(deleted or changed); nothing written",
                )
            self._move(
                job,
                S.DOWNLOADING,
                S.DONE,
                f"image written {written} time(s)",
                image_sha256=sha,
                image_format=result.format,
                finished_at=self._clock(),
            )
            log.info("done", job=job.id, task=job.task_id, written=written)
        finally:
            self._critical -= 1

    def _live_sources(self, job: Job) -> list[Path]:
        found = []
        for src in self.ledger.sources_for_request(job.request_hash):
            if (src.image_count or 1) >= job.image_index and os.path.isfile(src.path):
                found.append(Path(src.path))
        return found

    async def _deliver_existing(self, job: Job, source: Path) -> None:
        """A done job asked for by another (or renamed, or moved) file: copy, never pay."""
        if self.ledger.output_for(source, job) is not None:
            return
        for out in self.ledger.outputs_for_job(job.id):
            try:
                data = await asyncio.to_thread(Path(out.path).read_bytes)
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() == out.sha256:
                await self._place(
                    job, source, data, out.format or job.image_format or "png", stamp=False
                )
                return
        if job.result_url and (job.expires_at or 0) > self._clock() + 60:
            try:
                result = await self.client.download(job.result_url)
            except ApiError:
                pass
            else:
                await self._place(job, source, result.data, result.format)
                return
        outputs.write_note(
            source,
            f"This request was already made (task {job.task_id}), but its image file is gone "
            "and its download link has expired, so promptdrop did not pay for it again.\n"
            f'What to do: run "promptdrop retry {source}" to make a new image (it is paid again).',
        )

    async def _place(
        self, job: Job, source: Path, data: bytes, fmt: str, *, stamp: bool = True
    ) -> bool:
        """Write this job's image next to `source`; True when written (or already there)."""
        count = max(self.ledger.get_source(source).image_count or 1, job.image_index)  # type: ignore[union-attr]
        final = outputs.output_path(source, job.image_index, count, fmt)
        if stamp and fmt in ("png", "jpeg"):
            data = outputs.with_provenance(data, fmt, self._provenance(job, source))
        if os.path.lexists(final):
            record = self.ledger.output_at(final)
            if record is None:
                if self._is_ours(final, job.request_hash):
                    self.ledger.record_output(
                        final, job=job, source_path=source, sha256=_sha(final), fmt=fmt
                    )
                    self._settle_note(source)
                    return True
                outputs.write_note(
                    source,
                    f'"{final.name}" appeared in this folder and '
                    "promptdrop did not make it, so the new image was not saved "
                    "over it.\nWhat to do: rename or move it, then run "
                    f'"promptdrop retry {source}" (free: the image is kept '
                    "for 24 hours).",
                )
                return False
            if record.job_id == job.id and record.generation == job.generation:
                return True
            aside = await asyncio.to_thread(self._set_aside, final)
            self.ledger.move_output(final, aside)
        await asyncio.to_thread(outputs.write_atomic, final, data)
        reached("after_rename")
        self.ledger.record_output(
            final, job=job, source_path=source, sha256=hashlib.sha256(data).hexdigest(), fmt=fmt
        )
        self._settle_note(source)
        log.info("image written", job=job.id, source=str(source), file=str(final))
        return True

    @staticmethod
    def _set_aside(path: Path) -> Path:
        for _ in range(100):
            aside = outputs.versioned_path(path)
            try:
                outputs.move_no_clobber(path, aside)
                return aside
            except FileExistsError:
                continue  # the name was taken between the check and the move
        raise FileExistsError(f"no free numbered name beside {path}")

    def _provenance(self, job: Job, source: Path) -> dict[str, str]:
        req = job.request
        return {
            "promptdrop:prompt": req["prompt"],
            "promptdrop:model": req["model"],
            "promptdrop:size": req["size"],
            "promptdrop:task_id": job.task_id or "",
            "promptdrop:source": source.name,
            "promptdrop:request": job.request_hash,
            "promptdrop:index": str(job.image_index),
            "promptdrop:version": __version__,
        }

    # Daily budgets -------------------------------------------------------------------------

    def budget_left(self, rule_name: str | None) -> int | None:
        """Submissions the rule's daily budget still allows today; None when it has none.

        A day runs from local midnight by the engine's clock. Counted: every committed intent
        of the day, less those the API proved created nothing (refused, rate limited, an
        outage answer), by every host sharing the ledger.
        """
        budget = self._budget_of(rule_name)
        if budget is None:
            return None
        return max(budget.limit - self.ledger.spent_since(budget.since, budget.rule), 0)

    def _budget_of(self, rule_name: str | None) -> Budget | None:
        rule = self.rules.get(rule_name or "")
        if rule is None or rule.daily_budget is None:
            return None
        return Budget(rule.name, day_start(self._clock()), rule.daily_budget)

    def _budget(self, job: Job) -> Budget | None:
        return self._budget_of(job.rule)

    def recheck_budgets(self) -> int:
        """Start the waiting jobs today's budgets have room for, oldest first; return how many.

        Called at local midnight by the engine's own timer, by `resume`, and after a reload;
        tests call it after moving the clock. Waiting jobs no prompt file wants any more fail.
        """
        if self.stopping:
            return 0
        started = 0
        left: dict[str, int | None] = {}
        sources: set[Path] = set()
        remaining = 0
        for job in self.ledger.jobs(S.WAITING):
            name = job.rule or ""
            if name not in left:
                left[name] = self.budget_left(name)
            room = left[name]
            if room is not None and room <= 0:
                remaining += 1
                continue
            live = self._live_sources(job)
            try:
                if not live:
                    self._move(
                        job,
                        S.WAITING,
                        S.FAILED,
                        _ORPHANED,
                        error=_ORPHANED,
                        finished_at=self._clock(),
                    )
                    continue
                self._move(job, S.WAITING, S.PENDING, "a new day's budget has room")
            except StaleTransition:
                continue
            if room is not None:
                left[name] = room - 1
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

    def _budget_allows(self, job: Job) -> bool:
        left = self.budget_left(job.rule)
        return left is None or left > 0

    def _hold(self, job: Job) -> None:
        """Park a job whose rule's budget is spent for today, and say so next to its file."""
        if job.state is S.UPLOADING:
            job = self._move(job, S.UPLOADING, S.PENDING, "daily budget spent")
        rule = self.rules[job.rule or ""]
        self._move(
            job,
            S.PENDING,
            S.WAITING,
            f"the daily budget of {rule.daily_budget} is spent; waits for the next day",
        )
        log.info(
            "daily budget spent; the job waits for the next day",
            job=job.id,
            rule=rule.name,
            budget=rule.daily_budget,
        )
        self._note_sources(job, self._waiting_text)
        self._arm_budget_timer()

    def _arm_budget_timer(self) -> None:
        if self.stopping or (self._budget_timer is not None and not self._budget_timer.done()):
            return
        self._budget_timer = asyncio.get_running_loop().create_task(
            self._budget_loop(), name="budget-timer"
        )

    async def _budget_loop(self) -> None:
        # Not a job task: `wait_idle` (and so --once) does not wait for tomorrow.
        while not self.stopping:
            now = self._clock()
            await asyncio.sleep(max(0.01, min(next_day(now) - now, self.options.budget_check)))
            try:
                self.recheck_budgets()
            except Exception:
                log.exception("could not start waiting jobs; trying again later")
            if not self.ledger.jobs(S.WAITING):
                return

    def _waiting_text(self, job: Job, _source: Path) -> str:
        rule = self.rules.get(job.rule or "")
        budget = rule.daily_budget if rule is not None else None
        when = datetime.fromtimestamp(next_day(self._clock()))
        return (
            f"Not yet: this folder's daily budget of {budget} image{'' if budget == 1 else 's'}"
            " is used up for today, so this file waits. It starts by itself tomorrow "
            f"({when:%A} {when.day} {when:%B}) from 00:00, or on a later day if more files are "
            "waiting than one day's budget allows. Nothing was sent or paid for it yet.\n"
            "What to do: nothing, it starts on its own. To have it sooner, ask whoever runs "
            "promptdrop to raise daily_budget in the rules file."
        )

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
            self.metrics.task_done(time.monotonic() - started)
            return
        # Submitted before a restart: the ledger's record of the intent says when.
        intents = [
            e["at"]
            for e in self.ledger.events(job.id)
            if e["to_state"] == S.SUBMITTING and e["from_state"] != e["to_state"]
        ]
        if intents:
            self.metrics.task_done(self._clock() - intents[-1])

    # Claims (a ledger shared by several hosts) ------------------------------------------------

    def _claim(self, job_id: int) -> bool:
        """Claim the job for this host (always True with a ledger of our own)."""
        if self.host is None:
            return True
        if not self.ledger.claim(job_id, self.host, self.options.lease_ttl):
            self._claimed.discard(job_id)
            return False
        self._claimed.add(job_id)
        self._arm_lease_timer()
        return True

    def _arm_lease_timer(self) -> None:
        if (
            self.host is None
            or self.stopping
            or (self._lease_timer is not None and not self._lease_timer.done())
        ):
            return
        self._lease_timer = asyncio.get_running_loop().create_task(
            self._lease_loop(), name="lease-timer"
        )

    async def _lease_loop(self) -> None:
        # Not a job task: `wait_idle` does not wait for it. Renews this host's claims, and takes
        # over the work of hosts that stopped renewing theirs: running tasks are polled by
        # their task id, never sent again; a submission whose answer died with its host is
        # ambiguous, as after a crash.
        assert self.host is not None
        while not self.stopping:
            await asyncio.sleep(self.options.lease_ttl / 3)
            try:
                self.ledger.renew(self.host, self.options.lease_ttl)
                for job in self.ledger.take_over(self.host, self.options.lease_ttl):
                    log.info(
                        "took over a job of a host that stopped",
                        job=job.id,
                        state=str(job.state),
                        task=job.task_id,
                    )
                    if job.state is S.AMBIGUOUS:  # final: its claim ended with the move
                        self._note_sources(job, _ambiguous_text)
                    else:
                        self._claimed.add(job.id)
                        self.launch(job.id)
            except Exception:
                log.exception("could not renew or take over claims; trying again")

    # State helpers ---------------------------------------------------------------------------

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
        return moved

    def _fail(self, job: Job, message: str, *, src: JobState | None = None) -> None:
        job = self._move(
            job, src or job.state, S.FAILED, message, error=message, finished_at=self._clock()
        )
        log.warning("job failed", job=job.id, error=message)
        self._note_sources(job, lambda j, _s: _failed_text(j))

    def _note_sources(self, job: Job, text: Callable[[Job, Path], str]) -> None:
        for source in self._live_sources(job):
            outputs.write_note(source, text(job, source))

    def _pause(self, exc: AccountBlocked, job: Job | None = None) -> None:
        wait = (
            self.options.pause_first
            if self.pause is None
            else min(self.pause.wait * 2, self.options.pause_cap)
        )
        what = (
            "the API refused the key" if exc.reason == "auth" else "the account has no quota left"
        )
        self.pause = Pause(reason=f"{what}: {exc.message}", until=self._clock() + wait, wait=wait)
        self._unpaused.clear()
        log.error(
            "submissions paused",
            reason=what,
            retry_in=round(wait),
            fix="set a valid TOAPIS_API_KEY"
            if exc.reason == "auth"
            else "add credit to the ToAPIs account",
        )
        if job is not None:
            self._note_sources(
                job,
                lambda _j, _s: (
                    f"Submissions are paused: {what}. Nothing is lost: this file waits and is "
                    f"made as soon as the API accepts requests again (promptdrop tries every "
                    f"{round(wait)} seconds).\nWhat to do: "
                    + (
                        "ask whoever runs promptdrop to check its API key."
                        if exc.reason == "auth"
                        else "add credit to the ToAPIs account."
                    )
                ),
            )

    async def _wait_unpaused(self) -> None:
        while self.pause is not None and not self.stopping:
            delay = self.pause.until - self._clock()
            if delay <= 0:
                # Let requests through again; the next refusal pauses for longer.
                self._unpaused.set()
                return
            try:
                await asyncio.wait_for(self._unpaused.wait(), timeout=min(delay, 5.0))
            except TimeoutError:
                continue
            return

    def note_success(self) -> None:
        """Called when a submission went through: the account works again."""
        self.pause = None
        self._unpaused.set()


def day_start(at: float) -> float:
    """The local midnight that began the day holding the epoch time `at`."""
    day = datetime.fromtimestamp(at).date()
    return datetime(day.year, day.month, day.day).timestamp()


def next_day(at: float) -> float:
    """The local midnight that ends the day holding the epoch time `at`."""
    day = datetime.fromtimestamp(at).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day).timestamp()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _chain(first: Callable[..., None] | None, then: Callable[..., None]) -> Callable[..., None]:
    """A hook that calls an observer already in place, then ours."""
    if first is None:
        return then

    def both(*args: Any) -> None:
        first(*args)
        then(*args)

    return both


def _read_small(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO named *.prompt.toml must never hang the daemon.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        return os.read(fd, 2 * 1024 * 1024)
    finally:
        os.close(fd)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json(raw: Any) -> str:
    return json.dumps(raw, sort_keys=True)


def _problems_text(exc: SpecError) -> str:
    lines = []
    for p in exc.problems:
        where = f"line {p.line}: " if p.line is not None else ""
        lines.append(f"- {where}{p.message}")
    return (
        "This prompt file cannot be used yet:\n"
        + "\n".join(lines)
        + "\nWhat to do: fix the file and save it again; nothing was sent or paid."
    )


def _failed_text(job: Job) -> str:
    return (
        f"No image was made: {job.error or 'the request failed'}.\n"
        "What to do: change the prompt file and save it again, or run "
        '"promptdrop retry" on it to try the same request again.'
    )


def _ambiguous_text(job: Job, source: Path) -> str:
    return (
        "promptdrop sent this request, but the answer was lost (a crash, a lost connection or a "
        "timeout), so it may or may not have been made and paid for. To avoid paying twice it "
        "was not sent again.\n"
        f'What to do: if no image appears, run "promptdrop retry {source}" to send it again.'
    )
