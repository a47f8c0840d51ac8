"""Placing a finished image next to its prompt files: never over a file promptdrop did not
write, earlier versions set aside under numbered names, provenance stamped in."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import structlog

from promptdrop import __version__, outputs
from promptdrop.api import ApiError
from promptdrop.crashpoints import reached
from promptdrop.jobs import notes
from promptdrop.jobs.core import EngineCore
from promptdrop.ledger import Job

log = structlog.get_logger("promptdrop.engine")


class Delivery(EngineCore):
    """Writing images: the engine's only file writes besides notes."""

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
        outputs.write_note(source, notes.link_expired_text(job.task_id, source))

    async def _place(
        self, job: Job, source: Path, data: bytes, fmt: str, *, stamp: bool = True
    ) -> bool:
        """Write this job's image next to `source`; True when written (or already there)."""
        src = self.ledger.get_source(source)
        count = max((src.image_count if src is not None else None) or 1, job.image_index)
        final = outputs.output_path(source, job.image_index, count, fmt)
        if stamp and fmt in ("png", "jpeg"):
            data = outputs.with_provenance(data, fmt, provenance(job, source))
        if os.path.lexists(final):
            record = self.ledger.output_at(final)
            if record is None:
                if self._is_ours(final, job.request_hash):
                    self.ledger.record_output(
                        final, job=job, source_path=source, sha256=_sha(final), fmt=fmt
                    )
                    self._settle_note(source)
                    return True
                outputs.write_note(source, notes.appeared_text(final.name, source))
                return False
            if record.job_id == job.id and record.generation == job.generation:
                return True
            aside = await asyncio.to_thread(set_aside, final)
            self.ledger.move_output(final, aside)
        await asyncio.to_thread(outputs.write_atomic, final, data)
        reached("after_rename")
        self.ledger.record_output(
            final, job=job, source_path=source, sha256=hashlib.sha256(data).hexdigest(), fmt=fmt
        )
        self._settle_note(source)
        log.info("image written", job=job.id, source=str(source), file=str(final))
        return True


def set_aside(path: Path) -> Path:
    """Move an earlier version of an image to the first free numbered name beside it."""
    for _ in range(100):
        aside = outputs.versioned_path(path)
        try:
            outputs.move_no_clobber(path, aside)
            return aside
        except FileExistsError:
            continue  # the name was taken between the check and the move
    raise FileExistsError(f"no free numbered name beside {path}")


def provenance(job: Job, source: Path) -> dict[str, str]:
    """The text chunks stamped into an image: what made it, from which prompt file."""
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


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
