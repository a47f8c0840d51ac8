"""The ledger: promptdrop's memory of every job, prompt file, written file and upload.

SQLite in the state directory by default (`Ledger`); PostgreSQL, shared by several hosts, when
a `postgresql://` URL is given (`open_ledger`). Both behave the same (`LedgerBase`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from promptdrop.ledger.base import LedgerBase
from promptdrop.ledger.errors import BudgetSpent, LeaseLost, LedgerUnavailable
from promptdrop.ledger.paths import PathCodec, default_host_id
from promptdrop.ledger.pauses import ALL_RULES
from promptdrop.ledger.records import Budget
from promptdrop.ledger.states import ALLOWED, FINAL, IllegalTransition, JobState
from promptdrop.ledger.store import (
    LEDGER_NAME,
    Job,
    Ledger,
    Output,
    Recovery,
    Source,
    StaleTransition,
    default_state_dir,
    disk_full,
)

__all__ = [
    "ALLOWED",
    "ALL_RULES",
    "FINAL",
    "LEDGER_NAME",
    "Budget",
    "BudgetSpent",
    "IllegalTransition",
    "Job",
    "JobState",
    "LeaseLost",
    "Ledger",
    "LedgerBase",
    "LedgerUnavailable",
    "LedgerUrlError",
    "Output",
    "PathCodec",
    "Recovery",
    "Source",
    "StaleTransition",
    "default_host_id",
    "default_state_dir",
    "disk_full",
    "open_ledger",
]


class LedgerUrlError(ValueError):
    """The ledger setting is not a URL promptdrop can use."""


def open_ledger(
    url: str | None,
    state_dir: Path | None = None,
    *,
    roots: Mapping[str, Path | str] | None = None,
    reconnect_timeout: float = 300.0,
) -> LedgerBase:
    """Open the ledger the settings ask for, migrated and ready.

    No URL (None or empty): the SQLite ledger in the state directory, exactly as
    `Ledger.open(state_dir)`. A `postgresql://` (or `postgres://`) URL: the shared ledger in
    that database, with paths stored relative to `roots` (rule name → this host's folder).
    The daemon gives its roots, and they are recorded for this host (named after the state
    directory, see `default_host_id`); `status` and `retry` give none and get the roots the
    daemon of the same state directory recorded, so they show and take this host's paths.
    Raises LedgerUrlError for any other URL, LedgerUnavailable when the database cannot be
    reached or migrated.
    """
    if not url:
        return Ledger.open(state_dir)
    from promptdrop.ledger.postgres import PostgresLedger, is_postgres_url

    if not is_postgres_url(url):
        scheme = url.split(":", 1)[0] if ":" in url else url[:20]
        raise LedgerUrlError(
            f'the ledger setting must be a PostgreSQL URL such as "postgresql://user@host/db" '
            f'(it starts with "{scheme}"); leave it out to use the local SQLite ledger'
        )
    led = PostgresLedger(url, roots=roots, reconnect_timeout=reconnect_timeout)
    if state_dir is not None:
        host = default_host_id(state_dir)
        if roots is not None:
            led.register_roots(host, roots)
        else:
            led.set_roots(led.roots_of(host))
    return led
