"""Placing a finished image next to its prompt files: never over a file promptdrop did not
write, earlier versions (in any format) set aside under numbered names, provenance stamped in;
and bringing an image back for free (a revert, a deleted file, a copied prompt file).

What goes where is decided by `outputs.versions.plan_placement` from what is at the plain
names; this module only looks (the ledger, a stat, provenance) and performs the plan.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import structlog

from promptdrop import __version__, imaging, outputs
from promptdrop.api import ApiError
from promptdrop.crashpoints import reached
from promptdrop.jobs import notes
from promptdrop.jobs.core import EngineCore
from promptdrop.ledger import Job, Output
from promptdrop.outputs.naming import plain_names
from promptdrop.outputs.versions import Found, Plan, plan_placement

log = structlog.get_logger("promptdrop.engine")

# A name taken or freed between looking and moving: look again, this many times at most.
_TRIES = 5


class Delivery(EngineCore):
    """Writing images: the engine's only file writes besides notes."""

    def _is_ours(
        self, path: Path, request_hash: str | None = None, source: Path | None = None
    ) -> bool:
        """Whether promptdrop made the file at `path`: the ledger recorded it, or its
        provenance says it was made for `request_hash` (written just before a crash, before
        the ledger recorded it) or for the prompt file `source` (an earlier version)."""
        if self.ledger.output_at(path) is not None:
            return True
        if (request_hash is None and source is None) or path.is_symlink() or not path.is_file():
            return False
        try:
            info = outputs.read_provenance(path.read_bytes())
        except OSError:
            return False
        if request_hash is not None and info.get("promptdrop:request") == request_hash:
            return True
        return source is not None and info.get("promptdrop:source") == source.name

    # Bringing a done job's image back ----------------------------------------------------------

    async def _deliver_existing(self, job: Job, source: Path) -> None:
        """A done job asked for by this file (again): put its image at the plain name for
        free, from the file kept for it (a revert), a copy of the same image, or the result
        link while it lives; else say that a new image would be paid."""
        names = set(plain_names(source, job.image_index, self._count(job, source)))
        mine = self.ledger.outputs_for_source_job(source, job)
        there = [o for o in mine if os.path.lexists(o.path)]
        if any(Path(o.path) in names for o in there):
            return  # in place
        for out in there:  # kept as a version: bring it back (the current one becomes one)
            if await self._restore(job, source, out):
                return
        if await self._copy_kept(job, source, mine):
            self._forget_gone(mine)
            return
        if job.result_url and (job.expires_at or 0) > self._clock() + 60:
            try:
                result = await self.client.download(job.result_url)
            except ApiError:
                pass
            else:
                await self._place(job, source, result.data, result.format)
                self._forget_gone(mine)
                return
        outputs.write_note(source, notes.link_expired_text(job.task_id, source))

    async def _restore(self, job: Job, source: Path, out: Output) -> bool:
        """Move the file kept at `out` (this job's image) back to its plain name."""
        data = await asyncio.to_thread(_read_or_none, Path(out.path))
        if data is None or hashlib.sha256(data).hexdigest() != out.sha256:
            return False  # changed since: no longer the image promptdrop kept
        fmt = out.format or imaging.sniff(data) or "png"
        return await self._place(job, source, data, fmt, kept=out)

    async def _copy_kept(self, job: Job, source: Path, mine: list[Output]) -> bool:
        """Copy the image from another file of ours holding it (any source, any version)."""
        candidates = self.ledger.outputs_for_job(job.id)
        for gone in mine:
            candidates += self.ledger.outputs_with_sha(gone.sha256)
        for out in candidates:
            data = await asyncio.to_thread(_read_or_none, Path(out.path))
            if data is not None and hashlib.sha256(data).hexdigest() == out.sha256:
                fmt = out.format or job.image_format or imaging.sniff(data) or "png"
                return await self._place(job, source, data, fmt, stamp=False)
        return False

    def _forget_gone(self, records: list[Output]) -> None:
        for out in records:
            if not os.path.lexists(out.path) and self.ledger.output_at(out.path) == out:
                self.ledger.forget_output(out.path)

    # Placing ------------------------------------------------------------------------------

    async def _place(
        self,
        job: Job,
        source: Path,
        data: bytes,
        fmt: str,
        *,
        stamp: bool = True,
        kept: Output | None = None,
    ) -> bool:
        """Make this job's image the current one of `source`: written (or, with `kept`, moved
        back from where it was kept), after every earlier image of ours at any of the plain
        names is set aside. True when the image is now beside `source`."""
        final = outputs.output_path(source, job.image_index, self._count(job, source), fmt)
        if stamp and kept is None and fmt in ("png", "jpeg", "webp"):
            data = outputs.with_provenance(data, fmt, provenance(job, source))
        keep = None if kept is None else Path(kept.path)
        for attempt in range(_TRIES):
            plan = await self._plan(job, source, final, keep)
            try:
                await self._carry_out(plan, job, source, data, fmt)
            except (FileExistsError, FileNotFoundError):
                if attempt == _TRIES - 1:
                    raise
                continue  # a name was taken or freed under us: look again
            where = plan.image
            if where is None and keep is not None and kept is not None:
                # Its plain name is held by a foreign file: it stays where it was kept, now
                # as the current image.
                self.ledger.record_output(
                    keep, job=job, source_path=source, sha256=kept.sha256, fmt=fmt
                )
                where = keep
            if plan.displaced_by is not None and where is not None:
                text = notes.displaced_text(plan.displaced_by.name, where.name)
                outputs.write_note(source, text)
                log.warning(
                    "image saved beside a foreign file", source=str(source), file=str(where)
                )
            else:
                self._settle_note(source)
            return True
        raise AssertionError("unreachable")

    async def _plan(self, job: Job, source: Path, final: Path, kept: Path | None) -> Plan:
        names = plain_names(source, job.image_index, self._count(job, source))
        records = {p: self.ledger.output_at(p) for p in names}  # on the ledger's thread
        found = await asyncio.to_thread(_look, job, source, records)
        return plan_placement(final, found, os.path.lexists, kept=kept)

    async def _carry_out(self, plan: Plan, job: Job, source: Path, data: bytes, fmt: str) -> None:
        for move in plan.aside:
            await asyncio.to_thread(outputs.move_no_clobber, move.src, move.dst)
            if self.ledger.output_at(move.src) is not None:
                self.ledger.move_output(move.src, move.dst)
            log.info("earlier image kept", source=str(source), file=str(move.dst))
        sha = hashlib.sha256(data).hexdigest()
        if plan.restore is not None:
            await asyncio.to_thread(outputs.move_no_clobber, plan.restore.src, plan.restore.dst)
            self.ledger.move_output(plan.restore.src, plan.restore.dst, superseded=False)
            log.info("earlier image back", source=str(source), file=str(plan.restore.dst))
        elif plan.write_to is not None:
            await asyncio.to_thread(outputs.write_atomic, plan.write_to, data)
            reached("after_rename")
            self.ledger.record_output(
                plan.write_to, job=job, source_path=source, sha256=sha, fmt=fmt
            )
            log.info("image written", job=job.id, source=str(source), file=str(plan.write_to))
        elif plan.current is not None and self.ledger.output_at(plan.current) is None:
            self.ledger.record_output(
                plan.current,
                job=job,
                source_path=source,
                sha256=await asyncio.to_thread(_sha, plan.current),
                fmt=fmt,
            )

    def _count(self, job: Job, source: Path) -> int:
        src = self.ledger.get_source(source)
        return max((src.image_count if src is not None else None) or 1, job.image_index)


