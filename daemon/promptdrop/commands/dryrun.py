"""`promptdrop watch … --dry-run`: what one `--once` pass would submit, and what it would cost.

The same scan as `--once` (`watch.scan`), the same reader and request hashing as the daemon
(`spec.read_prompt_file` with the rule's defaults), and the ledger's answers to the questions
the engine asks of each image: is it made already, in flight, ambiguous, failed? would the
folder's image be adopted? is the reference uploaded already? is today's budget spent? No API
call, no key, no note or image written, and the ledger is opened read-only, or not at all when
there is none yet (then everything is planned as for a fresh ledger, which is not created).
`decide` and `plan` are the pure part; `run_dry` is the I/O around them.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from promptdrop.jobs import adoption, notes
from promptdrop.jobs.budget import budget_left, day_start
from promptdrop.jobs.credits import Room, Verdict, credits_left, request_price
from promptdrop.ledger import LEDGER_NAME, Job, JobState, Ledger, LedgerBase
from promptdrop.ledger.paths import PathCodec
from promptdrop.outputs import output_path, read_provenance
from promptdrop.spec import (
    Request,
    RuleConfig,
    RulesFile,
    SpecError,
    read_prompt_file,
    read_rules,
    rules_for_folders,
)
from promptdrop.watch import is_conflict_copy
from promptdrop.watch.scan import scan

S = JobState
EXIT_VALID = 0
EXIT_INVALID = 1
OUTPUT_FORMATS = ("png", "jpeg", "webp")  # as jobs.intake: whatever format the API returns


class Plan(StrEnum):
    """What a pass would do for one image of a prompt file."""

    SUBMIT = "submit"  # a paid task
    RESEND = "resend"  # ambiguous, and the rule resubmits those: a paid task, maybe a second
    WAIT = "wait"  # would be submitted, but today's budget or credits are spent: tomorrow
    HELD = "held"  # daily_credits is set and it has no price, or costs more than a whole day
    MADE = "made"  # done already: its image is brought back for free when missing
    ADOPT = "adopt"  # the folder holds the image made for this very request: adopted, free
    COPY = "copy"  # another prompt file of this pass asks the same: one task for both
    RUNNING = "running"  # in flight: paid before, polled and downloaded
    LOOKUP = "lookup"  # ambiguous: looked up by its business id, free
    AMBIGUOUS = "ambiguous"  # ambiguous: left for `promptdrop retry`
    FAILED = "failed"  # failed before: not sent again without `promptdrop retry`

    @property
    def paid(self) -> bool:
        return self in (Plan.SUBMIT, Plan.RESEND)


def decide(job: Job | None, *, resubmit_ambiguous: bool, adoptable: bool) -> Plan:
    """What `jobs.intake` does with one image, by its job in the ledger (None: no job yet),
    before any budget: the same cases, in the same order, as `Intake._consider`."""
    if job is None:
        return Plan.ADOPT if adoptable else Plan.SUBMIT
    if job.state is S.DONE:
        return Plan.MADE
    if job.state is S.FAILED:
        return Plan.SUBMIT if job.error == notes.ORPHANED else Plan.FAILED
    if job.state is S.AMBIGUOUS:
        if resubmit_ambiguous:
            return Plan.RESEND
        return Plan.LOOKUP if job.business_id is not None else Plan.AMBIGUOUS
    if job.state in (S.RUNNING, S.DOWNLOADING):
        return Plan.RUNNING
    if job.state is S.SUBMITTING:
        return Plan.LOOKUP  # recovery marks it ambiguous and looks it up: nothing resent
    if job.state is S.PENDING and adoptable:
        return Plan.ADOPT
    return Plan.SUBMIT  # pending, uploading (starts over), waiting (if today has room)


@dataclass
class FilePlan:
    """One prompt file: its problems, or its request and what each image would get."""

    path: Path
    rule: str
    problems: list[str] = field(default_factory=list)
    conflict: bool = False
    request: Request | None = None
    images: list[Plan] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)  # references that would go up first
    price: float | None = None  # one task's credits (None: no price for it)

    @property
    def tasks(self) -> int:
        return sum(1 for p in self.images if p.paid)


@dataclass(frozen=True)
class LedgerView:
    """The ledger's answers a plan needs; every one of them a read."""

    job: Callable[[str, int], Job | None] = lambda _h, _i: None
    uploaded: Callable[[str], bool] = lambda _sha: False
    spent_today: Callable[[str], int] = lambda _rule: 0
    credits_today: Callable[[str], float] = lambda _rule: 0.0
    ours: Callable[[str], bool] = lambda _path: False  # an output the ledger recorded


