"""`promptdrop retry PATH`: queue a prompt file's failed (or, with --force, finished) jobs
again, beside the running daemon, which picks them up within seconds.

Without --force a done file whose image is gone is marked to be taken up again, which brings
the image back for free while it can be had (a kept copy, a download link that still lives).
With --force a request shared with other prompt files makes their images again too: they are
listed, and nothing is queued without --yes.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from promptdrop.commands.existing import open_existing
from promptdrop.ledger import FINAL, Job, JobState, LedgerBase, Source


@dataclass
class RetryPlan:
    """What `retry` would do under one path, before anything is changed."""

    reread: list[Source] = field(default_factory=list)  # invalid or blocked: read again
    restore: list[Source] = field(default_factory=list)  # done, an image file is gone
    requeue: list[tuple[Source, Job]] = field(default_factory=list)  # jobs queued again
    # Other prompt files whose images a forced (paid) request makes again as well.
    shared: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.reread or self.restore or self.requeue)


def plan_retry(ledger: LedgerBase, path: Path, *, force: bool = False) -> RetryPlan:
    """What retrying `path` (a prompt file or a folder) means, read from the ledger."""
    plan = RetryPlan()
    wanted = {JobState.FAILED, JobState.AMBIGUOUS} | ({JobState.DONE} if force else set())
    sources = ledger.sources_under(path.absolute())
    named = {src.path for src in sources}
    seen_jobs: set[int] = set()
    for src in sources:
        if src.status in ("invalid", "blocked"):
            plan.reread.append(src)
            continue
        if src.status != "active" or not src.request_hash:
            continue
        jobs = [
            j
            for j in ledger.jobs_for_request(src.request_hash)
            if j.image_index <= (src.image_count or 1)
        ]
        if not force and any(
            j.state is JobState.DONE and _image_gone(ledger, src, j) for j in jobs
        ):
            plan.restore.append(src)
        for job in jobs:
            if job.state in wanted and job.id not in seen_jobs:
                seen_jobs.add(job.id)
                plan.requeue.append((src, job))
                if job.state is JobState.DONE:
                    plan.shared += _sharing(ledger, job, named | set(plan.shared))
    return plan


def _image_gone(ledger: LedgerBase, src: Source, job: Job) -> bool:
    """True when the image this done job wrote for `src` is not in the folder any more."""
    out = ledger.output_for(src.path, job)
    return out is None or not os.path.lexists(out.path)


def _sharing(ledger: LedgerBase, job: Job, known: set[str]) -> list[str]:
    """The other live prompt files that want this job's image, not yet in `known`."""
    return [
        s.path
        for s in ledger.sources_for_request(job.request_hash)
        if (s.image_count or 1) >= job.image_index and s.path not in known
    ]


def apply_retry(ledger: LedgerBase, plan: RetryPlan, out: TextIO, *, force: bool = False) -> int:
    """Do what `plan` says and tell `out` each step; return the number of jobs queued."""
    for src in plan.reread:
        ledger.set_source_status(src.path, "retry", src.error)
        out.write(f"will read again: {src.path}\n")
    for src in plan.restore:
        ledger.set_source_status(src.path, "retry", src.error)
        out.write(f"will bring back its missing image (free while it can be had): {src.path}\n")
    for src, job in plan.requeue:
        assert job.state in FINAL
        ledger.transition(
            job.id,
            job.state,
            JobState.PENDING,
            detail="promptdrop retry" + (" --force" if force else ""),
        )
        out.write(f"queued again ({job.state}): {src.path} #{job.image_index}\n")
    return len(plan.requeue)


def retry(ledger: LedgerBase, path: Path, out: TextIO, *, force: bool = False) -> int:
    """Queue failed and ambiguous jobs under `path` again (done ones too with force), and mark
    files to read again (invalid ones, and done ones whose image is gone).

    The running daemon notices within seconds; without one, the next start does the work.
    Returns the number of jobs queued.
    """
    return apply_retry(ledger, plan_retry(ledger, path, force=force), out, force=force)


def run_retry(
    path: Path,
    *,
    state_dir: Path | None,
    ledger_url: str | None,
    force: bool,
    out: TextIO,
    err: TextIO,
    yes: bool = False,
) -> int:
    """The command: say what is done under `path` and do it; 1 without a ledger, or when a
    forced request is shared with other prompt files and `yes` was not given."""
    ledger = open_existing(ledger_url, state_dir, "retry", err)
    if ledger is None:
        return 1
    with ledger:
        if not ledger.sources_under(path.absolute()):
            print(unknown_path(path, _kind(path)), file=err)
            return 1
        plan = plan_retry(ledger, path, force=force)
        if plan.shared and not yes:
            _ask_for_yes(path, plan.shared, err)
            return 1
        n = apply_retry(ledger, plan, out, force=force)
    if plan.empty():
        print(
            f"Nothing to retry under {path}: no failed, ambiguous or invalid prompt file, and "
            "every image is in place. To make them again (paid again): "
            f"promptdrop retry --force {shlex.quote(str(path))}",
            file=out,
        )
        return 0
    parts = [f"{n} job(s) queued again"] if n else []
    if plan.reread:
        parts.append(f"{len(plan.reread)} file(s) to read again")
    if plan.restore:
        parts.append(
            f"{len(plan.restore)} file(s) to get their missing image back (free while a kept "
            "copy or the 24-hour download link allows; after that its note says so)"
        )
    print(
        "; ".join(parts) + ". The running daemon picks them up within seconds (or the next "
        "`promptdrop watch`).",
        file=out,
    )
    return 0


def _kind(path: Path) -> str:
    try:
        return "folder" if path.is_dir() else "file" if os.path.lexists(path) else "missing"
    except OSError:
        return "missing"


def unknown_path(path: Path, kind: str) -> str:
    """What to say when the ledger knows no prompt file at `path`; `kind` is what the path is
    on disk: "missing", "folder" or "file"."""
    if kind == "missing":
        return (
            f"promptdrop retry: {path} does not exist, and the ledger knows no prompt file "
            "there: name a prompt file or a folder that the daemon watches"
        )
    if kind == "file" and not path.name.endswith(".prompt.toml"):
        return (
            f"promptdrop retry: {path} is not a prompt file (NAME.prompt.toml): name a "
            "prompt file or a folder that the daemon watches"
        )
    what = "no prompt file under" if kind == "folder" else "nothing of"
    return (
        f"promptdrop retry: the ledger knows {what} {path}: the daemon has not taken it up "
        "(is it in a watched folder? does the daemon use this --state-dir?); "
        "nothing was queued"
    )


def _ask_for_yes(path: Path, shared: list[str], err: TextIO) -> None:
    print(
        f"retry --force on {path} would also make new images for these prompt files, which ask "
        "for the same request (the request is paid once again, and each gets the new image):",
        file=err,
    )
    for other in shared:
        print(f"  {other}", file=err)
    print(
        "Nothing was queued. To go ahead, type: "
        f"promptdrop retry --force --yes {shlex.quote(str(path))}",
        file=err,
    )
