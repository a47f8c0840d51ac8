"""`promptdrop status`: every job in the ledger, and the prompt files it refused, read beside
the running daemon. Never shows the API key (the ledger holds none)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from promptdrop.capabilities import DEFAULT_MODEL
from promptdrop.commands.existing import open_existing
from promptdrop.jobs.notes import asked
from promptdrop.ledger import JobState, LedgerBase, Source

REFUSED = ("invalid", "blocked", "conflict")  # source statuses listed after the jobs


def status_rows(ledger: LedgerBase) -> list[dict[str, Any]]:
    """One row per job: state, sources, task, outputs (current, missing), error. Never
    contains the API key."""
    rows = []
    for job in ledger.jobs():
        sources = [s.path for s in ledger.sources_for_request(job.request_hash)]
        outs = ledger.outputs_for_job(job.id)
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
                "outputs": [o.path for o in outs],
                # The current images (not the earlier versions kept beside them)...
                "current": [o.path for o in outs if not o.superseded],
                # ...and every recorded image whose file is gone: shown as missing.
                "missing": [o.path for o in outs if not os.path.lexists(o.path)],
                "error": job.error,
                # What it asks (jobs recorded before the model family have no resolution).
                "model": job.request.get("model"),
                "size": job.request.get("size"),
                "resolution": job.request.get("resolution"),
                "options": job.request.get("options") or {},
                "asked": asked(job.request),
            }
        )
    return rows


def job_line(row: dict[str, Any]) -> str:
    """One job of `status_rows` as a line of the text listing."""
    sources = row["sources"]
    source = sources[0] if sources else "(no prompt file)"
    more = f" (+{len(sources) - 1} copies)" if len(sources) > 1 else ""
    line = f"{row['state']:<11} {source}{more} #{row['index']}"
    if row["model"] not in (None, DEFAULT_MODEL) or row["options"]:
        line += f"  [{row['asked']}]"  # the default model's lines stay as short as before
    if row["task_id"]:
        line += f"  task {row['task_id']}"
    shown = row["current"] or row["outputs"]
    if shown:
        line += f"  -> {Path(shown[-1]).name}"
        if shown[-1] in row["missing"]:
            line += " (missing: the file is gone)"
    if row["error"] and row["state"] != "done":
        line += f"  ({row['error']})"
    elif row["state"] == JobState.WAITING:
        line += "  (its folder's daily budget is spent; starts after midnight)"
    return line


def counts_line(counts: dict[str, int]) -> str:
    """The first line of the listing: how many jobs are in each state."""
    return "jobs: " + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none")


def print_status(ledger: LedgerBase, out: TextIO, *, as_json: bool) -> int:
    """Write the jobs and the refused prompt files to `out`, as text or as one JSON object."""
    rows = status_rows(ledger)
    refused: list[Source] = [s for status in REFUSED for s in ledger.sources_with_status(status)]
    counts = ledger.state_counts()
    if as_json:
        listing = {
            "jobs": rows,
            "counts": counts,
            "refused_files": [
                {"path": s.path, "status": s.status, "error": s.error} for s in refused
            ],
        }
        json.dump(listing, out, indent=2)
        out.write("\n")
        return 0
    out.write(counts_line(counts) + "\n")
    for row in rows:
        out.write(job_line(row) + "\n")
    for s in refused:
        first = (s.error or "").splitlines()[0] if s.error else ""
        out.write(f"{s.status:<11} {s.path}  {first}\n")
    return 0


def run_status(
    *, state_dir: Path | None, ledger_url: str | None, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """The command: the listing of the existing ledger; 1 when there is none."""
    ledger = open_existing(ledger_url, state_dir, "status", err)
    if ledger is None:
        return 1
    with ledger:
        return print_status(ledger, out, as_json=as_json)