def room_of(rule: RuleConfig, view: LedgerView) -> Room:
    """What `rule` still allows today, as `jobs.limits` reckons it: tasks and credits."""
    credits = None
    if rule.daily_credits is not None:
        credits = credits_left(rule.daily_credits, view.credits_today(rule.name))
    tasks = budget_left(rule.daily_budget, view.spent_today(rule.name))
    return Room(tasks, rule.daily_credits, credits)


def plan(
    found: Iterable[tuple[Path, RuleConfig, Request | SpecError | None]],
    view: LedgerView,
    *,
    prices: Any = None,
    adoptable: Callable[[Path, int, int, str], bool] = lambda *_: False,
    foreign: Callable[[Path, int, str], Path | None] = lambda *_: None,
) -> list[FilePlan]:
    """The plan of every prompt file `found` (with its rule and what reading it gave: the
    request, its problems, or None for a sync app's conflict copy), in order. A request asked
    for twice is paid once; a reference is uploaded once; tasks beyond what a rule's daily
    budget and credits still allow today wait (or are held, as the engine holds them)."""
    plans: list[FilePlan] = []
    planned: set[tuple[str, int]] = set()
    uploads: set[str] = set()
    rooms: dict[str, Room] = {}
    for path, rule, read in found:
        fp = FilePlan(path, rule.name)
        plans.append(fp)
        if read is None:
            fp.conflict = True
            continue
        if isinstance(read, SpecError):
            fp.problems = [str(p) for p in read.problems] or [str(read)]
            continue
        h = read.request_hash
        taken = foreign(path, read.count, h)
        if taken is not None:
            fp.problems = [f"{path}: {notes.foreign_output_text(taken.name).splitlines()[0]}"]
            continue
        fp.request = read
        canonical = read.canonical()
        fp.price = request_price(prices, canonical) if prices else None
        if rule.name not in rooms:
            rooms[rule.name] = room_of(rule, view)
        for index in range(1, read.count + 1):
            job = view.job(h, index)
            # The folder is read for an image to adopt only where the engine would look.
            fits = (job is None or job.state is S.PENDING) and adoptable(path, index, read.count, h)
            step = decide(job, resubmit_ambiguous=rule.resubmit_ambiguous, adoptable=fits)
            if step in (Plan.SUBMIT, Plan.RESEND, Plan.ADOPT):
                if (h, index) in planned:
                    step = Plan.COPY  # its job is the one planned for the earlier file
                planned.add((h, index))
            if step.paid:
                verdict = rooms[rule.name].verdict(fp.price)
                if verdict is Verdict.GO:
                    rooms[rule.name] = rooms[rule.name].after(fp.price)
                else:
                    step = (
                        Plan.HELD if verdict in (Verdict.UNPRICED, Verdict.TOO_DEAR) else Plan.WAIT
                    )
            fp.images.append(step)
        if fp.tasks:
            for ref in canonical["references"]:
                sha = ref.get("sha256")
                if ref.get("kind") == "file" and sha and sha not in uploads:
                    uploads.add(sha)
                    if not view.uploaded(sha):
                        fp.uploads.append(ref.get("path") or ref.get("source") or sha)
    return plans


# --- reading the ledger without writing it --------------------------------------------------


