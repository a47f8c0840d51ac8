"""What every ledger promises, whatever it is stored in: the interface, composed of its parts.

`LedgerBase` holds the whole behaviour, written once in SQL both SQLite and PostgreSQL accept,
on the four primitives of `ledger.core` that each backend supplies. Its parts, one concern
each: `jobs` (creating and moving jobs), `sources` (prompt files), `outputs` (files written),
`uploads` (reference images sent), `counts` (budgets, spend, deliveries), `leases` (claims,
take-over and crash recovery), `pauses` (`promptdrop pause`). The records are in `records`, the
errors in `errors`, the path codec in `paths`, the legal moves in `states`.

Leases: a host `claim`s a job before it sends anything for it, `renew`s all its claims while
it works, and loses them when it stops renewing for `ttl` seconds; another host may then claim
the job and carry on from the state the ledger records. A transition given `holder=` commits
only while that host still holds the job's claim, so a host that was presumed dead can never
move a job that another host took over.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from promptdrop.ledger.errors import BudgetSpent, LeaseLost, LedgerUnavailable, StaleTransition
from promptdrop.ledger.leases import LeasesMixin
from promptdrop.ledger.outputs import OutputsMixin
from promptdrop.ledger.paths import PathCodec, default_host_id, default_state_dir
from promptdrop.ledger.pauses import PausesMixin
from promptdrop.ledger.records import Budget, Job, Output, Recovery, Source
from promptdrop.ledger.uploads import UploadsMixin

__all__ = [
    "Budget",
    "BudgetSpent",
    "Job",
    "LeaseLost",
    "LedgerBase",
    "LedgerUnavailable",
    "Output",
    "PathCodec",
    "Recovery",
    "Source",
    "StaleTransition",
    "default_host_id",
    "default_state_dir",
]


class LedgerBase(LeasesMixin, OutputsMixin, UploadsMixin, PausesMixin):
    """The ledger interface and its behaviour; see the module docstring for the backends' part.

    Not thread-safe: use one ledger object from one thread.
    """

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
