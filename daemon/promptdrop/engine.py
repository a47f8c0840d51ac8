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
from promptdrop.ledger import FINAL, Job, JobState, Ledger, StaleTransition
from promptdrop.spec import RuleConfig, SpecError, read_prompt_file

S = JobState
log = structlog.get_logger("promptdrop.engine")

# Output names an image of this job could take, whatever format the API returns.
_OUTPUT_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class EngineOptions:
    poll_first: float = 5.0  # the docs: first poll about 5 s after submitting
    poll_interval: float = 5.0  # then every 5-10 s, with jitter
    poll_jitter: float = 0.2  # a fraction of the interval
    retry_later: float = 30.0  # a job the API could not take now (outage, rate limit) waits this
    pause_first: float = 60.0  # a refused key or empty quota: first wait before trying again
    pause_cap: float = 900.0
    drain_timeout: float = 8.0  # SIGTERM: how long writes and in-flight POSTs may finish


@dataclass
class Pause:
    reason: str
    until: float
    wait: float


class Engine:
    """Turns settled prompt files into jobs and jobs into images."""

    def __init__(
        self,
        ledger: Ledger,
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

    def update_rules(self, rules: list[RuleConfig]) -> None:
        """Take new rules (a reload) without touching running jobs.

        A job already running keeps the slot it holds; a changed `max_in_flight` applies to jobs
        that start from now on. Jobs of a rule that disappeared keep running to the end.
        """
        old = self.rules
        self.rules = {r.name: r for r in rules}
        for rule in rules:
            before = old.get(rule.name)
            if before is None or before.max_in_flight != rule.max_in_flight:
                self._slots[rule.name] = asyncio.Semaphore(rule.max_in_flight)

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
        prev = self.ledger.get_source(path)
        if (prev is not None and content_sha is not None and prev.content_sha256 == content_sha
                and prev.status in ("active", "invalid")):
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
            self.ledger.put_source(path, rule=rule.name, status="invalid",
                                   content_sha256=content_sha, error=message)
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
            self.ledger.put_source(path, rule=rule.name, status="blocked",
                                   content_sha256=content_sha, request_hash=h,
                                   image_count=request.count, error=message)
            outputs.write_note(path, message)
            bound.warning("output name taken by a foreign file", file=str(foreign))
            return
        self.ledger.put_source(path, rule=rule.name, status="active", content_sha256=content_sha,
                               request_hash=h, image_count=request.count)
        bound.info("prompt file taken up", request=h[:12], images=request.count)
        for index in range(1, request.count + 1):
            job = self.ledger.ensure_job(h, index, request.canonical(), rule.name)
            await self._consider(job, path, rule)

    def handle_deleted(self, path: Path) -> None:
        """A prompt file went away: its running tasks finish, but nothing is written for it."""
        src = self.ledger.get_source(path)
        if src is not None and src.status != "deleted":
            self.ledger.set_source_status(path, "deleted", "the prompt file was deleted")
            log.info("prompt file deleted", source=str(path))

    def handle_conflict(self, path: Path, rule: RuleConfig) -> None:
        """A sync client's conflict copy: never processed, and the folder says why."""
        self.ledger.put_source(path, rule=rule.name, status="conflict",
                               error="conflict copy made by a sync app")
        outputs.write_note(
            path,
            "This file looks like a conflict copy made by your sync app (two people or two "
            "computers changed the same prompt file at once), so promptdrop did not use it.\n"
            "What to do: compare it with the original, keep the version you want under the "
            "original name, and delete this copy.",
        )

    async def _consider(self, job: Job, source: Path, rule: RuleConfig) -> None:
        if job.state is S.DONE:
            await self._deliver_existing(job, source)
        elif job.state is S.FAILED:
            outputs.write_note(source, _failed_text(job))
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

        Also picks up jobs that `promptdrop retry` moved back to pending while we run.
        """
        for job in self.ledger.jobs(S.PENDING, S.UPLOADING, S.RUNNING, S.DOWNLOADING):
            self.launch(job.id)

    async def drain(self) -> None:
        """Stop taking work; let POSTs on the wire and file writes finish; cancel the rest."""
        self.stopping = True
        self._unpaused.set()
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
            job=job.id, source=str(sources[0]) if sources else None, task=job.task_id)
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
            log.exception("job stopped by an unexpected error; it resumes on the next start",
                          job=job_id)

    async def _drive(self, job_id: int) -> None:
        while not self.stopping:
            job = self.ledger.get_job(job_id)
            if job.state in FINAL:
                return
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
        self._move(job, S.SUBMITTING, S.AMBIGUOUS, "the answer to the submission was lost",
                   error="the answer to the submission was lost")
        self._note_sources(job, _ambiguous_text)

    async def _submit(self, job: Job) -> None:
        await self._wait_unpaused()
        if self.stopping:
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
                self._fail(job, f"the reference image {ref['source']!r} could not be read "
                                f"({exc}); save the prompt file again once it is back")
                return
            except RequestRejected as exc:
                self._fail(job, f"the API refused the reference image {ref['source']!r}: "
                                f"{exc.message}")
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
        job = self._move(job, job.state, S.SUBMITTING, "submitting", count_attempt=True,
                         intent_at=self._clock())
        reached("after_intent")
        self._critical += 1
        try:
            task = await self.client.submit(
                model=req["model"], prompt=req["prompt"], size=req["size"],
                image_urls=image_urls, metadata=req["metadata"] or None,
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
            bound.warning("the API could not take the request; trying again later",
                          error=exc.message, wait=self.options.retry_later)
            await asyncio.sleep(self.options.retry_later)
            return
        except Ambiguous as exc:
            self._move(job, S.SUBMITTING, S.AMBIGUOUS, f"answer lost: {exc.message}",
                       error=exc.message)
            bound.error("submission answer lost; not resending (it may have been paid)",
                        error=exc.message)
            self._note_sources(job, _ambiguous_text)
            return
        finally:
            self._critical -= 1
        reached("after_answer")
        self._move(job, S.SUBMITTING, S.RUNNING, f"task {task.id}", task_id=task.id,
                   task_json=_json(task.raw), submitted_at=self._clock())
        reached("after_running")
        structlog.contextvars.bind_contextvars(task=task.id)
        self._fresh.add(job.id)
        if self.pause is not None:
            self.note_success()
        bound.info("submitted", task=task.id)

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

    async def _poll(self, job: Job) -> None:
        # First poll a little after submitting (per the docs); a task resumed after a restart
        # is polled at once; then every interval, with jitter so many jobs spread out.
        if job.id in self._fresh:
            self._fresh.discard(job.id)
            wait = self.options.poll_first
        elif job.id not in self._polled:
            wait = 0.0
        else:
            wait = self.options.poll_interval
        self._polled.add(job.id)
        await asyncio.sleep(wait * (1 + random.uniform(0, self.options.poll_jitter)))
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
            self._move(job, S.RUNNING, S.DOWNLOADING, "completed", result_url=task.url,
                       expires_at=task.expires_at, task_json=_json(task.raw))
        elif task.status == "failed":
            self._fail(job, f"the API could not make this image: {task.error or 'no reason given'}",
                       src=S.RUNNING)
        else:
            self.ledger.update_running(job.id, _json(task.raw))

    async def _download(self, job: Job) -> None:
        assert job.result_url is not None
        self._critical += 1
        try:
            try:
                result = await self.client.download(job.result_url)
            except ResultUnavailable as exc:
                self._fail(job, f"the finished image could not be downloaded ({exc.message}); "
                                "its link may have expired", src=S.DOWNLOADING)
                return
            except ApiError as exc:
                log.warning("download failed; polling again", job=job.id, error=exc.message)
                self._move(job, S.DOWNLOADING, S.RUNNING, f"download failed: {exc.message}")
                return
            reached("after_download")
            sha = hashlib.sha256(result.data).hexdigest()
            written = 0
            try:
                for source in self._live_sources(job):
                    if await self._place(job, source, result.data, result.format):
                        written += 1
            except OSError as exc:
                # Disk full, a share gone read-only...: nothing partial was left under a final
                # name; fetch and write again later (the result link lives about a day).
                log.error("could not write the image; will try again", job=job.id,
                          error=exc.strerror or str(exc), wait=self.options.retry_later)
                self._move(job, S.DOWNLOADING, S.RUNNING, f"write failed: {exc}")
                await asyncio.sleep(self.options.retry_later)
                return
            reached("before_done")
            if written == 0:
                self.ledger.note_event(job.id, "no prompt file wants this image any more "
                                               "(deleted or changed); nothing written")
            self._move(job, S.DOWNLOADING, S.DONE, f"image written {written} time(s)",
                       image_sha256=sha, image_format=result.format, finished_at=self._clock())
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
                await self._place(job, source, data, out.format or job.image_format or "png",
                                  stamp=False)
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

    async def _place(self, job: Job, source: Path, data: bytes, fmt: str, *,
                     stamp: bool = True) -> bool:
        """Write this job's image next to `source`; True when written (or already there)."""
        count = max(self.ledger.get_source(source).image_count or 1, job.image_index)  # type: ignore[union-attr]
        final = outputs.output_path(source, job.image_index, count, fmt)
        if stamp and fmt in ("png", "jpeg"):
            data = outputs.with_provenance(data, fmt, self._provenance(job, source))
        if os.path.lexists(final):
            record = self.ledger.output_at(final)
            if record is None:
                if self._is_ours(final, job.request_hash):
                    self.ledger.record_output(final, job=job, source_path=source,
                                              sha256=_sha(final), fmt=fmt)
                    outputs.clear_note(source)
                    return True
                outputs.write_note(source, f'"{final.name}" appeared in this folder and '
                                   "promptdrop did not make it, so the new image was not saved "
                                   "over it.\nWhat to do: rename or move it, then run "
                                   f'"promptdrop retry {source}" (free: the image is kept '
                                   "for 24 hours).")
                return False
            if record.job_id == job.id and record.generation == job.generation:
                return True
            aside = await asyncio.to_thread(self._set_aside, final)
            self.ledger.move_output(final, aside)
        await asyncio.to_thread(outputs.write_atomic, final, data)
        reached("after_rename")
        self.ledger.record_output(final, job=job, source_path=source,
                                  sha256=hashlib.sha256(data).hexdigest(), fmt=fmt)
        outputs.clear_note(source)
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

    # State helpers ---------------------------------------------------------------------------

    def _move(self, job: Job, src: JobState, dst: JobState, detail: str, *,
              count_attempt: bool = False, **fields: Any) -> Job:
        return self.ledger.transition(job.id, src, dst, detail=detail,
                                      count_attempt=count_attempt, **fields)

    def _fail(self, job: Job, message: str, *, src: JobState | None = None) -> None:
        job = self._move(job, src or job.state, S.FAILED, message, error=message,
                         finished_at=self._clock())
        log.warning("job failed", job=job.id, error=message)
        self._note_sources(job, lambda j, _s: _failed_text(j))

    def _note_sources(self, job: Job, text: Callable[[Job, Path], str]) -> None:
        for source in self._live_sources(job):
            outputs.write_note(source, text(job, source))

    def _pause(self, exc: AccountBlocked, job: Job | None = None) -> None:
        wait = self.options.pause_first if self.pause is None else min(
            self.pause.wait * 2, self.options.pause_cap)
        what = ("the API refused the key" if exc.reason == "auth"
                else "the account has no quota left")
        self.pause = Pause(reason=f"{what}: {exc.message}", until=self._clock() + wait, wait=wait)
        self._unpaused.clear()
        log.error("submissions paused", reason=what, retry_in=round(wait),
                  fix="set a valid TOAPIS_API_KEY" if exc.reason == "auth"
                  else "add credit to the ToAPIs account")
        if job is not None:
            self._note_sources(job, lambda _j, _s: (
                f"Submissions are paused: {what}. Nothing is lost: this file waits and is "
                f"made as soon as the API accepts requests again (promptdrop tries every "
                f"{round(wait)} seconds).\nWhat to do: "
                + ("ask whoever runs promptdrop to check its API key."
                   if exc.reason == "auth" else "add credit to the ToAPIs account.")))

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
    return ("This prompt file cannot be used yet:\n" + "\n".join(lines)
            + "\nWhat to do: fix the file and save it again; nothing was sent or paid.")


def _failed_text(job: Job) -> str:
    return (f"No image was made: {job.error or 'the request failed'}.\n"
            "What to do: change the prompt file and save it again, or run "
            '"promptdrop retry" on it to try the same request again.')


def _ambiguous_text(job: Job, source: Path) -> str:
    return (
        "promptdrop sent this request, but the answer was lost (a crash, a lost connection or a "
        "timeout), so it may or may not have been made and paid for. To avoid paying twice it "
        "was not sent again.\n"
        f'What to do: if no image appears, run "promptdrop retry {source}" to send it again.'
    )