class ReadOnlyLedger(Ledger):
    """The SQLite ledger opened for reading only: not migrated, not created, not written.

    With a write-ahead log present (a daemon is running, or one stopped uncleanly) the file is
    opened `mode=ro`, reading the log as SQLite does; without one it is opened `immutable`, so
    that not even the log and shared-memory files are created beside it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._clock = time.time
        self._paths = PathCodec()
        quoted = urllib.parse.quote(str(self.path.absolute()))
        wal = os.path.exists(f"{self.path}-wal")
        uri = f"file:{quoted}?" + ("mode=ro" if wal else "immutable=1")
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
        try:
            conn.execute("PRAGMA query_only=ON")
            conn.execute("SELECT 1 FROM jobs LIMIT 1")  # a file that is no ledger fails here
        except sqlite3.Error:
            conn.close()
            raise
        from sqlite_utils import Database

        self.db = Database(conn, execute_plugins=False)


def open_shared_read_only(url: str, roots: dict[str, str]) -> LedgerBase | None:
    """The shared PostgreSQL ledger, every transaction of its session read-only and nothing
    migrated; None when its tables are not there yet (a fresh ledger, which is not created).
    Paths are read relative to the rules' roots, as the daemon stores them. Raises
    LedgerUrlError or LedgerUnavailable as `open_ledger` does."""
    import psycopg

    from promptdrop.ledger import LedgerUnavailable, LedgerUrlError
    from promptdrop.ledger.postgres import PostgresLedger, is_postgres_url, redact

    if not is_postgres_url(url):
        raise LedgerUrlError(
            'the ledger setting must be a PostgreSQL URL such as "postgresql://user@host/db"'
        )

    class ReadOnlyPostgres(PostgresLedger):
        def __init__(self) -> None:
            # PostgresLedger.__init__ migrates: here the session is made read-only instead,
            # before anything is asked, so not even a migration can write.
            self.url = url
            self._clock = time.time
            self._paths = PathCodec(roots)
            self.reconnect_timeout = 10.0
            self._connect_timeout = 10
            self._in_tx = False
            self._closed = False
            self._conn = None
            self._conn = self._connect()
            self._conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    try:
        ledger = ReadOnlyPostgres()
    except psycopg.Error as exc:
        raise LedgerUnavailable(f"cannot open the shared ledger at {redact(url)}: {exc}") from None
    try:
        found = ledger._rows("SELECT to_regclass('jobs') IS NOT NULL AS there")
    except BaseException:
        ledger.close()
        raise
    if not found or not found[0]["there"]:
        ledger.close()
        return None
    return ledger


def ledger_view(ledger: LedgerBase | None, now: float, prices: Any = None) -> LedgerView:
    """The questions of a plan, asked of `ledger` (None: a fresh one, which knows nothing);
    today's credits are priced by `prices` as the engine prices them."""
    if ledger is None:
        return LedgerView()
    since = day_start(now)

    def price_of(request: Any) -> float:
        return (request_price(prices, request) if prices else None) or 0.0

    return LedgerView(
        job=ledger.find_job,
        uploaded=lambda sha: ledger.cached_upload(sha) is not None,
        spent_today=lambda rule: ledger.spent_since(since, rule),
        credits_today=lambda rule: ledger.credits_since(since, rule, price_of),
        ours=lambda path: ledger.output_at(path) is not None,
    )


def _foreign(view: LedgerView) -> Callable[[Path, int, str], Path | None]:
    """`Intake._foreign_output`: a file at one of the output names that promptdrop did not
    write (the ledger recorded it, or its provenance names this request or prompt file)."""

    def ours(path: Path, request_hash: str, source: Path) -> bool:
        if view.ours(str(path)):
            return True
        if path.is_symlink() or not path.is_file():
            return False
        try:
            info = read_provenance(path.read_bytes())
        except OSError:
            return False
        return info.get("promptdrop:request") == request_hash or (
            info.get("promptdrop:source") == source.name
        )

    def first(source: Path, count: int, request_hash: str) -> Path | None:
        for index in range(1, count + 1):
            for fmt in OUTPUT_FORMATS:
                candidate = output_path(source, index, count, fmt)
                if os.path.lexists(candidate) and not ours(candidate, request_hash, source):
                    return candidate
        return None

    return first


