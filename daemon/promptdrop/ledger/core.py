"""What the ledger's behaviour stands on: the four primitives each backend supplies.

A backend gives `_rows` and `_run` for one statement, `_atomic` for a transaction, and `_NOW`,
the SQL for the database's clock in epoch seconds (leases are timed by the database, so hosts
whose clocks disagree still agree on whether a lease has expired). Every part of `LedgerBase`
(jobs, sources, outputs, uploads, counts, leases) is written on these alone, in SQL both SQLite
and PostgreSQL accept (with `?` placeholders).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from promptdrop.ledger.paths import PathCodec
from promptdrop.ledger.records import Job


class LedgerCore:
    """The backend primitives, and the decoding of a job row every part needs."""

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

    def _job(self, row: Mapping[str, Any]) -> Job:
        job = Job.from_row(row)
        return replace(job, request=self._paths.decode_request(job.request)) if self._paths else job
