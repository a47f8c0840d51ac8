"""The SQLite ledger: the only code that writes promptdrop's state.

One file in the state directory, opened in WAL mode with synchronous=FULL on every
connection, migrated on open. Every job transition is a guarded
`UPDATE … WHERE id = ? AND state = ?` that must change exactly one row, so a second actor
(a restarted daemon, a `promptdrop retry` run beside it) can never move a job twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from promptdrop.ledger.migrations import migrate
from promptdrop.ledger.states import FINAL, JobState, check_transition

LEDGER_NAME = "ledger.sqlite3"

# Columns a transition may set besides the state; anything else is a programming error.
_JOB_FIELDS = frozenset(
    {
        "task_id", "task_json", "result_url", "expires_at", "image_sha256", "image_format",
        "error", "intent_at", "submitted_at", "finished_at",
    }
)


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
    def from_row(cls, row: dict[str, Any]) -> Job:
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


class Ledger:
    """The job ledger in one SQLite file. Not thread-safe: use it from one thread."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self.db = Database(conn, execute_plugins=False)
        migrate(self.db)

    @classmethod
    def open(cls, state_dir: Path | None = None) -> Ledger:
        """Open (creating if needed) the ledger in the state directory."""
        folder = state_dir or default_state_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(folder / LEDGER_NAME)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a concurrent `promptdrop retry` waits on
        # busy_timeout instead of failing half-way through a read-then-write.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file: 'ok' when sound."""
        return str(next(self.db.query("PRAGMA integrity_check"))["integrity_check"])

    # Jobs --------------------------------------------------------------------------------

    def ensure_job(
        self, request_hash: str, image_index: int, request: dict[str, Any], rule: str | None
    ) -> Job:
        """Return the job for (request_hash, image_index), creating it PENDING if new."""
        now = self._clock()
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO jobs (request_hash, image_index, rule, state, generation,"
                " request_json, attempts, created_at, updated_at) VALUES (?,?,?,?,0,?,0,?,?)",
                [request_hash, image_index, rule, JobState.PENDING,
                 json.dumps(request, sort_keys=True), now, now],
            )
            row = next(
                self.db.query(
                    "SELECT * FROM jobs WHERE request_hash = ? AND image_index = ?",
                    [request_hash, image_index],
                )
            )
        return Job.from_row(row)

    def get_job(self, job_id: int) -> Job:
        return Job.from_row(next(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id])))

    def find_job(self, request_hash: str, image_index: int) -> Job | None:
        rows = list(
            self.db.query(
                "SELECT * FROM jobs WHERE request_hash = ? AND image_index = ?",
                [request_hash, image_index],
            )
        )
        return Job.from_row(rows[0]) if rows else None

    def jobs(self, *states: JobState) -> list[Job]:
        """All jobs, or those in the given states, oldest first."""
        if states:
            marks = ",".join("?" * len(states))
            rows = self.db.query(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", [str(s) for s in states]
            )
        else:
            rows = self.db.query("SELECT * FROM jobs ORDER BY id")
        return [Job.from_row(r) for r in rows]

    def jobs_for_request(self, request_hash: str) -> list[Job]:
        rows = self.db.query(
            "SELECT * FROM jobs WHERE request_hash = ? ORDER BY image_index", [request_hash]
        )
        return [Job.from_row(r) for r in rows]

    def transition(
        self,
        job_id: int,
        src: JobState,
        dst: JobState,
        *,
        detail: str | None = None,
        count_attempt: bool = False,
        **fields: Any,
    ) -> Job:
        """Move a job from src to dst, setting fields, in one committed transaction.

        Raises IllegalTransition for a move the state table forbids, and StaleTransition when
        the job is no longer in src. `count_attempt` adds one to the paid-POST counter, in the
        same commit as the intent, so the counter can never lag behind the wire.
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
        with self._tx():
            cur = self.db.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state = ?",
                [*params, job_id, str(src)],
            )
            if cur.rowcount != 1:
                raise StaleTransition(f"job {job_id} is no longer {src}")
            self.db.execute(
                "INSERT INTO job_events (job_id, at, from_state, to_state, detail)"
                " VALUES (?,?,?,?,?)",
                [job_id, now, str(src), str(dst), detail],
            )
        return self.get_job(job_id)

    def update_running(self, job_id: int, task_json: str) -> None:
        """Record the latest poll answer of a running job (no state change)."""
        self.db.execute(
            "UPDATE jobs SET task_json = ?, updated_at = ? WHERE id = ? AND state = ?",
            [task_json, self._clock(), job_id, str(JobState.RUNNING)],
        )

    def note_event(self, job_id: int, detail: str) -> None:
        """Append a line to a job's history without changing its state."""
        state = self.get_job(job_id).state
        self.db.execute(
            "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
            [job_id, self._clock(), str(state), str(state), detail],
        )

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return list(
            self.db.query("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", [job_id])
        )

    def recover(self) -> Recovery:
        """Repair what a crash left mid-step; call once at start, before any work.

        SUBMITTING jobs become AMBIGUOUS (the paid POST may have created a task: never resent
        by our own logic), UPLOADING ones start over (uploads are free), DOWNLOADING ones go
        back to RUNNING so the task is polled for a fresh URL. RUNNING jobs stay as they are:
        the caller polls them again.
        """
        counts = {}
        for src, dst, why in (
            (JobState.SUBMITTING, JobState.AMBIGUOUS,
             "stopped after the request was sent and before its answer was recorded"),
            (JobState.UPLOADING, JobState.PENDING, "upload interrupted; will upload again"),
            (JobState.DOWNLOADING, JobState.RUNNING, "download interrupted; will fetch again"),
        ):
            jobs = self.jobs(src)
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
            running=len(self.jobs(JobState.RUNNING)),
        )

    def state_counts(self) -> dict[str, int]:
        return {
            r["state"]: r["n"]
            for r in self.db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        }

    def submissions_since(self, since: float, rule: str | None = None) -> int:
        """Paid POSTs whose intent was committed at or after `since` (for daily budgets)."""
        sql = ("SELECT COUNT(*) AS n FROM job_events"
               " WHERE to_state = ? AND from_state <> to_state AND at >= ?")
        params: list[Any] = [str(JobState.SUBMITTING), since]
        if rule is not None:
            sql += " AND job_id IN (SELECT id FROM jobs WHERE rule = ?)"
            params.append(rule)
        return int(next(self.db.query(sql, params))["n"])

    def done_since(self, since: float, rule: str | None = None) -> int:
        """Jobs that reached DONE at or after `since` (images delivered, for status lines)."""
        sql = ("SELECT COUNT(DISTINCT job_id) AS n FROM job_events"
               " WHERE to_state = ? AND from_state <> to_state AND at >= ?")
        params: list[Any] = [str(JobState.DONE), since]
        if rule is not None:
            sql += " AND job_id IN (SELECT id FROM jobs WHERE rule = ?)"
            params.append(rule)
        return int(next(self.db.query(sql, params))["n"])

    # Sources (prompt files) ---------------------------------------------------------------

    def get_source(self, path: Path | str) -> Source | None:
        rows = list(self.db.query("SELECT * FROM sources WHERE path = ?", [str(path)]))
        if not rows:
            return None
        r = rows[0]
        return Source(
            path=r["path"], rule=r["rule"], status=r["status"],
            content_sha256=r["content_sha256"], request_hash=r["request_hash"],
            image_count=r["image_count"], error=r["error"],
        )

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
        self.db.execute(
            "INSERT INTO sources (path, rule, status, content_sha256, request_hash, image_count,"
            " error, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET"
            " rule=excluded.rule, status=excluded.status,"
            " content_sha256=excluded.content_sha256, request_hash=excluded.request_hash,"
            " image_count=excluded.image_count, error=excluded.error,"
            " updated_at=excluded.updated_at",
            [str(path), rule, status, content_sha256, request_hash, image_count, error,
             self._clock()],
        )

    def set_source_status(self, path: Path | str, status: str, error: str | None = None) -> None:
        self.db.execute(
            "UPDATE sources SET status = ?, error = ?, updated_at = ? WHERE path = ?",
            [status, error, self._clock(), str(path)],
        )

    def sources_for_request(self, request_hash: str, status: str = "active") -> list[Source]:
        rows = self.db.query(
            "SELECT path FROM sources WHERE request_hash = ? AND status = ? ORDER BY path",
            [request_hash, status],
        )
        return [s for r in rows if (s := self.get_source(r["path"])) is not None]

    def sources_with_status(self, status: str) -> list[Source]:
        rows = self.db.query("SELECT path FROM sources WHERE status = ? ORDER BY path", [status])
        return [s for r in rows if (s := self.get_source(r["path"])) is not None]

    def sources_under(self, folder: Path | str) -> list[Source]:
        """Every source at or below `folder` (or the one file, when `folder` is a file)."""
        prefix = str(folder).rstrip(os.sep)
        rows = self.db.query(
            "SELECT path FROM sources WHERE path = ? OR substr(path, 1, ?) = ? ORDER BY path",
            [prefix, len(prefix) + 1, prefix + os.sep],
        )
        return [s for r in rows if (s := self.get_source(r["path"])) is not None]

    # Outputs (files promptdrop wrote) -----------------------------------------------------

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
        self.db.execute(
            "INSERT INTO outputs (path, job_id, generation, source_path, sha256, format,"
            " written_at, superseded) VALUES (?,?,?,?,?,?,?,0) ON CONFLICT(path) DO UPDATE SET"
            " job_id=excluded.job_id, generation=excluded.generation,"
            " source_path=excluded.source_path, sha256=excluded.sha256, format=excluded.format,"
            " written_at=excluded.written_at, superseded=0",
            [str(path), job.id, job.generation, None if source_path is None else str(source_path),
             sha256, fmt, self._clock()],
        )

    def output_at(self, path: Path | str) -> Output | None:
        """The record of a file promptdrop wrote at `path`, if any."""
        rows = list(self.db.query("SELECT * FROM outputs WHERE path = ?", [str(path)]))
        return _output(rows[0]) if rows else None

    def move_output(self, old: Path | str, new: Path | str) -> None:
        """Record that one of our files was renamed aside to keep an earlier version."""
        with self._tx():
            # A stale record of a file the user deleted must not block the name.
            self.db.execute("DELETE FROM outputs WHERE path = ?", [str(new)])
            self.db.execute(
                "UPDATE outputs SET path = ?, superseded = 1 WHERE path = ?", [str(new), str(old)]
            )

    def outputs_for_job(self, job_id: int) -> list[Output]:
        rows = self.db.query("SELECT * FROM outputs WHERE job_id = ? ORDER BY id", [job_id])
        return [_output(r) for r in rows]

    def output_for(self, source_path: Path | str, job: Job) -> Output | None:
        """The file written for this source from this job's current generation, if any."""
        rows = list(
            self.db.query(
                "SELECT * FROM outputs WHERE source_path = ? AND job_id = ? AND generation = ?",
                [str(source_path), job.id, job.generation],
            )
        )
        return _output(rows[0]) if rows else None

    def outputs_for_source(self, source_path: Path | str) -> list[Output]:
        rows = self.db.query(
            "SELECT * FROM outputs WHERE source_path = ? ORDER BY id", [str(source_path)]
        )
        return [_output(r) for r in rows]

    # Uploads --------------------------------------------------------------------------------

    def cached_upload(self, sha256: str) -> str | None:
        """The URL a reference with these bytes was uploaded to, if it was."""
        rows = list(self.db.query("SELECT url FROM uploads WHERE sha256 = ?", [sha256]))
        return rows[0]["url"] if rows else None

    def record_upload(self, sha256: str, url: str, upload_id: str | None, raw: Any) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (sha256, url, upload_id, response_json, uploaded_at)"
            " VALUES (?,?,?,?,?)",
            [sha256, url, upload_id, json.dumps(raw), self._clock()],
        )

    def forget_uploads(self, urls: Sequence[str]) -> int:
        """Drop cached uploads the API no longer accepts, so they are uploaded again."""
        if not urls:
            return 0
        marks = ",".join("?" * len(urls))
        cur = self.db.execute(f"DELETE FROM uploads WHERE url IN ({marks})", list(urls))
        return int(cur.rowcount)

    def upload_count(self) -> int:
        return int(next(self.db.query("SELECT COUNT(*) AS n FROM uploads"))["n"])


def _output(r: dict[str, Any]) -> Output:
    return Output(
        id=r["id"], path=r["path"], job_id=r["job_id"], generation=r["generation"] or 0,
        source_path=r["source_path"], sha256=r["sha256"], format=r["format"],
        superseded=bool(r["superseded"]),
    )
