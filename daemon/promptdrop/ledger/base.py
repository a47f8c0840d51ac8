"""What every ledger promises, whatever it is stored in: the records, the errors, the interface.

`LedgerBase` holds the whole behaviour, written once in SQL both SQLite and PostgreSQL accept
(with `?` placeholders). A backend supplies four primitives: `_rows` and `_run` for one
statement, `_atomic` for a transaction, and `_NOW`, the SQL for the database's clock in epoch
seconds (leases are timed by the database, so hosts whose clocks disagree still agree on
whether a lease has expired).

Leases: a host `claim`s a job before it sends anything for it, `renew`s all its claims while
it works, and loses them when it stops renewing for `ttl` seconds; another host may then claim
the job and carry on from the state the ledger records. A transition given `holder=` commits
only while that host still holds the job's claim, so a host that was presumed dead can never
move a job that another host took over.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from promptdrop.ledger.states import FINAL, JobState, check_transition

T = TypeVar("T")

# Columns a transition may set besides the state; anything else is a programming error.
_JOB_FIELDS = frozenset(
    {
        "task_id",
        "task_json",
        "result_url",
        "expires_at",
        "image_sha256",
        "image_format",
        "error",
        "intent_at",
        "submitted_at",
        "finished_at",
    }
)
# Unfinished work a dead host may have left: these are taken over once its claim expires.
_IN_HAND = (JobState.UPLOADING, JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING)


@dataclass(frozen=True)
class Job:
    id: int
    request_hash: str
    image_index: int
    rule: str | None
    state: JobState
    generation: int
    request: dict[str, Any]
    attempts: int
    task_id: str | None
    result_url: str | None
    expires_at: float | None
    image_sha256: str | None
    image_format: str | None
    error: str | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        return cls(
            id=row["id"],
            request_hash=row["request_hash"],
            image_index=row["image_index"],
            rule=row["rule"],
            state=JobState(row["state"]),
            generation=row["generation"] or 0,
            request=json.loads(row["request_json"]),
            attempts=row["attempts"] or 0,
            task_id=row["task_id"],
            result_url=row["result_url"],
            expires_at=row["expires_at"],
            image_sha256=row["image_sha256"],
            image_format=row["image_format"],
            error=row["error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class Source:
    path: str
    rule: str | None
    status: str
    content_sha256: str | None
    request_hash: str | None
    image_count: int | None
    error: str | None


@dataclass(frozen=True)
class Output:
    id: int
    path: str
    job_id: int
    generation: int
    source_path: str | None
    sha256: str
    format: str | None
    superseded: bool


@dataclass(frozen=True)
class Recovery:
    """What opening the ledger after a stop or a crash found and repaired."""

    ambiguous: int  # caught between the submit intent and the answer
    uploads_restarted: int
    downloads_restarted: int
    running: int  # tasks to poll again

    def __str__(self) -> str:
        return (
            f"{self.running} running task(s) to resume, {self.downloads_restarted} download(s) "
            f"to redo, {self.uploads_restarted} upload(s) to redo, {self.ambiguous} submission(s) "
            "whose answer was lost (marked ambiguous, not resent)"
        )


class StaleTransition(RuntimeError):
    """The job was no longer in the state the caller expected: someone else moved it."""


class LeaseLost(StaleTransition):
    """The caller no longer holds the job's claim: another host took it over. Leave the job."""


class BudgetSpent(RuntimeError):
    """A submit intent was refused because the rule's budget since the given time is used up;
    nothing was committed."""


@dataclass(frozen=True)
class Budget:
    """A cap checked inside the transaction that commits a submit intent: at most `limit`
    paid submissions (see `LedgerBase.spent_since`) of `rule` since `since`."""

    rule: str
    since: float
    limit: int


class LedgerUnavailable(RuntimeError):
    """The ledger's database cannot be reached (and did not come back in time)."""


