"""`promptdrop history`: every paid task the ledger remembers, newest first, and what it cost.

A *task* here is one submission attempt: each committed intent (a job's move into SUBMITTING)
is one paid POST, exactly as `ledger.counts` counts spending. Its outcome is read from the
job's history that follows the intent: refunded when the API proved it created nothing (the
job left SUBMITTING for PENDING or FAILED, the refunds `spent_since` gives back), ambiguous
when the answer was lost, then running, done or failed as the task went. Everything here but
`run_history` is pure: the ledger's records in, rows and totals out.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO

from promptdrop.commands.existing import open_existing
from promptdrop.jobs.credits import request_price, request_resolution
from promptdrop.ledger import Job, JobState, LedgerBase, Output
from promptdrop.ledger.states import FINAL
from promptdrop.spec import SpecError, read_rules

S = JobState
EXIT_USAGE = 2

# The task id in the detail of a move to RUNNING, as jobs.table words it: "task ID" (the answer
# to the submission) or "found by its business id: task ID; nothing more paid".
_TASK_IN_DETAIL = re.compile(r"(?:^|: )task ([^\s;]+)")
_RELATIVE = re.compile(r"^(\d+)\s*([dh])$")


@dataclass
class Attempt:
    """One paid submission of a job: when its intent was committed, and what became of it."""

    job_id: int
    at: float
    generation: int  # the job's generation when it was sent (its images carry the same)
    state: str = "running"  # running | done | failed | ambiguous | refunded
    task_id: str | None = None


def _task_in(detail: str | None) -> str | None:
    found = _TASK_IN_DETAIL.search(detail or "")
    return found.group(1) if found else None


def attempts_of(job: Job, events: Iterable[Mapping[str, Any]]) -> list[Attempt]:
    """Every paid submission of `job`, oldest first, read from its history (`events`, in the
    ledger's order). The job's own task id stands in for the last attempt's when the history
    does not name it."""
    attempts: list[Attempt] = []
    current: Attempt | None = None
    generation = 0
    for e in events:
        src, dst = JobState(e["from_state"]), JobState(e["to_state"])
        if src is dst:
            continue  # a note, not a move
        if dst is S.SUBMITTING:
            current = Attempt(job.id, float(e["at"]), generation)
            attempts.append(current)
            continue
        if dst is S.PENDING and src in FINAL:
            generation += 1  # as ledger.jobs bumps it
        if current is None:
            continue
        if src is S.SUBMITTING and dst in (S.PENDING, S.FAILED):
            current.state, current = "refunded", None  # proven to have created nothing
        elif dst is S.AMBIGUOUS:
            current.state = "ambiguous"
        elif dst is S.RUNNING and src in (S.SUBMITTING, S.AMBIGUOUS):
            current.state = "running"
            current.task_id = _task_in(e.get("detail")) or current.task_id
        elif dst in (S.DONE, S.FAILED):
            current.state, current = str(dst), None
        elif dst is S.PENDING:
            current = None  # an ambiguous one sent again or retried: it stays ambiguous
    last = attempts[-1] if attempts else None
    if last is not None and last.task_id is None and last.state in ("running", "done", "failed"):
        last.task_id = job.task_id
    return attempts


@dataclass(frozen=True)
class TaskRow:
    """One line of the history: a paid task, its files now, what it asked, what it cost."""

    at: float
    when: str  # local time, to the second
    day: str  # the local date, for the totals
    rule: str | None
    prompt_files: list[str]
    images: list[str]  # the task's images that exist now
    task_id: str | None
    model: str | None
    size: str | None
    resolution: str | None
    state: str
    credits: float | None  # None: no price given for it (or no prices at all)
    job: int
    index: int

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "time": self.when,
            "rule": self.rule,
            "prompt_files": self.prompt_files,
            "images": self.images,
            "task_id": self.task_id,
            "model": self.model,
            "size": self.size,
            "resolution": self.resolution,
            "state": self.state,
            "credits": self.credits,
            "job": self.job,
            "index": self.index,
        }


def local_time(at: float, tz: tzinfo | None = None) -> datetime:
    """The epoch time `at` as an aware time in `tz` (None: this machine's zone)."""
    return (
        datetime.fromtimestamp(at, tz)
        if tz is not None
        else datetime.fromtimestamp(at).astimezone()
    )


def task_row(
    job: Job,
    attempt: Attempt,
    outputs: Sequence[Output],
    sources: Sequence[str],
    *,
    prices: Mapping[str, Any] | None,
    exists: Callable[[str], bool] = os.path.lexists,
    tz: tzinfo | None = None,
) -> TaskRow:
    """The history line of one attempt of `job`: its images are the job's outputs of the
    attempt's generation that are still there; its prompt files those the images were written
    for, else the prompt files that ask for the request now (`sources`)."""
    mine = [o for o in outputs if o.generation == attempt.generation]
    written_for = sorted({o.source_path for o in mine if o.source_path})
    price = request_price(prices, job.request) if prices else None
    when = local_time(attempt.at, tz)
    model = job.request.get("model")
    size = job.request.get("size")
    return TaskRow(
        at=attempt.at,
        when=when.isoformat(timespec="seconds"),
        day=when.date().isoformat(),
        rule=job.rule,
        prompt_files=written_for or list(sources),
        images=[o.path for o in mine if exists(o.path)],
        task_id=attempt.task_id,
        model=model if isinstance(model, str) else None,
        size=size if isinstance(size, str) else None,
        resolution=request_resolution(job.request),
        state=attempt.state,
        credits=(0.0 if attempt.state == "refunded" else price) if price is not None else None,
        job=job.id,
        index=job.image_index,
    )


def _under(path: str, folders: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == f or real.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def select(
    rows: Iterable[TaskRow], *, since: float | None, folders: Sequence[Path]
) -> list[TaskRow]:
    """The rows sent at or after `since` whose prompt file or image is under one of `folders`
    (all when none are given), newest first."""
    wanted = [os.path.realpath(f) for f in folders]
    chosen = [
        r
        for r in rows
        if (since is None or r.at >= since)
        and (not wanted or any(_under(p, wanted) for p in (*r.prompt_files, *r.images)))
    ]
    return sorted(chosen, key=lambda r: (r.at, r.job), reverse=True)


@dataclass
class Total:
    """Tasks paid (refunded ones apart) and their credits, for one rule or one day."""

    tasks: int = 0
    refunded: int = 0
    credits: float | None = None  # None: no prices given
    unpriced: int = 0  # paid tasks the prices have no price for
    states: dict[str, int] = field(default_factory=dict)

    def add(self, row: TaskRow, priced: bool) -> None:
        self.states[row.state] = self.states.get(row.state, 0) + 1
        if row.state == "refunded":
            self.refunded += 1
            return
        self.tasks += 1
        if priced:
            if row.credits is None:
                self.unpriced += 1
            else:
                self.credits = (self.credits or 0.0) + row.credits

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"tasks": self.tasks, "refunded": self.refunded}
        found["states"] = dict(sorted(self.states.items()))
        if self.credits is not None or self.unpriced:
            found["credits"] = self.credits or 0.0
            found["unpriced"] = self.unpriced
        return found


def totals(rows: Iterable[TaskRow], *, priced: bool) -> dict[str, Any]:
    """Per rule, per day (newest first) and overall: tasks paid, refunded, and with `priced`
    their credits (a paid task without a price is counted as unpriced, never as free)."""
    by_rule: dict[str, Total] = {}
    by_day: dict[str, Total] = {}
    overall = Total()
    for row in rows:
        for total in (
            by_rule.setdefault(row.rule or "(no rule)", Total()),
            by_day.setdefault(row.day, Total()),
            overall,
        ):
            total.add(row, priced)
    return {
        "rules": {k: v.as_json() for k, v in sorted(by_rule.items())},
        "days": {k: v.as_json() for k, v in sorted(by_day.items(), reverse=True)},
        "all": overall.as_json(),
    }


def parse_since(text: str, now: float, tz: tzinfo | None = None) -> float:
    """The epoch time `--since TEXT` means at `now`: a date (YYYY-MM-DD: its local midnight), a
    date and time (YYYY-MM-DDTHH:MM), `today`, `yesterday`, or `Nd` / `Nh` (N days or hours
    ago). ValueError with the forms when it is none of them."""
    word = text.strip().lower()
    today = local_time(now, tz).date()
    if word in ("today", "yesterday"):
        day = today - timedelta(days=0 if word == "today" else 1)
        return _midnight(day, tz)
    relative = _RELATIVE.match(word)
    if relative:
        n, unit = int(relative.group(1)), relative.group(2)
        return now - n * (86400 if unit == "d" else 3600)
    try:
        return _midnight(date.fromisoformat(word), tz)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a date (2026-12-01), a date and time (2026-12-01T09:30), "
            "today, yesterday, or an age such as 7d or 12h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()
    return moment.timestamp()


def _midnight(day: date, tz: tzinfo | None) -> float:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return (start if tz is not None else start.astimezone()).timestamp()


def history_rows(
    ledger: LedgerBase,
    *,
    prices: Mapping[str, Any] | None,
    exists: Callable[[str], bool] = os.path.lexists,
    tz: tzinfo | None = None,
) -> list[TaskRow]:
    """Every paid task in `ledger`, in no particular order (see `select`). Only jobs that ever
    sent a paid POST are read further (their attempt counter says so)."""
    rows = []
    for job in ledger.jobs():
        if job.attempts <= 0:
            continue
        outs = ledger.outputs_for_job(job.id)
        sources = [s.path for s in ledger.sources_for_request(job.request_hash)]
        for attempt in attempts_of(job, ledger.events(job.id)):
            rows.append(task_row(job, attempt, outs, sources, prices=prices, exists=exists, tz=tz))
    return rows


# --- printing -----------------------------------------------------------------------------------


def _credits(value: float | None) -> str:
    return "" if value is None else f"{value:.10g} credits"


def task_line(row: TaskRow, shown: Callable[[str], str] = str) -> str:
    """One task as a line: time, state, rule, prompt file -> images, task, what it asked."""
    source = shown(row.prompt_files[0]) if row.prompt_files else "(no prompt file)"
    if len(row.prompt_files) > 1:
        source += f" (+{len(row.prompt_files) - 1} copies)"
    when = row.when[:19].replace("T", " ")
    line = f"{when}  {row.state:<9} {row.rule or '-'}  {source} #{row.index}"
    if row.images:
        line += " -> " + ", ".join(Path(p).name for p in row.images)
    line += f"  task {row.task_id or '(none)'}"
    asked = " ".join(x for x in (row.model, row.size, row.resolution) if x)
    if asked:
        line += f"  [{asked}]"
    if row.credits is not None:
        line += "  " + _credits(row.credits)
    return line


def total_line(name: str, total: Mapping[str, Any]) -> str:
    """`  drop         3 tasks, 1 refunded, 24 credits` (credits only when priced)."""
    return f"  {name:<12} " + total_words(total)


def total_words(total: Mapping[str, Any]) -> str:
    """`3 tasks, 1 refunded, 24 credits`: a total of `totals` in words."""
    parts = [f"{total['tasks']} task" + ("" if total["tasks"] == 1 else "s")]
    if total["refunded"]:
        parts.append(f"{total['refunded']} refunded")
    if "credits" in total:
        parts.append(_credits(total["credits"]))
        if total["unpriced"]:
            parts.append(f"{total['unpriced']} without a price")
    return ", ".join(parts)


def print_history(
    rows: Sequence[TaskRow],
    out: TextIO,
    *,
    as_json: bool,
    priced: bool,
    folders: Sequence[Path] = (),
) -> None:
    """The selected rows and their totals, as text or as one JSON object."""
    summed = totals(rows, priced=priced)
    if as_json:
        json.dump({"tasks": [r.as_json() for r in rows], "totals": summed}, out, indent=2)
        out.write("\n")
        return
    if not rows:
        under = " under " + ", ".join(str(f) for f in folders) if folders else ""
        out.write(f"no paid tasks{under}\n")
        return
    here = os.getcwd()

    def shown(path: str) -> str:
        rel = os.path.relpath(path, here)
        return path if rel.startswith("..") else rel

    for row in rows:
        out.write(task_line(row, shown) + "\n")
    out.write("totals by rule:\n")
    for name, total in summed["rules"].items():
        out.write(total_line(name, total) + "\n")
    out.write("totals by day:\n")
    for name, total in summed["days"].items():
        out.write(total_line(name, total) + "\n")
    out.write("total: " + total_words(summed["all"]) + "\n")


def run_history(
    folders: Sequence[Path],
    *,
    since: str | None,
    as_json: bool,
    rules_path: Path | None,
    state_dir: Path | None,
    ledger_url: str | None,
    now: float,
    out: TextIO,
    err: TextIO,
) -> int:
    """The command: 2 for a --since it cannot read, 1 when there is no ledger or the rules
    file cannot be read, else 0."""
    start = None
    if since is not None:
        try:
            start = parse_since(since, now)
        except ValueError as exc:
            print(f"promptdrop history: {exc}", file=err)
            return EXIT_USAGE
    prices = None
    if rules_path is not None:
        try:
            prices = read_rules(rules_path).prices or None
        except SpecError as exc:
            print(f"promptdrop history: the rules file cannot be used:\n{exc}", file=err)
            return 1
    try:
        ledger = open_existing(ledger_url, state_dir, "history", err)
        if ledger is None:
            return 1
        with ledger:
            rows = select(history_rows(ledger, prices=prices), since=start, folders=folders)
    except sqlite3.Error as exc:
        print(f"promptdrop history: cannot read the ledger: {exc}", file=err)
        return 1
    print_history(rows, out, as_json=as_json, priced=prices is not None, folders=folders)
    return 0
