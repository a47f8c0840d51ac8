"""`promptdrop retry PATH`: queue a prompt file's failed (or, with --force, finished) jobs
again, beside the running daemon, which picks them up within seconds."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from promptdrop.commands.existing import open_existing
from promptdrop.ledger import FINAL, JobState, LedgerBase


def retry(ledger: LedgerBase, path: Path, out: TextIO, *, force: bool = False) -> int:
    """Queue failed and ambiguous jobs under `path` again (done ones too with force).

    The running daemon notices within seconds; without one, the next start does the work.
    Returns the number of jobs queued.
    """
    queued = 0
    wanted = {JobState.FAILED, JobState.AMBIGUOUS} | ({JobState.DONE} if force else set())
    for src in ledger.sources_under(path.absolute()):
        if src.status in ("invalid", "blocked"):
            ledger.set_source_status(src.path, "retry", src.error)
            out.write(f"will read again: {src.path}\n")
            continue
        if src.status != "active" or not src.request_hash:
            continue
        for job in ledger.jobs_for_request(src.request_hash):
            if job.image_index > (src.image_count or 1) or job.state not in wanted:
                continue
            assert job.state in FINAL
            ledger.transition(
                job.id,
                job.state,
                JobState.PENDING,
                detail="promptdrop retry" + (" --force" if force else ""),
            )
            queued += 1
            out.write(f"queued again ({job.state}): {src.path} #{job.image_index}\n")
    return queued


def run_retry(
    path: Path,
    *,
    state_dir: Path | None,
    ledger_url: str | None,
    force: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """The command: queue the jobs under `path` again and say how many; 1 without a ledger."""
    ledger = open_existing(ledger_url, state_dir, "retry", err)
    if ledger is None:
        return 1
    with ledger:
        n = retry(ledger, path, out, force=force)
    print(
        f"{n} job(s) queued again; the running daemon picks them up within seconds "
        "(or the next `promptdrop watch`).",
        file=out,
    )
    return 0
