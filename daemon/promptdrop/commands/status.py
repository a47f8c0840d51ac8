"""`promptdrop status`: every job in the ledger, and the prompt files it refused, read beside
the running daemon; with the rules file, each rule's spending today against its daily budget
and daily credits. Never shows the API key (the ledger holds none)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from promptdrop.capabilities import DEFAULT_MODEL
from promptdrop.commands.existing import open_existing
from promptdrop.commands.pause import pause_lines
from promptdrop.jobs.budget import day_start
from promptdrop.jobs.credits import request_price
from promptdrop.jobs.notes import asked
from promptdrop.ledger import ALL_RULES, JobState, LedgerBase, Source
from promptdrop.spec import RulesFile, SpecError, read_rules

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
                # Why a waiting job is held: the detail of its move to waiting.
                "held": _held_reason(ledger, job.id) if job.state is JobState.WAITING else None,
            }
        )
    return rows


def _held_reason(ledger: LedgerBase, job_id: int) -> str | None:
    moves = [
        e["detail"]
        for e in ledger.events(job_id)
        if e["to_state"] == JobState.WAITING and e["from_state"] != e["to_state"]
    ]
    return moves[-1] if moves and moves[-1] else None


def budget_rows(ledger: LedgerBase, rules: RulesFile, now: float) -> list[dict[str, Any]]:
    """Each rule with a daily budget or daily credits: what it spent today (from local
    midnight by `now`) and its limits. Credits only when the rule sets daily_credits and the
    rules file has prices; each task is priced by the prices of the rules file given."""
    since = day_start(now)
    rows = []

    def price_of(request: Mapping[str, Any]) -> float:
        return request_price(rules.prices, request) or 0.0

    for rule in rules.rules:
        if rule.daily_budget is None and rule.daily_credits is None:
            continue
        row: dict[str, Any] = {
            "rule": rule.name,
            "tasks_today": ledger.spent_since(since, rule.name),
            "daily_budget": rule.daily_budget,
        }
        if rule.daily_credits is not None and rules.prices:
            row["credits_today"] = ledger.credits_since(since, rule.name, price_of)
            row["daily_credits"] = rule.daily_credits
        rows.append(row)
    return rows


def budget_line(row: Mapping[str, Any]) -> str:
    """One rule of `budget_rows` as a line: `today drop: 3 of 5 tasks, 40 of 48 credits`."""
    parts = [
        f"{row['tasks_today']} of {row['daily_budget']} tasks"
        if row["daily_budget"] is not None
        else f"{row['tasks_today']} tasks"
    ]
    if "daily_credits" in row:
        parts.append(f"{row['credits_today']:.10g} of {row['daily_credits']:.10g} credits")
    return f"today {row['rule']}: " + ", ".join(parts)


def job_line(row: dict[str, Any]) -> str:
    """One job of `status_rows` as a line of the text listing."""
    sources = row["sources"]
    source = sources[0] if sources else "(its prompt file is gone)"
    more = f" (+{len(sources) - 1} copies)" if len(sources) > 1 else ""
    line = f"{row['state']:<11} {source}{more} #{row['index']}"
    if row["model"] not in (None, DEFAULT_MODEL) or row["options"]:
        line += f"  [{row['asked']}]"  # the default model's lines stay as short as before
    if row["task_id"]:
        line += f"  task {row['task_id']}"
    shown = outputs_text(row)
    if shown:
        line += f"  -> {shown}"
    if row["error"] and row["state"] != "done":
        line += f"  ({row['error']})"
    elif row["state"] == JobState.WAITING:
        reason = row.get("held") or "its folder's daily budget is spent"
        line += f"  (not sent: {reason})"
    return line


def outputs_text(row: Mapping[str, Any]) -> str:
    """Every image a job of `status_rows` wrote, as the JSON lists them: the current ones by
    name (a full path when not beside its prompt file), each gone one marked, then how many
    earlier versions are kept; a job with only earlier versions lists them. Empty when it
    wrote none."""
    outputs: list[str] = list(row["outputs"])
    folders = {str(Path(s).parent) for s in row["sources"]}

    def shown(path: str) -> str:
        name = Path(path).name if str(Path(path).parent) in folders else path
        return name + (" (missing: the file is gone)" if path in row["missing"] else "")

    current = [o for o in outputs if o in row["current"]]
    if not current:
        if not outputs:
            return ""
        kept = "an earlier version, kept" if len(outputs) == 1 else "earlier versions, kept"
        return ", ".join(shown(o) for o in reversed(outputs)) + f" ({kept})"
    text = ", ".join(shown(o) for o in reversed(current))
    earlier = len(outputs) - len(current)
    if earlier:
        text += f" (+{earlier} earlier version{'s' if earlier != 1 else ''} kept)"
    return text


def counts_line(counts: dict[str, int]) -> str:
    """The first line of the listing: how many jobs are in each state."""
    return "jobs: " + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none")


def _first_problem(error: str | None) -> str:
    """The line of a refused file's error that says what is wrong: its first listed problem
    (the heading "This prompt file cannot be used yet:" says nothing by itself)."""
    lines = (error or "").splitlines()
    listed = [line.removeprefix("- ") for line in lines if line.startswith("- ")]
    return listed[0] if listed else (lines[0] if lines else "")


def print_status(
    ledger: LedgerBase,
    out: TextIO,
    *,
    as_json: bool,
    rules: RulesFile | None = None,
    now: float | None = None,
) -> int:
    """Write the jobs and the refused prompt files to `out`, as text or as one JSON object;
    with `rules`, each budgeted rule's spending today first (by `now`, default the clock)."""
    rows = status_rows(ledger)
    budgets = budget_rows(ledger, rules, time.time() if now is None else now) if rules else []
    refused: list[Source] = [s for status in REFUSED for s in ledger.sources_with_status(status)]
    counts = ledger.state_counts()
    pauses = ledger.pauses()
    if as_json:
        listing = {
            "jobs": rows,
            "counts": counts,
            "refused_files": [
                {"path": s.path, "status": s.status, "error": s.error} for s in refused
            ],
        }
        if rules is not None:
            listing["budgets"] = budgets
        # `promptdrop pause`: the rule (null: every rule) and when it began, in epoch seconds.
        listing["pauses"] = [
            {"rule": None if rule == ALL_RULES else rule, "since": since}
            for rule, since in sorted(pauses.items())
        ]
        json.dump(listing, out, indent=2)
        out.write("\n")
        return 0
    out.write(counts_line(counts) + "\n")
    for line in pause_lines(pauses):
        out.write(line + "\n")
    for budget in budgets:
        out.write(budget_line(budget) + "\n")
    for row in rows:
        out.write(job_line(row) + "\n")
    for s in refused:
        first = _first_problem(s.error)
        out.write(f"{s.status:<11} {s.path}  {first}\n")
    return 0


def run_status(
    *,
    state_dir: Path | None,
    ledger_url: str | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    rules_path: Path | None = None,
) -> int:
    """The command: the listing of the existing ledger; 1 when there is none, or when the
    rules file given cannot be read."""
    rules = None
    if rules_path is not None:
        try:
            rules = read_rules(rules_path)
        except SpecError as exc:
            print(f"promptdrop status: the rules file cannot be used:\n{exc}", file=err)
            return 1
    ledger = open_existing(ledger_url, state_dir, "status", err)
    if ledger is None:
        return 1
    with ledger:
        return print_status(ledger, out, as_json=as_json, rules=rules)