def default_state_dir() -> Path:
    """PROMPTDROP_STATE_DIR, else systemd's $STATE_DIRECTORY, else $XDG_STATE_HOME/promptdrop."""
    explicit = os.environ.get("PROMPTDROP_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        # systemd may pass several colon-separated folders; the first is ours.
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "promptdrop"


def default_host_id(state_dir: Path) -> str:
    """A name for this daemon in a shared ledger: the machine's name and its state directory.

    Stable across restarts (a restarted daemon recognises its own claims at once), and
    distinct for two daemons on one machine with separate state directories.
    """
    digest = hashlib.sha256(str(Path(state_dir).absolute()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}:{digest}"


class PathCodec:
    """Maps this host's absolute paths to host-independent keys, and back.

    A path under a watched root is stored as `@RULE:/path/below/root` (the rule name quoted),
    so hosts that mount the shared drive at different places name the same file the same
    way; anything else is stored as it is. The mapping keeps prefixes, so "everything below
    this folder" is still a prefix match on the stored keys. Without roots it is the identity.
    """

    def __init__(self, roots: Mapping[str, Path | str] | None = None) -> None:
        # Deepest root first: with nested roots a file belongs to the innermost one.
        self._roots = sorted(
            ((name, str(Path(root)).rstrip(os.sep)) for name, root in (roots or {}).items()),
            key=lambda item: len(item[1]),
            reverse=True,
        )
        self._by_tag = {
            "@" + urllib.parse.quote(name, safe="") + ":": root for name, root in self._roots
        }

    def __bool__(self) -> bool:
        return bool(self._roots)

    def encode(self, path: Path | str) -> str:
        text = str(path)
        for name, root in self._roots:
            if text == root or text.startswith(root + os.sep) or (not root and text == os.sep):
                rest = text[len(root) :] if text != os.sep else ""
                return "@" + urllib.parse.quote(name, safe="") + ":" + rest
        return text

    def decode(self, key: str) -> str:
        if key.startswith("@"):
            tag, colon, rest = key.partition(":")
            root = self._by_tag.get(tag + colon)
            if root is not None:
                return (root + rest) or os.sep
        return key  # not under a root this host watches: shown as stored

    def encode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._map_refs(request, self.encode)

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._map_refs(request, self.decode)

    def _map_refs(self, request: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
        # Local reference images are read again for an upload by whichever host does it.
        refs = request.get("references")
        if not self or not isinstance(refs, list):
            return request
        mapped = [
            {**r, "path": fn(r["path"])}
            if isinstance(r, dict) and isinstance(r.get("path"), str)
            else r
            for r in refs
        ]
        return {**request, "references": mapped}


class LedgerBase:
    """The ledger interface and its behaviour; see the module docstring for the backends' part.

    Not thread-safe: use one ledger object from one thread.
    """

    _NOW = ""  # SQL for the database's current time in epoch seconds
    _LOCK = ""  # appended to a SELECT that must lock the rows it reads until commit
    _clock: Callable[[], float]
    _paths: PathCodec

    # Backend primitives ----------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; return the number of rows it changed."""
        raise NotImplementedError

    def _atomic(
        self, work: Callable[[], None], committed: Callable[[], bool] | None = None
    ) -> None:
        """Run `work` in one transaction. `committed` tells, after a lost connection, whether
        the commit went through before it was lost (so the work is not done twice)."""
        raise NotImplementedError

    @property
    def location(self) -> str:
        """Where the ledger lives, for log lines (never with a password)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def integrity_check(self) -> str:
        """The database's verdict on the ledger: 'ok' when sound."""
        raise NotImplementedError

    def register_roots(self, host: str, roots: Mapping[str, Path | str]) -> None:
        """A shared ledger records where each rule's folder is on `host`, and stores paths
        relative to these roots from now on. A ledger of one host keeps absolute paths, so
        here this does nothing."""

    def __enter__(self) -> LedgerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _job(self, row: Mapping[str, Any]) -> Job:
        job = Job.from_row(row)
        return replace(job, request=self._paths.decode_request(job.request)) if self._paths else job

    # Jobs --------------------------------------------------------------------------------

    def ensure_job(
        self, request_hash: str, image_index: int, request: dict[str, Any], rule: str | None
    ) -> Job:
        """Return the job for (request_hash, image_index), creating it PENDING if new."""
        # One statement, so a retry after a lost connection is harmless: it inserts nothing.
        self._atomic(lambda: self._insert_job(request_hash, image_index, request, rule))
        found = self.find_job(request_hash, image_index)
        assert found is not None  # rows are never deleted
        return found

    def _insert_job(
        self, request_hash: str, image_index: int, request: dict[str, Any], rule: str | None
    ) -> None:
        now = self._clock()
        blob = json.dumps(self._paths.encode_request(request), sort_keys=True)
        self._run(
            "INSERT INTO jobs (request_hash, image_index, rule, state, generation,"
            " request_json, attempts, created_at, updated_at) VALUES (?,?,?,?,0,?,0,?,?)"
            " ON CONFLICT (request_hash, image_index) DO NOTHING",
            [request_hash, image_index, rule, str(JobState.PENDING), blob, now, now],
        )

    def take_up(
        self,
        path: Path | str,
        *,
        rule: str | None,
        content_sha256: str | None,
        request_hash: str,
        image_count: int,
        request: dict[str, Any],
    ) -> list[Job]:
        """Record the prompt file at `path` as active and make sure each of its images has a
        job (PENDING when new), in one transaction; return the jobs, by image index.

        One commit, so the ledger never records an active prompt file without its jobs (which
        a restart would take as already handled). Every statement is an upsert or an insert
        that skips existing rows, so running it again after a lost connection is harmless.
        """

        def work() -> None:
            self._put_source(
                path,
                rule=rule,
                status="active",
                content_sha256=content_sha256,
                request_hash=request_hash,
                image_count=image_count,
                error=None,
            )
            for index in range(1, image_count + 1):
                self._insert_job(request_hash, index, request, rule)

        self._atomic(work)
        return [j for j in self.jobs_for_request(request_hash) if j.image_index <= image_count]

    def get_job(self, job_id: int) -> Job:
        return self._job(next(iter(self._rows("SELECT * FROM jobs WHERE id = ?", [job_id]))))

    def find_job(self, request_hash: str, image_index: int) -> Job | None:
        rows = self._rows(
            "SELECT * FROM jobs WHERE request_hash = ? AND image_index = ?",
            [request_hash, image_index],
        )
        return self._job(rows[0]) if rows else None

    def jobs(self, *states: JobState, free_for: str | None = None) -> list[Job]:
        """All jobs, or those in the given states, oldest first.

        With `free_for`, only those that host may work on: jobs another host holds a live
        claim on are left out (with a ledger of one's own, none are).
        """
        sql, params = "SELECT jobs.* FROM jobs", []
        if free_for is not None:
            sql += (
                " LEFT JOIN leases ON leases.job_id = jobs.id"
                f" AND leases.expires > {self._NOW} AND leases.host <> ?"
            )
            params.append(free_for)
        where = []
        if states:
            where.append(f"jobs.state IN ({','.join('?' * len(states))})")
            params.extend(str(s) for s in states)
        if free_for is not None:
            where.append("leases.job_id IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._job(r) for r in self._rows(sql + " ORDER BY jobs.id", params)]

    def jobs_for_request(self, request_hash: str) -> list[Job]:
        rows = self._rows(
            "SELECT * FROM jobs WHERE request_hash = ? ORDER BY image_index", [request_hash]
        )
        return [self._job(r) for r in rows]

    def transition(
        self,
        job_id: int,
        src: JobState,
        dst: JobState,
        *,
        detail: str | None = None,
        count_attempt: bool = False,
        holder: str | None = None,
        budget: Budget | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job from src to dst, setting fields, in one committed transaction.

        Raises IllegalTransition for a move the state table forbids, and StaleTransition when
        the job is no longer in src. `count_attempt` adds one to the paid-POST counter, in the
        same commit as the intent, so the counter can never lag behind the wire. With
        `holder`, the move commits only while that host holds the job's claim (LeaseLost
        otherwise). Reaching a final state ends the job's claim in the same commit. With
        `budget`, the move commits only while the rule's paid submissions since `since` are
        fewer than `limit`, counted under a lock that every host's budgeted moves take, so
        several hosts sharing a ledger never overspend (BudgetSpent otherwise).
        """
        check_transition(src, dst)
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        now = self._clock()
        sets = ["state = ?", "updated_at = ?"]
        params: list[Any] = [str(dst), now]
        for key, value in fields.items():
            sets.append(f"{key} = ?")
            params.append(value)
        if count_attempt:
            sets.append("attempts = attempts + 1")
        if dst is JobState.PENDING and src in FINAL:
            sets.append("generation = generation + 1")

        def work() -> None:
            if budget is not None:
                self._lock_budget(budget.rule)
                if self.spent_since(budget.since, budget.rule) >= budget.limit:
                    raise BudgetSpent(f"the budget of rule {budget.rule!r} is spent")
            if holder is not None:
                held = self._rows(f"SELECT host FROM leases WHERE job_id = ?{self._LOCK}", [job_id])
                if not held or held[0]["host"] != holder:
                    raise LeaseLost(f"job {job_id} is no longer claimed by {holder}")
            changed = self._run(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state = ?",
                [*params, job_id, str(src)],
            )
            if changed != 1:
                raise StaleTransition(f"job {job_id} is no longer {src}")
            self._run(
                "INSERT INTO job_events (job_id, at, from_state, to_state, detail)"
                " VALUES (?,?,?,?,?)",
                [job_id, now, str(src), str(dst), detail],
            )
            if dst in FINAL:
                self._run("DELETE FROM leases WHERE job_id = ?", [job_id])

        def committed() -> bool:
            return bool(
                self._rows(
                    "SELECT 1 FROM job_events WHERE job_id = ? AND at = ? AND from_state = ?"
                    " AND to_state = ?",
                    [job_id, now, str(src), str(dst)],
                )
            )

        self._atomic(work, committed)
        return self.get_job(job_id)

    def update_running(self, job_id: int, task_json: str) -> None:
        """Record the latest poll answer of a running job (no state change)."""
        self._run(
            "UPDATE jobs SET task_json = ?, updated_at = ? WHERE id = ? AND state = ?",
            [task_json, self._clock(), job_id, str(JobState.RUNNING)],
        )

    def note_event(self, job_id: int, detail: str) -> None:
        """Append a line to a job's history without changing its state."""
        state = self.get_job(job_id).state
        self._run(
            "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
            [job_id, self._clock(), str(state), str(state), detail],
        )

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", [job_id])

    def recover(self, host: str | None = None) -> Recovery:
        """Repair what a crash left mid-step; call once at start, before any work.

        SUBMITTING jobs become AMBIGUOUS (the paid POST may have created a task: never resent
        by our own logic), UPLOADING ones start over (uploads are free), DOWNLOADING ones go
        back to RUNNING so the task is polled for a fresh URL. RUNNING jobs stay as they are:
        the caller polls them again. With `host` (a shared ledger), jobs that another host
        holds a live claim on are its business and are left alone.
        """
        others = self._claimed_by_others(host) if host is not None else set()
        counts = {}
        for src, dst, why in (
            (
                JobState.SUBMITTING,
                JobState.AMBIGUOUS,
                "stopped after the request was sent and before its answer was recorded",
            ),
            (JobState.UPLOADING, JobState.PENDING, "upload interrupted; will upload again"),
            (JobState.DOWNLOADING, JobState.RUNNING, "download interrupted; will fetch again"),
        ):
            jobs = [j for j in self.jobs(src) if j.id not in others]
            for job in jobs:
                fields: dict[str, Any] = {}
                if dst is JobState.AMBIGUOUS:
                    fields["error"] = why
                self.transition(job.id, src, dst, detail=f"recovery: {why}", **fields)
            counts[src] = len(jobs)
        return Recovery(
            ambiguous=counts[JobState.SUBMITTING],
            uploads_restarted=counts[JobState.UPLOADING],
            downloads_restarted=counts[JobState.DOWNLOADING],
            running=len([j for j in self.jobs(JobState.RUNNING) if j.id not in others]),
        )

    def state_counts(self) -> dict[str, int]:
        return {
            r["state"]: int(r["n"])
            for r in self._rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        }

    def submissions_since(self, since: float, rule: str | None = None) -> int:
        """Paid POSTs whose intent was committed at or after `since` (for daily budgets)."""
        sql = (
            "SELECT COUNT(*) AS n FROM job_events"
            " WHERE to_state = ? AND from_state <> to_state AND at >= ?"
        )
        params: list[Any] = [str(JobState.SUBMITTING), since]
        if rule is not None:
            sql += " AND job_id IN (SELECT id FROM jobs WHERE rule = ?)"
            params.append(rule)
        return int(self._rows(sql, params)[0]["n"])

    def spent_since(self, since: float, rule: str | None = None) -> int:
        """Submissions that may have cost money, of intents committed at or after `since`.

        Every intent counts, less those the API proved created nothing: the job then left
        SUBMITTING for PENDING (rate limited, an outage answer, a refused key) or for FAILED
        (the request was refused). Kept in the ledger, so a restart forgets no such refund.
        """
        sub, pending, failed = (
            str(st) for st in (JobState.SUBMITTING, JobState.PENDING, JobState.FAILED)
        )
        of_rule = " AND {e}job_id IN (SELECT id FROM jobs WHERE rule = ?)" if rule else ""
        sql = (
            "SELECT"
            " (SELECT COUNT(*) FROM job_events"
            "   WHERE to_state = ? AND from_state <> to_state AND at >= ?"
            + of_rule.format(e="")
            + ") -"
            " (SELECT COUNT(*) FROM job_events e"
            "   WHERE e.from_state = ? AND e.to_state IN (?, ?) AND e.at >= ?"
            + of_rule.format(e="e.")
            + "   AND EXISTS (SELECT 1 FROM job_events i WHERE i.job_id = e.job_id"
            "     AND i.to_state = ? AND i.from_state <> i.to_state AND i.at >= ?"
            "     AND i.id < e.id)) AS n"
        )
        by_rule = [rule] if rule else []
        params = [sub, since, *by_rule, sub, pending, failed, since, *by_rule, sub, since]
        return int(self._rows(sql, params)[0]["n"])

    def _lock_budget(self, rule: str) -> None:
        """Serialise budgeted intents of one rule until the transaction ends. SQLite's
        BEGIN IMMEDIATE already holds the whole file's write lock."""

    def done_since(self, since: float, rule: str | None = None) -> int:
        """Jobs that reached DONE at or after `since` (images delivered, for status lines)."""
        sql = (
            "SELECT COUNT(DISTINCT job_id) AS n FROM job_events"
            " WHERE to_state = ? AND from_state <> to_state AND at >= ?"
        )
        params: list[Any] = [str(JobState.DONE), since]
        if rule is not None:
            sql += " AND job_id IN (SELECT id FROM jobs WHERE rule = ?)"
            params.append(rule)
        return int(self._rows(sql, params)[0]["n"])

    # Claims (leases) --------------------------------------------------------------------------

    def claim(self, job_id: int, host: str, ttl: float) -> bool:
        """Claim the job for `host` for `ttl` seconds; True when it is now ours.

        Atomic in the database: of several hosts claiming at once exactly one wins. A host
        may claim again what it already holds (that renews it); a claim whose time ran out
        may be taken by anyone.
        """
        return (
            self._run(
                "INSERT INTO leases (job_id, host, expires, claimed_at)"
                f" VALUES (?, ?, {self._NOW} + ?, {self._NOW})"
                " ON CONFLICT (job_id) DO UPDATE SET host = excluded.host,"
                " expires = excluded.expires, claimed_at = excluded.claimed_at"
                " WHERE leases.host = excluded.host OR leases.expires <= excluded.claimed_at",
                [job_id, host, float(ttl)],
            )
            == 1
        )

    def renew(self, host: str, ttl: float) -> int:
        """Extend every claim `host` still holds to `ttl` seconds from now; return how many.

        A claim another host took over is no longer ours and is not touched.
        """
        return self._run(
            f"UPDATE leases SET expires = {self._NOW} + ? WHERE host = ?", [float(ttl), host]
        )

    def release(self, job_id: int, host: str) -> bool:
        """Give up `host`'s claim on the job (no-op when it is not ours); True if released."""
        return self._run("DELETE FROM leases WHERE job_id = ? AND host = ?", [job_id, host]) == 1

    def release_all(self, host: str) -> int:
        """Give up every claim of `host` (a clean stop: others may take the work over now)."""
        return self._run("DELETE FROM leases WHERE host = ?", [host])

    def holder(self, job_id: int) -> str | None:
        """The host whose claim on the job is still running, if any."""
        rows = self._rows(
            f"SELECT host FROM leases WHERE job_id = ? AND expires > {self._NOW}", [job_id]
        )
        return str(rows[0]["host"]) if rows else None

    def expired_claims(self) -> list[Job]:
        """Jobs a host was working on and stopped renewing: free for another host to take over.

        Unfinished work (uploading, submitting, running, downloading) with no live claim, and
        pending jobs whose claim ran out (their host died before sending anything).
        """
        marks = ",".join("?" * len(_IN_HAND))
        rows = self._rows(
            "SELECT jobs.* FROM jobs LEFT JOIN leases ON leases.job_id = jobs.id"
            f" WHERE (jobs.state IN ({marks})"
            f" AND (leases.job_id IS NULL OR leases.expires <= {self._NOW}))"
            f" OR (jobs.state = ? AND leases.expires <= {self._NOW}) ORDER BY jobs.id",
            [*(str(s) for s in _IN_HAND), str(JobState.PENDING)],
        )
        return [self._job(r) for r in rows]

    def take_over(self, host: str, ttl: float) -> list[Job]:
        """Claim every job whose claim expired, and repair it as `recover` would; return them.

        Running tasks stay RUNNING (poll them by task id: never resubmit); a submission whose
        answer died with its host becomes AMBIGUOUS (never resent); an interrupted upload
        starts over; an interrupted download is fetched again. Jobs another host claims
        first, or moves meanwhile, are left to it.
        """
        taken = []
        for job in self.expired_claims():
            if not self.claim(job.id, host, ttl):
                continue
            try:
                if job.state is JobState.SUBMITTING:
                    why = "the host that sent this request stopped before its answer was recorded"
                    job = self.transition(
                        job.id,
                        job.state,
                        JobState.AMBIGUOUS,
                        holder=host,
                        detail=f"taken over: {why}",
                        error=why,
                    )
                elif job.state is JobState.UPLOADING:
                    job = self.transition(
                        job.id,
                        job.state,
                        JobState.PENDING,
                        holder=host,
                        detail="taken over: upload interrupted; will upload again",
                    )
                elif job.state is JobState.DOWNLOADING:
                    job = self.transition(
                        job.id,
                        job.state,
                        JobState.RUNNING,
                        holder=host,
                        detail="taken over: download interrupted; will fetch again",
                    )
                else:
                    self.note_event(job.id, f"taken over by {host}")
            except StaleTransition:
                continue
            taken.append(self.get_job(job.id))
        return taken

    def _claimed_by_others(self, host: str) -> set[int]:
        rows = self._rows(
            f"SELECT job_id FROM leases WHERE host <> ? AND expires > {self._NOW}", [host]
        )
        return {int(r["job_id"]) for r in rows}

    # Sources (prompt files) ---------------------------------------------------------------

    def _source(self, r: Mapping[str, Any]) -> Source:
        return Source(
            path=self._paths.decode(r["path"]),
            rule=r["rule"],
            status=r["status"],
            content_sha256=r["content_sha256"],
            request_hash=r["request_hash"],
            image_count=r["image_count"],
            error=r["error"],
        )

    def get_source(self, path: Path | str) -> Source | None:
        rows = self._rows("SELECT * FROM sources WHERE path = ?", [self._paths.encode(path)])
        return self._source(rows[0]) if rows else None

    def put_source(
        self,
        path: Path | str,
        *,
        rule: str | None,
        status: str,
        content_sha256: str | None = None,
        request_hash: str | None = None,
        image_count: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record what the prompt file at `path` is now (insert or replace)."""
        self._put_source(
            path,
            rule=rule,
            status=status,
            content_sha256=content_sha256,
            request_hash=request_hash,
            image_count=image_count,
            error=error,
        )

    def _put_source(
        self,
        path: Path | str,
        *,
        rule: str | None,
        status: str,
        content_sha256: str | None,
        request_hash: str | None,
        image_count: int | None,
        error: str | None,
    ) -> None:
        self._run(
            "INSERT INTO sources (path, rule, status, content_sha256, request_hash, image_count,"
            " error, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET"
            " rule=excluded.rule, status=excluded.status,"
            " content_sha256=excluded.content_sha256, request_hash=excluded.request_hash,"
            " image_count=excluded.image_count, error=excluded.error,"
            " updated_at=excluded.updated_at",
            [
                self._paths.encode(path),
                rule,
                status,
                content_sha256,
                request_hash,
                image_count,
                error,
                self._clock(),
            ],
        )

    def is_settled(self, path: Path | str, content_sha256: str) -> bool:
        """True when the prompt file at `path` is recorded as active with these bytes and each
        of its images is DONE with a file recorded for this very source from the job's current
        generation: a rescan of it has nothing to do. One query, so a restart on many done
        files does not pay three each."""
        rows = self._rows(
            "SELECT COALESCE(s.image_count, 1) AS wanted, (SELECT COUNT(*) FROM jobs j"
            " WHERE j.request_hash = s.request_hash AND j.image_index <= COALESCE(s.image_count, 1)"
            " AND j.state = ? AND EXISTS (SELECT 1 FROM outputs o WHERE o.source_path = s.path"
            " AND o.job_id = j.id AND o.generation = j.generation)) AS done"
            " FROM sources s WHERE s.path = ? AND s.status = 'active' AND s.content_sha256 = ?"
            " AND s.request_hash IS NOT NULL",
            [str(JobState.DONE), self._paths.encode(path), content_sha256],
        )
        return bool(rows) and int(rows[0]["done"]) == int(rows[0]["wanted"])

    def set_source_status(self, path: Path | str, status: str, error: str | None = None) -> None:
        self._run(
            "UPDATE sources SET status = ?, error = ?, updated_at = ? WHERE path = ?",
            [status, error, self._clock(), self._paths.encode(path)],
        )

    def sources_for_request(self, request_hash: str, status: str = "active") -> list[Source]:
        rows = self._rows(
            "SELECT * FROM sources WHERE request_hash = ? AND status = ? ORDER BY path",
            [request_hash, status],
        )
        return [self._source(r) for r in rows]

    def sources_with_status(self, status: str) -> list[Source]:
        rows = self._rows("SELECT * FROM sources WHERE status = ? ORDER BY path", [status])
        return [self._source(r) for r in rows]

    def sources_under(self, folder: Path | str) -> list[Source]:
        """Every source at or below `folder` (or the one file, when `folder` is a file)."""
        prefix = self._paths.encode(str(folder).rstrip(os.sep) or os.sep).rstrip(os.sep)
        rows = self._rows(
            "SELECT * FROM sources WHERE path = ? OR substr(path, 1, CAST(? AS INTEGER)) = ?"
            " ORDER BY path",
            [prefix, len(prefix) + 1, prefix + os.sep],
        )
        return [self._source(r) for r in rows]

    # Outputs (files promptdrop wrote) -----------------------------------------------------

    def _output(self, r: Mapping[str, Any]) -> Output:
        return Output(
            id=r["id"],
            path=self._paths.decode(r["path"]),
            job_id=r["job_id"],
            generation=r["generation"] or 0,
            source_path=None if r["source_path"] is None else self._paths.decode(r["source_path"]),
            sha256=r["sha256"],
            format=r["format"],
            superseded=bool(r["superseded"]),
        )

    def record_output(
        self,
        path: Path | str,
        *,
        job: Job,
        source_path: Path | str | None,
        sha256: str,
        fmt: str | None,
    ) -> None:
        """Remember that promptdrop wrote `path` with these bytes (replaces a stale record)."""
        self._run(
            "INSERT INTO outputs (path, job_id, generation, source_path, sha256, format,"
            " written_at, superseded) VALUES (?,?,?,?,?,?,?,0) ON CONFLICT(path) DO UPDATE SET"
            " job_id=excluded.job_id, generation=excluded.generation,"
            " source_path=excluded.source_path, sha256=excluded.sha256, format=excluded.format,"
            " written_at=excluded.written_at, superseded=0",
            [
                self._paths.encode(path),
                job.id,
                job.generation,
                None if source_path is None else self._paths.encode(source_path),
                sha256,
                fmt,
                self._clock(),
            ],
        )

    def output_at(self, path: Path | str) -> Output | None:
        """The record of a file promptdrop wrote at `path`, if any."""
        rows = self._rows("SELECT * FROM outputs WHERE path = ?", [self._paths.encode(path)])
        return self._output(rows[0]) if rows else None

    def move_output(self, old: Path | str, new: Path | str) -> None:
        """Record that one of our files was renamed aside to keep an earlier version."""
        old_key, new_key = self._paths.encode(old), self._paths.encode(new)

        def work() -> None:
            # A stale record of a file the user deleted must not block the name.
            self._run("DELETE FROM outputs WHERE path = ?", [new_key])
            self._run(
                "UPDATE outputs SET path = ?, superseded = 1 WHERE path = ?", [new_key, old_key]
            )

        def committed() -> bool:
            return not self._rows("SELECT 1 FROM outputs WHERE path = ?", [old_key]) and bool(
                self._rows("SELECT 1 FROM outputs WHERE path = ? AND superseded = 1", [new_key])
            )

        self._atomic(work, committed)

    def outputs_for_job(self, job_id: int) -> list[Output]:
        rows = self._rows("SELECT * FROM outputs WHERE job_id = ? ORDER BY id", [job_id])
        return [self._output(r) for r in rows]

    def output_for(self, source_path: Path | str, job: Job) -> Output | None:
        """The file written for this source from this job's current generation, if any."""
        rows = self._rows(
            "SELECT * FROM outputs WHERE source_path = ? AND job_id = ? AND generation = ?",
            [self._paths.encode(source_path), job.id, job.generation],
        )
        return self._output(rows[0]) if rows else None

    def outputs_for_source(self, source_path: Path | str) -> list[Output]:
        rows = self._rows(
            "SELECT * FROM outputs WHERE source_path = ? ORDER BY id",
            [self._paths.encode(source_path)],
        )
        return [self._output(r) for r in rows]

    # Uploads --------------------------------------------------------------------------------

    def cached_upload(self, sha256: str) -> str | None:
        """The URL a reference with these bytes was uploaded to, if it was."""
        rows = self._rows("SELECT url FROM uploads WHERE sha256 = ?", [sha256])
        return str(rows[0]["url"]) if rows else None

    def record_upload(self, sha256: str, url: str, upload_id: str | None, raw: Any) -> None:
        self._run(
            "INSERT INTO uploads (sha256, url, upload_id, response_json, uploaded_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET url=excluded.url,"
            " upload_id=excluded.upload_id, response_json=excluded.response_json,"
            " uploaded_at=excluded.uploaded_at",
            [sha256, url, upload_id, json.dumps(raw), self._clock()],
        )

    def forget_uploads(self, urls: Sequence[str]) -> int:
        """Drop cached uploads the API no longer accepts, so they are uploaded again."""
        if not urls:
            return 0
        marks = ",".join("?" * len(urls))
        return self._run(f"DELETE FROM uploads WHERE url IN ({marks})", list(urls))

    def upload_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) AS n FROM uploads")[0]["n"])
