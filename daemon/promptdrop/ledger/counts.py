"""The ledger's counts: paid submissions against budgets, deliveries, jobs by state.

Counted from the job history (`job_events`), so a restart forgets nothing, not even a refund.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from promptdrop.ledger.core import LedgerCore
from promptdrop.ledger.states import JobState


class CountsMixin(LedgerCore):
    """Counts over the job history, for budgets and status lines."""

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

    def credits_since(
        self,
        since: float,
        rule: str | None,
        price_of: Callable[[Mapping[str, Any]], float],
    ) -> float:
        """Credits spent by the submissions `spent_since` counts: each job's request priced
        by `price_of` once per counted intent (a refunded one counts nothing)."""
        sub, pending, failed = (
            str(st) for st in (JobState.SUBMITTING, JobState.PENDING, JobState.FAILED)
        )
        of_rule = " AND j.rule = ?" if rule else ""
        by_rule = [rule] if rule else []
        intents = self._rows(
            "SELECT e.job_id AS job_id, j.request_json AS request, COUNT(*) AS n"
            " FROM job_events e JOIN jobs j ON j.id = e.job_id"
            " WHERE e.to_state = ? AND e.from_state <> e.to_state AND e.at >= ?"
            + of_rule
            + " GROUP BY e.job_id, j.request_json",
            [sub, since, *by_rule],
        )
        refunds = self._rows(
            "SELECT e.job_id AS job_id, COUNT(*) AS n"
            " FROM job_events e JOIN jobs j ON j.id = e.job_id"
            " WHERE e.from_state = ? AND e.to_state IN (?, ?) AND e.at >= ?"
            + of_rule
            + " AND EXISTS (SELECT 1 FROM job_events i WHERE i.job_id = e.job_id"
            "   AND i.to_state = ? AND i.from_state <> i.to_state AND i.at >= ?"
            "   AND i.id < e.id)"
            " GROUP BY e.job_id",
            [sub, pending, failed, since, *by_rule, sub, since],
        )
        given_back = {int(r["job_id"]): int(r["n"]) for r in refunds}
        total = 0.0
        for r in intents:
            counted = int(r["n"]) - given_back.get(int(r["job_id"]), 0)
            if counted > 0:
                total += counted * price_of(json.loads(r["request"]))
        return total

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