def provenance(job: Job, source: Path) -> dict[str, str]:
    """The text chunks stamped into an image: what made it, from which prompt file."""
    req = job.request
    info = {
        "promptdrop:prompt": req["prompt"],
        "promptdrop:model": req["model"],
        "promptdrop:size": req["size"],
        "promptdrop:task_id": job.task_id or "",
        "promptdrop:source": source.name,
        "promptdrop:request": job.request_hash,
        "promptdrop:index": str(job.image_index),
        "promptdrop:version": __version__,
    }
    # Jobs recorded before the model family was known have neither (the default model, 1K).
    if req.get("resolution"):
        info["promptdrop:resolution"] = req["resolution"]
    if req.get("options"):
        info["promptdrop:options"] = json.dumps(req["options"], sort_keys=True)
    return info


def _look(job: Job, source: Path, records: dict[Path, Output | None]) -> dict[Path, Found]:
    """What is at each of `source`'s plain names that exists (their ledger records given)."""
    return {p: _found(job, source, p, r) for p, r in records.items() if os.path.lexists(p)}


def _found(job: Job, source: Path, path: Path, record: Output | None) -> Found:
    """What the file at one of `source`'s plain names is: this job's image, an earlier one
    promptdrop made (a ledger record, or provenance naming this prompt file), or not
    promptdrop's at all."""
    if record is not None:
        same = record.job_id == job.id and record.generation == job.generation
        return Found.CURRENT if same else Found.OURS
    if path.is_symlink() or not path.is_file():
        return Found.FOREIGN
    info = outputs.read_provenance(_read_or_none(path) or b"")
    index = info.get("promptdrop:index", "1")
    if info.get("promptdrop:request") == job.request_hash and index == str(job.image_index):
        return Found.CURRENT  # written just before a crash, before the ledger knew
    if info.get("promptdrop:source") == source.name:
        return Found.OURS
    return Found.FOREIGN


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if not path.is_symlink() else None
    except OSError:
        return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
