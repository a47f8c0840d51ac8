"""`promptdrop status` and `promptdrop retry`: reading and nudging the ledger beside the daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from promptdrop.ledger import FINAL, JobState, LedgerBase


def status_rows(ledger: LedgerBase) -> list[dict[str, Any]]:
    """One row per job: state, sources, task, outputs, error. Never contains the API key."""
    rows = []
    for job in ledger.jobs():
        sources = [s.path for s in ledger.sources_for_request(job.request_hash)]
        rows.append(
            {
                "job": job.id,
                "state": str(job.state),
                "request": job.request_hash[:12],
                "index": job.image_index,
                "rule": job.rule,
                "sources": sources,
                "task_id": job.task_id,
                "attempts": job.attempts,
                "outputs": [o.path for o in ledger.outputs_for_job(job.id)],
                "error": job.error,
            }
        )
    return rows


def print_status(ledger: LedgerBase, out: TextIO, *, as_json: bool) -> int:
    rows = status_rows(ledger)
    problems = [
        s
        for s in ledger.sources_with_status("invalid")
        + ledger.sources_with_status("blocked")
        + ledger.sources_with_status("conflict")
    ]
    if as_json:
        json.dump(
            {
                "jobs": rows,
                "counts": ledger.state_counts(),
                "refused_files": [
                    {"path": s.path, "status": s.status, "error": s.error} for s in problems
                ],
            },
            out,
            indent=2,
        )
        out.write("\n")
        return 0
    counts = ledger.state_counts()
    out.write(
        "jobs: "
        + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none")
        + "\n"
    )
    for r in rows:
        source = r["sources"][0] if r["sources"] else "(no prompt file)"
        more = f" (+{len(r['sources']) - 1} copies)" if len(r["sources"]) > 1 else ""
        line = f"{r['state']:<11} {source}{more} #{r['index']}"
        if r["task_id"]:
            line += f"  task {r['task_id']}"
        if r["outputs"]:
            line += f"  -> {Path(r['outputs'][-1]).name}"
        if r["error"] and r["state"] != "done":
            line += f"  ({r['error']})"
        elif r["state"] == JobState.WAITING:
            line += "  (its folder's daily budget is spent; starts after midnight)"
        out.write(line + "\n")
    for s in problems:
        first = (s.error or "").splitlines()[0] if s.error else ""
        out.write(f"{s.status:<11} {s.path}  {first}\n")
    return 0


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
