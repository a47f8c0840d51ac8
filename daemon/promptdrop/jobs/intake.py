"""Prompt files arriving, changing, going away: validated, and their jobs started or reused.

A prompt file becomes a *source*; its effective request becomes one *job* per image index,
keyed by (request hash, index), so the same request never costs twice whichever file asks
for it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import stat
from pathlib import Path

import structlog

from promptdrop import outputs
from promptdrop.api import TaskState
from promptdrop.jobs import adoption, late_refs, notes
from promptdrop.jobs.delivery import Delivery
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.ledger import Job, JobState, Source, StaleTransition
from promptdrop.spec import RuleConfig, SpecError, read_prompt_file

S = JobState
log = structlog.get_logger("promptdrop.engine")

# Output names an image of this job could take, whatever format the API returns.
OUTPUT_FORMATS = ("png", "jpeg", "webp")


class Intake(Delivery):
    """The prompt file's side of the engine."""

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
        try:
            data = await asyncio.to_thread(read_small, path)
        except OSError:
            data = None  # vanished, or not a regular file: the spec check says which
        content_sha = hashlib.sha256(data).hexdigest() if data is not None else None
        if content_sha is not None and self._settled(path, content_sha):
            # Touched, re-synced or rescanned (every start) with the same bytes, and each image
            # is made and still there: what the checks below conclude, in one query and a stat.
            return
        prev = self.ledger.get_source(path)
        if (
            prev is not None
            and content_sha is not None
            and prev.content_sha256 == content_sha
            and prev.status == "active"
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
            # Refused before with these very bytes: not caught half-written, only checked again
            # (a touch, a rescan, a reference that appeared).
            seen = prev is not None and prev.content_sha256 == content_sha
            if exc.not_ready and settle_retry and not seen:
                # Maybe caught half-written: give the writer one more settle period.
                await asyncio.sleep(max(rule.settle, 0.2))
                await self.handle_file(path, rule, settle_retry=False)
            elif path.exists():
                self._refuse(path, rule, prev, content_sha, exc)
            return
        h = request.request_hash
        foreign = self._foreign_output(path, request.count, h)
        if foreign is not None:
            self._block(path, rule, prev, content_sha, h, request.count, foreign)
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
        log.info("prompt file taken up", source=str(path), request=h[:12], images=request.count)
        for i, job in enumerate(jobs):
            # Read again after the first: considering one job may await (a copy, a download).
            await self._consider(job if i == 0 else self.ledger.get_job(job.id), path, rule)

    def _settled(self, path: Path, content_sha: str) -> bool:
        """Nothing to do for these bytes: each image is done and its file is there (a missing
        one is brought back by the slower road, for free while it can be)."""
        current = self.ledger.settled_outputs(path, content_sha)
        return current is not None and all(os.path.lexists(p) for p in current)

    def _refuse(
        self,
        path: Path,
        rule: RuleConfig,
        prev: Source | None,
        content_sha: str | None,
        exc: SpecError,
    ) -> None:
        missing = exc.missing_references()
        if missing:
            # Only reference images that are not there yet: wait for them, no edit needed.
            message = notes.waiting_for_text(late_refs.shown_names(path, missing))
            self.late_references.wait(path, rule.name, missing)
        else:
            message = notes.problems_text(exc, path)
            self.late_references.forget(path)
        # Checked again (a rescan, a touch) and refused as before: nothing new to record or log.
        again = (
            prev is not None
            and prev.status == "invalid"
            and (prev.content_sha256, prev.error, prev.rule) == (content_sha, message, rule.name)
        )
        if not again:
            self.ledger.put_source(
                path, rule=rule.name, status="invalid", content_sha256=content_sha, error=message
            )
            self._drop_orphans(prev, None)
        outputs.write_note(path, message)  # unchanged text is not rewritten
        if again:
            return
        note = str(outputs.note_path(path))
        if missing:
            shown = ", ".join(late_refs.shown_names(path, missing))
            log.info("prompt file waits for a reference image", source=str(path), waits_for=shown)
        else:
            first = exc.problems[0].message if exc.problems else "invalid"
            log.warning("prompt file refused", source=str(path), problem=first, note=note)

    def _block(
        self,
        path: Path,
        rule: RuleConfig,
        prev: Source | None,
        content_sha: str | None,
        request_hash: str,
        count: int,
        foreign: Path,
    ) -> None:
        message = notes.foreign_output_text(foreign.name)
        self.ledger.put_source(
            path,
            rule=rule.name,
            status="blocked",
            content_sha256=content_sha,
            request_hash=request_hash,
            image_count=count,
            error=message,
        )
        self._drop_orphans(prev, None)
        outputs.write_note(path, message)
        log.warning("output name taken by a foreign file", source=str(path), file=str(foreign))

    def handle_deleted(self, path: Path) -> None:
        """A prompt file went away: its running tasks finish, but nothing is written for it.

        Its jobs waiting for the daily budget fail (nothing was sent for them), unless another
        prompt file asks for the same request.
        """
        self.late_references.forget(path)
        if not os.path.lexists(path):
            outputs.clear_note(path)  # a note goes with its prompt file (conflict copies too)
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
        outputs.write_note(path, notes.CONFLICT, goes_away=outputs.notes.GOES_WHEN_DELETED)

    @functools.cached_property
    def late_references(self) -> late_refs.LateReferences:
        """The prompt files refused only for reference images that are not there yet."""
        return late_refs.LateReferences()

    async def recheck_references(self) -> int:
        """Take up again each prompt file one of whose missing references has appeared (and
        held still since the last look); return how many. Called on every kick."""
        waiting = self.late_references
        if not len(waiting):
            return 0
        seen = await asyncio.to_thread(late_refs.present, waiting.paths())
        due = waiting.arrived(seen)
        for source, rule_name in due:
            rule = self.rules.get(rule_name)
            if rule is not None:
                log.info(
                    "a missing reference appeared; reading the prompt file again",
                    source=str(source),
                )
                await self.handle_file(source, rule)
        return len(due)

    def _drop_orphans(self, prev: Source | None, new_hash: str | None) -> None:
        """Fail the waiting jobs of `prev`'s old request that no prompt file wants any more."""
        if prev is None or not prev.request_hash or prev.request_hash == new_hash:
            return
        for job in self.ledger.jobs_for_request(prev.request_hash):
            if job.state is S.WAITING and not self._live_sources(job):
                self._commit(job, Outcome(Kind.ORPHANED))

    async def _consider(self, job: Job, source: Path, rule: RuleConfig) -> None:
        if job.state is S.DONE:
            await self._deliver_existing(job, source)
        elif job.state is S.FAILED and job.error == notes.ORPHANED:
            # It waited for the budget, its file went away, and the same request is back.
            self._commit(job, Outcome(Kind.WANTED_AGAIN))
        elif job.state is S.FAILED:
            outputs.write_note(source, notes.failed_text(job.error, job.request))
        elif job.state is S.WAITING:
            outputs.write_note(source, self._waiting_text(job, source))
            self._arm_budget_timer()
        elif job.state is S.AMBIGUOUS:
            if rule.resubmit_ambiguous:
                self._commit(job, Outcome(Kind.RESUBMIT_ALLOWED))
            elif job.business_id is not None:
                self.launch(job.id)  # looked up by its business id; the note if unsettled
            else:
                outputs.write_note(source, notes.ambiguous_text(source, job.request))
        elif job.state is S.PENDING and await self._adopt(job, source):
            return  # the folder already held its image: nothing to send
        else:
            self.launch(job.id)

    async def _adopt(self, job: Job, source: Path) -> bool:
        """Record as this job's image one that promptdrop made for exactly this request and
        index and that is in the folder already (a fresh ledger, another daemon's work); True
        when adopted. A kept version found this way is then brought back to the plain name."""
        count = self._count(job, source)
        found = await asyncio.to_thread(adoption.look, source, job.image_index, count)
        pick = adoption.choose(found, job.request_hash, job.image_index)
        if pick is None:
            return False
        task = TaskState(
            id=pick.task_id,
            status="completed",
            raw_status="adopted",
            progress=None,
            url=None,
            expires_at=None,
            error=None,
            raw={"adopted_from": pick.path.name, "task_id": pick.task_id},
        )
        outcome = Outcome(
            Kind.ADOPTED,
            pick.path.name,
            task=task,
            image_sha256=pick.sha256,
            image_format=pick.format,
        )
        try:
            done = self._commit(job, outcome)
        except StaleTransition:
            return True  # another daemon moved it meanwhile: it is that daemon's now
        self.ledger.record_output(
            pick.path, job=done, source_path=source, sha256=pick.sha256, fmt=pick.format
        )
        if pick.plain:
            self._settle_note(source)
        else:
            await self._deliver_existing(done, source)  # a revert: back to the plain name
        return True

    def _foreign_output(self, source: Path, count: int, request_hash: str) -> Path | None:
        """A file under one of this source's output names that promptdrop did not write."""
        for index in range(1, count + 1):
            for fmt in OUTPUT_FORMATS:
                candidate = outputs.output_path(source, index, count, fmt)
                if os.path.lexists(candidate) and not self._is_ours(
                    candidate, request_hash, source
                ):
                    return candidate
        return None


def read_small(path: Path) -> bytes:
    """The first 2 MiB of a regular file (OSError for anything else)."""
    # O_NONBLOCK: a FIFO named *.prompt.toml must never hang the daemon.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        return os.read(fd, 2 * 1024 * 1024)
    finally:
        os.close(fd)
