"""Is a watched root still there: a folder that vanished, an unmounted share, a mass deletion
that is really an outage; and what to tell the person who runs the daemon about kernel limits.

The judgements (`suspicious`, `judge_return`) are pure: the watcher passes the scan, the counts
and the time in. The probes (`root_problem`, `identity`, `watch_limit`) are small blocking
look-ups the watcher runs in worker threads.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from promptdrop.watch.scan import Scan

# A mass deletion seen while the folder is readable and not empty is believed after this long.
MASS_DELETE_GRACE = 60.0
MASS_DELETE_MIN = 10

RAISE_WATCHES = (
    "sudo sysctl fs.inotify.max_user_watches=524288 (and put that setting in "
    "/etc/sysctl.d/90-promptdrop.conf to keep it after a reboot)"
)
RAISE_INSTANCES = (
    "sudo sysctl fs.inotify.max_user_instances=1024 (and put that setting in "
    "/etc/sysctl.d/90-promptdrop.conf to keep it after a reboot)"
)
OVERFLOW_WARNING = (
    "Too many file changes arrived at once and some were missed "
    "(the inotify event queue overflowed); the watched folders are being rescanned. "
    "If this happens often, raise the limit: "
    "sudo sysctl fs.inotify.max_queued_events=65536"
)


def limit_advice(exc: OSError) -> str | None:
    """For an inotify resource error, which kernel limit to raise and how; else None."""
    if exc.errno == errno.ENOSPC:
        return (
            "the system limit on watched folders is reached (fs.inotify.max_user_watches). "
            f"Raise it with: {RAISE_WATCHES}"
        )
    if exc.errno == errno.EMFILE:
        return (
            "the system limit on inotify instances is reached (fs.inotify.max_user_instances). "
            f"Raise it with: {RAISE_INSTANCES}"
        )
    return None


def unavailable_warning(base: str, reason: str) -> str:
    """What to tell the operator when a watched folder cannot be read."""
    return (
        f"The watched folder {base} cannot be read ({reason}). Is the drive or share "
        "connected? promptdrop keeps checking and picks up again when it is back."
    )


def too_many_folders_warning(
    base: str, folders: int, limit: int | None, every: float
) -> str | None:
    """A warning when a root has more folders than inotify may watch (watchdog skips the rest
    without a word), else None."""
    if limit is None or folders < limit:
        return None
    return (
        f"{base} has {folders} folders, more than the system allows to "
        f"watch (fs.inotify.max_user_watches = {limit}), so changes in some of them "
        f"are only found by the scan every {every:g} s. "
        f"Raise the limit with: {RAISE_WATCHES}"
    )


def suspicious(vanished: int, reported: int, found: Scan) -> bool:
    """True when files vanishing in one scan look like an outage rather than deletions: any of
    them on a mount point that turned up empty, or at least MASS_DELETE_MIN and more than half
    of the `reported` files at once."""
    if vanished and found.top_entries == 0 and found.is_mount:
        return True  # an unmounted share shows its empty mount point
    return vanished >= MASS_DELETE_MIN and 2 * vanished > reported


Return = Literal["back", "not_back", "waiting"]


@dataclass(frozen=True)
class ReturnVerdict:
    """Whether an unavailable root is back; `since` is when its suspicious look began."""

    verdict: Return
    since: float | None


def judge_return(
    vanished: int, reported: int, found: Scan, now: float, since: float | None, *, grace: float
) -> ReturnVerdict:
    """Judge a scan of a root that is unavailable. An empty mount point is not back. A root
    that still looks like a mass deletion is believed back (and the deletion real) only once
    it has looked so for `grace` seconds since `since`. Anything else is back."""
    if found.top_entries == 0 and found.is_mount:
        return ReturnVerdict("not_back", None)
    if suspicious(vanished, reported, found):
        since = now if since is None else since
        if now - since < grace:
            return ReturnVerdict("waiting", since)
    return ReturnVerdict("back", None)


def root_problem(path: str) -> str | None:
    """Why the root cannot be watched right now, or None if it can."""
    try:
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            return "it is not a folder"
        with os.scandir(path) as it:
            next(it, None)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the root: a change means it was replaced or remounted."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def watch_limit() -> int | None:
    """The kernel's limit on inotify watches, if it can be read."""
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None
