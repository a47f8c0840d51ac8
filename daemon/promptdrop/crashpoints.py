"""Named crash points, so the crash suite can kill the daemon at an exact step of a job.

Off unless PROMPTDROP_CRASH_AT names a point (read once, at import): then the process sends
itself SIGKILL the Nth time it reaches that point (N = PROMPTDROP_CRASH_AFTER, default 1).
SIGKILL, not an exception: nothing gets to clean up, exactly as in a power cut.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after_intent",  # the submit intent is committed; the POST has not left
    "after_answer",  # the API answered with a task id; not yet recorded
    "after_running",  # the task id is recorded
    "after_download",  # the image bytes are in memory; nothing written
    "after_temp",  # the temporary file is written and synced; no final name yet
    "after_rename",  # the image has its final name; the ledger does not know yet
    "before_done",  # the output is recorded; the job is not yet marked done
)

_TARGET = os.environ.get("PROMPTDROP_CRASH_AT") or None
_AFTER = int(os.environ.get("PROMPTDROP_CRASH_AFTER") or "1")
_seen = 0


def reached(point: str) -> None:
    """Die here if the environment asked for this point (a no-op otherwise)."""
    global _seen
    if point != _TARGET:
        return
    _seen += 1
    if _seen >= _AFTER:
        os.kill(os.getpid(), signal.SIGKILL)
