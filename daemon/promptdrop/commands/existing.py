"""The ledger a command opens beside the daemon (`status`, `retry`): never a new one."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TextIO

from promptdrop.ledger import (
    LEDGER_NAME,
    Ledger,
    LedgerBase,
    LedgerUnavailable,
    LedgerUrlError,
    default_state_dir,
    open_ledger,
)
from promptdrop.service.config import ledger_problem


def state_dir_or_default(state_dir: Path | None) -> Path:
    """The --state-dir given, else the default (PROMPTDROP_STATE_DIR, STATE_DIRECTORY, XDG)."""
    return state_dir if state_dir is not None else default_state_dir()


def open_existing(
    ledger_url: str | None, state_dir: Path | None, command: str, err: TextIO
) -> LedgerBase | None:
    """The shared ledger (`ledger_url`), else the state directory's SQLite file if the daemon
    made one; None after telling `err` why not."""
    folder = state_dir_or_default(state_dir)
    if not ledger_url:
        path = folder / LEDGER_NAME
        if not path.exists():
            print(
                f"promptdrop {command}: no ledger yet at {path} (the daemon has not run with "
                "this state folder; see --state-dir)",
                file=err,
            )
            return None
        try:
            return Ledger(path)
        except sqlite3.DatabaseError as exc:
            print(f"promptdrop {command}: {ledger_problem(path, exc)}", file=err)
            return None
    try:
        return open_ledger(ledger_url, folder)
    except (LedgerUrlError, LedgerUnavailable) as exc:
        print(f"promptdrop {command}: {exc}", file=err)
        return None
