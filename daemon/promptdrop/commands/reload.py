"""`promptdrop reload`: ask the running daemon to read its rules file again, and (with --wait)
return only once it has applied them, or refused them and kept the old ones. The units run it
as ExecReload=."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from promptdrop.commands.existing import state_dir_or_default
from promptdrop.service.reloads import ReloadError, request_reload


def run_reload(
    state_dir: Path | None, *, wait: bool, timeout: float, out: TextIO, err: TextIO
) -> int:
    """0 when the signal was sent (and, with `wait`, the new rules are in use); 1 with one
    line on `err` when there is no daemon, it did not answer, or it refused the new rules."""
    folder = state_dir_or_default(state_dir)
    try:
        outcome = request_reload(folder, wait=wait, timeout=timeout)
    except ReloadError as exc:
        print(f"promptdrop reload: {exc}", file=err)
        return 1
    if outcome is None:
        print("promptdrop reload: asked the daemon to read its rules again", file=out)
    else:
        print(f"promptdrop reload: the new rules are in use: {outcome.message}", file=out)
    return 0