def _adoptable(source: Path, index: int, count: int, request_hash: str) -> bool:
    return adoption.choose(adoption.look(source, index, count), request_hash, index) is not None


def read_all(rules: RulesFile) -> list[tuple[Path, RuleConfig, Request | SpecError | None]]:
    """Every prompt file of every rule, as `--once` finds them, read as the daemon reads them
    (None for a conflict copy, which is never read)."""
    found: list[tuple[Path, RuleConfig, Request | SpecError | None]] = []
    for rule in rules.rules:
        for path in scan(rule):
            if is_conflict_copy(path.name):
                found.append((path, rule, None))
                continue
            try:
                found.append((path, rule, read_prompt_file(path, Path(rule.path), rule.defaults)))
            except SpecError as exc:
                found.append((path, rule, exc))
    return found


# --- printing ---------------------------------------------------------------------------------

_SAID = {
    Plan.WAIT: "wait for tomorrow's budget",
    Plan.HELD: "held: no price, or dearer than daily_credits",
    Plan.MADE: "made already",
    Plan.ADOPT: "adopted from the folder",
    Plan.COPY: "a copy of another file's request",
    Plan.RUNNING: "running already",
    Plan.LOOKUP: "looked up by business id",
    Plan.AMBIGUOUS: "ambiguous (promptdrop retry decides)",
    Plan.FAILED: "failed before (promptdrop retry sends it again)",
}


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def file_line(fp: FilePlan, shown: Callable[[Path], str] = str, *, priced: bool = False) -> str:
    """One prompt file of the plan: what it would pay, upload, and why the rest is free."""
    name = shown(fp.path)
    if fp.conflict:
        return f"{name}: a sync app's conflict copy, never processed"
    if fp.problems:
        return f"{name}: invalid, nothing would be sent"
    assert fp.request is not None
    r = fp.request
    asked = " ".join(x for x in (r.model, r.size, r.effective_resolution or "") if x)
    parts = [_n(fp.tasks, "task") if fp.tasks else "nothing to pay"]
    if fp.uploads:
        parts.append(_n(len(fp.uploads), "upload"))
    if fp.tasks and fp.price is not None:
        parts.append(f"{fp.tasks * fp.price:.10g} credits")
    elif fp.tasks and priced:
        parts.append("no price")
    free: dict[Plan, int] = {}
    for step in fp.images:
        if not step.paid:
            free[step] = free.get(step, 0) + 1
    for step, n in free.items():
        parts.append(f"{n} {_SAID[step]}")
    return f"{name} ({fp.rule}): " + ", ".join(parts) + f"  [{asked}]"


def summary(plans: Sequence[FilePlan], *, priced: bool) -> dict[str, Any]:
    """The plan's totals: files, tasks, uploads, credits (with prices), problems."""
    tasks = sum(p.tasks for p in plans)
    credits = sum(p.tasks * p.price for p in plans if p.price is not None)
    unpriced = sum(p.tasks for p in plans if p.price is None and p.request is not None)
    return {
        "files": len(plans),
        "files_to_submit": sum(1 for p in plans if p.tasks),
        "tasks": tasks,
        "uploads": sum(len(p.uploads) for p in plans),
        "waiting": sum(p.images.count(Plan.WAIT) for p in plans),
        "held": sum(p.images.count(Plan.HELD) for p in plans),
        "invalid": sum(1 for p in plans if p.problems),
        "credits": credits if priced else None,
        "unpriced": unpriced if priced else 0,
    }


