"""The ledger's part that owns jobs: creating them, reading them, and moving them.

Every move is a guarded `UPDATE jobs … WHERE id = ? AND state = ?` that must change exactly one
row, committed with its line in the job's history; which moves are legal at all is said in
`ledger.states`, and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from promptdrop.ledger.counts import CountsMixin
from promptdrop.ledger.errors import BudgetSpent, LeaseLost, StaleTransition
from promptdrop.ledger.records import CREDIT_SLACK, Budget, Job
from promptdrop.ledger.sources import SourcesMixin
from promptdrop.ledger.states import FINAL, JobState, check_transition

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
        "business_id",
    }
)


class _Move(NamedTuple):
    """One transition being committed: which job, from where to where, at what time."""

    job_id: int
    src: JobState
    dst: JobState
    at: float


def check_fields(fields: Mapping[str, Any]) -> None:
    """Raise ValueError unless a transition may set every one of these columns."""
    unknown = set(fields) - _JOB_FIELDS
    if unknown:
        raise ValueError(f"unknown job fields: {sorted(unknown)}")


def update_clause(
    src: JobState, dst: JobState, fields: Mapping[str, Any], *, count_attempt: bool, now: float
) -> tuple[list[str], list[Any]]:
    """The SET assignments of the UPDATE that moves a job from src to dst, and their values.

    The attempt counter grows with `count_attempt`; a job taken up again after a final state
    starts a new generation.
    """
    sets = ["state = ?", "updated_at = ?"]
    params: list[Any] = [str(dst), now]
    for key, value in fields.items():
        sets.append(f"{key} = ?")
        params.append(value)
    if count_attempt:
        sets.append("attempts = attempts + 1")
    if dst is JobState.PENDING and src in FINAL:
        sets.append("generation = generation + 1")
    return sets, params


class JobsMixin(SourcesMixin, CountsMixin):
    """Jobs: one per image of a request, moved only by guarded transitions."""

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
        check_fields(fields)
        now = self._clock()
        sets, params = update_clause(src, dst, fields, count_attempt=count_attempt, now=now)
        move = _Move(job_id, src, dst, now)

        def work() -> None:
            self._apply_move(move, sets, params, detail=detail, holder=holder, budget=budget)

        self._atomic(work, lambda: self._move_recorded(move))
        return self.get_job(job_id)

    def _apply_move(
        self,
        move: _Move,
        sets: list[str],
        params: list[Any],
        *,
        detail: str | None,
        holder: str | None,
        budget: Budget | None,
    ) -> None:
        # Inside the transaction: the budget and the claim are checked under their locks.
        job_id, src, dst, now = move
        if budget is not None:
            self._lock_budget(budget.rule)
            if budget.limit is not None and (
                self.spent_since(budget.since, budget.rule) >= budget.limit
            ):
                raise BudgetSpent(f"the budget of rule {budget.rule!r} is spent")
            if budget.credits is not None and budget.price_of is not None:
                spent = self.credits_since(budget.since, budget.rule, budget.price_of)
                if spent + budget.price > budget.credits + CREDIT_SLACK:
                    raise BudgetSpent(f"the daily credits of rule {budget.rule!r} are spent")
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
            "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
            [job_id, now, str(src), str(dst), detail],
        )
        if dst in FINAL:
            self._run("DELETE FROM leases WHERE job_id = ?", [job_id])

    def _move_recorded(self, move: _Move) -> bool:
        # After a lost connection: did the move's commit go through before it was lost?
        job_id, src, dst, now = move
        return bool(
            self._rows(
                "SELECT 1 FROM job_events WHERE job_id = ? AND at = ? AND from_state = ?"
                " AND to_state = ?",
                [job_id, now, str(src), str(dst)],
            )
        )

    def update_running(self, job_id: int, task_json: str) -> None:
        """Record the latest poll answer of a running job (no state change)."""
        self._run(
            "UPDATE jobs SET task_json = ?, updated_at = ? WHERE id = ? AND state = ?",
            [task_json, self._clock(), job_id, str(JobState.RUNNING)],
        )

    def record_proof(self, base_url: str, task_id: str, business_id: str) -> None:
        """Record that the API at `base_url` found the task `task_id` by its business id."""
        self._run(
            "INSERT INTO api_proofs (base_url, task_id, business_id, proven_at) VALUES (?,?,?,?)"
            " ON CONFLICT (base_url) DO UPDATE SET task_id = excluded.task_id,"
            " business_id = excluded.business_id, proven_at = excluded.proven_at",
            [base_url, task_id, business_id, self._clock()],
        )

    def known_tasks(self, limit: int = 3) -> list[Job]:
        """The latest jobs whose task exists for sure (running or done) and whose attempt
        carried a business id: what a lookup by business id can be proven on."""
        rows = self._rows(
            "SELECT * FROM jobs WHERE state IN (?, ?) AND business_id IS NOT NULL"
            " AND task_id IS NOT NULL ORDER BY updated_at DESC LIMIT ?",
            [str(JobState.DONE), str(JobState.RUNNING), limit],
        )
        return [self._job(r) for r in rows]

    def revoke_proof(self, base_url: str) -> None:
        """Forget the proof for `base_url`: a task we made was not found by its business id."""
        self._run("DELETE FROM api_proofs WHERE base_url = ?", [base_url])

    def proven_at(self, base_url: str) -> float | None:
        """When lookups by business id were last proven to work at `base_url` (None: never)."""
        rows = self._rows("SELECT proven_at FROM api_proofs WHERE base_url = ?", [base_url])
        return rows[0]["proven_at"] if rows else None

    def note_event(self, job_id: int, detail: str) -> None:
        """Append a line to a job's history without changing its state."""
        state = self.get_job(job_id).state
        self._run(
            "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
            [job_id, self._clock(), str(state), str(state), detail],
        )

    def events(self, job_id: int) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", [job_id])
