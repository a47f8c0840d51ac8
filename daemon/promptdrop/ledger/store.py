"""The SQLite ledger, the default: one file in the state directory, no server.

Opened in WAL mode with synchronous=FULL on every connection, migrated on open. Every job
transition is a guarded `UPDATE … WHERE id = ? AND state = ?` inside `BEGIN IMMEDIATE` that must
change exactly one row, so a second actor (a restarted daemon, a `promptdrop retry` run beside
it) can never move a job twice. The behaviour itself lives in `ledger.base` and its parts,
shared with the PostgreSQL ledger; paths are stored as this host's absolute paths.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from promptdrop.ledger.base import LedgerBase
from promptdrop.ledger.errors import StaleTransition
from promptdrop.ledger.migrations import migrate
from promptdrop.ledger.paths import PathCodec, default_state_dir
from promptdrop.ledger.records import Job, Output, Recovery, Source

LEDGER_NAME = "ledger.sqlite3"

__all__ = [
    "LEDGER_NAME",
    "Job",
    "Ledger",
    "Output",
    "Recovery",
    "Source",
    "StaleTransition",
    "default_state_dir",
]

# Leases are timed by the database's clock, as in PostgreSQL (here: this machine's).
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def disk_full(exc: BaseException) -> bool:
    """True when a ledger write failed because the disk holding the ledger is full.

    SQLite has already rolled the failed transaction back, so the same write can simply be
    tried again once there is room."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )


class Ledger(LedgerBase):
    """The job ledger in one SQLite file. Not thread-safe: use it from one thread."""

    _NOW = _SQLITE_NOW
    _LOCK = ""  # BEGIN IMMEDIATE already holds the whole file's write lock

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._paths = PathCodec()
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

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, list(params)))

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.db.execute(sql, list(params)).rowcount)

    def _atomic(
        self, work: Callable[[], None], committed: Callable[[], bool] | None = None
    ) -> None:
        # IMMEDIATE takes the write lock up front, so a concurrent `promptdrop retry` waits on
        # busy_timeout instead of failing half-way through a read-then-write. A local file
        # cannot lose its connection mid-commit, so `committed` is never needed here.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            work()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file: 'ok' when sound."""
        return str(next(self.db.query("PRAGMA integrity_check"))["integrity_check"])