def print_plan(plans: Sequence[FilePlan], out: TextIO, *, priced: bool, fresh: bool) -> None:
    here = os.getcwd()

    def shown(path: Path) -> str:
        rel = os.path.relpath(path, here)
        return str(path) if rel.startswith("..") else rel

    for fp in plans:
        out.write(file_line(fp, shown, priced=priced) + "\n")
        for problem in fp.problems:
            # Named as the file line names it (the problem carries the full path).
            out.write(f"  {shown(fp.path)}{problem.removeprefix(str(fp.path))}\n")
    total = summary(plans, priced=priced)
    line = (
        f"would submit {_n(total['tasks'], 'task')} for {_n(total['files_to_submit'], 'file')}"
        f" of {total['files']}, {_n(total['uploads'], 'upload')}"
    )
    if total["credits"] is not None:
        line += f", {total['credits']:.10g} credits"
        if total["unpriced"]:
            line += f" ({_n(total['unpriced'], 'task')} without a price)"
    if total["waiting"]:
        line += f"; {total['waiting']} more would wait for tomorrow's budget"
    if total["held"]:
        line += f"; {total['held']} held (no price, or dearer than daily_credits)"
    if total["invalid"]:
        line += f"; {_n(total['invalid'], 'file')} invalid"
    out.write(line + "\n")
    out.write(
        "dry run: nothing was sent, nothing written"
        + (" (no ledger yet: planned as for a first run)" if fresh else "")
        + "\n"
    )


def run_dry(
    rules: RulesFile, state_dir: Path, ledger_url: str | None, out: TextIO, err: TextIO
) -> int:
    """Plan one pass over `rules` against the ledger (read-only) and print it; 0 when every
    file is valid, 1 when any is invalid."""
    for rule in rules.rules:
        if not Path(rule.path).is_dir():
            print(
                f"promptdrop watch --dry-run: {rule.path} is not a folder (yet): "
                f"nothing to plan for rule {rule.name!r}",
                file=err,
            )
    ledger: LedgerBase | None = None
    if ledger_url:
        ledger = open_shared_read_only(ledger_url, {r.name: str(r.path) for r in rules.rules})
    elif (state_dir / LEDGER_NAME).is_file():
        ledger = ReadOnlyLedger(state_dir / LEDGER_NAME)
    try:
        view = ledger_view(ledger, time.time(), rules.prices)
        plans = plan(
            read_all(rules),
            view,
            prices=rules.prices or None,
            adoptable=_adoptable,
            foreign=_foreign(view),
        )
    finally:
        if ledger is not None:
            ledger.close()
    priced = bool(rules.prices)
    print_plan(plans, out, priced=priced, fresh=ledger is None)
    return EXIT_INVALID if any(p.problems for p in plans) else EXIT_VALID


def run_dry_watch(
    folders: Sequence[Path],
    rules_path: Path | None,
    state_dir: Path | None,
    ledger_url: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """`watch --dry-run` from the command line's values: the rules as `watch` builds them (2
    when they cannot be), then `run_dry`. Needs no API key."""
    import psycopg

    from promptdrop.commands.existing import state_dir_or_default
    from promptdrop.ledger import LedgerUnavailable, LedgerUrlError

    try:
        if rules_path is not None:
            rules = read_rules(rules_path)
        elif folders:
            rules = rules_for_folders(list(folders))
        else:
            print(
                "promptdrop watch: name a folder to watch, or a rules file with --rules",
                file=err,
            )
            return 2
    except SpecError as exc:
        print(str(exc), file=err)
        return 2
    for rule in rules.rules if folders and rules_path is None else []:
        if not Path(rule.path).is_dir():
            what = "is not a folder" if os.path.lexists(rule.path) else "does not exist"
            print(f"promptdrop watch --dry-run: {rule.path} {what}", file=err)
            return 2
    try:
        return run_dry(rules, state_dir_or_default(state_dir), ledger_url or rules.ledger, out, err)
    except (LedgerUrlError, LedgerUnavailable, sqlite3.Error, psycopg.Error) as exc:
        print(f"promptdrop watch --dry-run: cannot read the ledger: {exc}", file=err)
        return 1
