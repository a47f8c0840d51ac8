"""The doctor's checks of this machine, each one row of its table: a watched folder (there,
writable, its file system, polled or not), the state folder (local, writable), the inotify
limits. `inotify_check` is pure; the others look at the file system.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from promptdrop.spec import RuleConfig
from promptdrop.watch.fstypes import filesystem_type, is_network_fstype, should_poll

DROP_IN = "/etc/systemd/system/promptdrop.service.d/roots.conf"
INOTIFY = Path("/proc/sys/fs/inotify")
WATCHES_FIX = (
    "sudo sysctl fs.inotify.max_user_watches=524288, and put "
    "'fs.inotify.max_user_watches=524288' in /etc/sysctl.d/90-promptdrop.conf "
    "to keep it after a reboot"
)
INSTANCES_FIX = (
    "sudo sysctl fs.inotify.max_user_instances=1024, and put "
    "'fs.inotify.max_user_instances=1024' in /etc/sysctl.d/90-promptdrop.conf "
    "to keep it after a reboot"
)


@dataclass(frozen=True)
class Check:
    """One line of the table: what was checked, what was found, and what to do (None: fine)."""

    name: str
    result: str
    fix: str | None = None

    @property
    def problem(self) -> bool:
        return self.fix is not None


def inotify_check(
    folders: int, roots: int, max_watches: int | None, max_instances: int | None
) -> Check:
    """Whether the kernel's inotify limits leave room for `folders` watched folders spread over
    `roots` roots watched with inotify (one watch per folder, one instance per root).

    Other programs of the same user need watches too, so more than 90% of the limit is a problem.
    """
    name = "inotify limits"
    if roots == 0:
        return Check(name, "not needed: every folder is polled")
    found = []
    fixes = []
    if max_watches is None:
        found.append("max_user_watches unknown")
    elif folders > max_watches * 0.9:
        found.append(
            f"{folders} folders to watch but the system allows {max_watches} "
            "(fs.inotify.max_user_watches): changes in some folders would be missed "
            "until the next full scan"
        )
        fixes.append(WATCHES_FIX)
    else:
        found.append(f"{folders} folders of {max_watches} allowed")
    if max_instances is None:
        found.append("max_user_instances unknown")
    elif roots > max_instances:
        found.append(
            f"{roots} watched folders need {roots} inotify instances but the system "
            f"allows {max_instances} (fs.inotify.max_user_instances)"
        )
        fixes.append(INSTANCES_FIX)
    else:
        found.append(f"{roots} of {max_instances} instances")
    return Check(name, "; ".join(found), "; ".join(fixes) if fixes else None)


def read_int(path: Path) -> int | None:
    """The integer in a file such as /proc/sys/fs/inotify/max_user_watches; None if unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _count_folders(root: Path) -> int:
    # inotify watches every folder below a recursive root, hidden ones included.
    return sum(1 for _ in os.walk(root))


def _try_write(folder: Path) -> str | None:
    """None if a file can be created in `folder` (and is removed again), else why not.

    A real write, not os.access: that says yes to root on a read-only mount."""
    probe = folder / f".promptdrop-doctor-{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def folder_check(rule: RuleConfig) -> tuple[Check, int]:
    """One watched folder: there, a folder, writable, its file system and how it is watched.
    Also returns how many folders inotify would watch for it (0 when polled or unusable)."""
    path = Path(rule.path)
    name = f"folder {rule.name}"
    if not path.exists():
        return Check(
            name,
            f"{path} does not exist",
            f"create it (mkdir -p '{path}'), or correct its path in the rules file",
        ), 0
    if not path.is_dir():
        return Check(name, f"{path} is not a folder", "point the rule at a folder, not a file"), 0
    fstype = filesystem_type(path) or "unknown file system"
    problem = _try_write(path)
    if problem is not None:
        return Check(
            name,
            f"{path} cannot be written to ({problem}); images and notes could not be saved",
            "give the user that runs promptdrop write permission on it, and check it is not "
            "mounted read-only; under systemd, list it in ReadWritePaths= in the drop-in "
            f"{DROP_IN} (see systemd/promptdrop.service.d/roots.conf.example)",
        ), 0
    network = is_network_fstype(fstype)
    if rule.poll == "never" and network:
        return Check(
            name,
            f'{path} is on {fstype}, a network or FUSE file system, but poll = "never": '
            "files saved by other computers would not be noticed",
            f'set poll = "auto" (or "always") for rule {rule.name!r} in the rules file',
        ), 0
    if should_poll(path, rule.poll):
        how = f"checked every {rule.poll_interval:g} s (polled)"
        folders = 0
    else:
        how = "changes seen at once (inotify)"
        folders = _count_folders(path) if rule.recursive else 1
    return Check(name, f"ok: {path}, writable, {fstype}, {how}"), folders


def state_check(state_dir: Path) -> Check:
    """The ledger's folder: on local disk and writable (or creatable)."""
    name = "state folder"
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fstype = filesystem_type(existing) or "unknown file system"
    if is_network_fstype(fstype):
        return Check(
            name,
            f"{state_dir} is on {fstype}, a network or FUSE file system; the ledger must "
            "be on local disk (SQLite locking is not safe on shares)",
            "choose a folder on a local disk with --state-dir or PROMPTDROP_STATE_DIR "
            "(under systemd, StateDirectory= does this)",
        )
    if not existing.is_dir():
        return Check(
            name,
            f"{existing} is not a folder",
            "choose another folder with --state-dir or PROMPTDROP_STATE_DIR",
        )
    problem = _try_write(existing)
    if problem is not None:
        return Check(
            name,
            f"{existing} cannot be written to ({problem})",
            "give the user that runs promptdrop write permission on it, or choose "
            "another folder with --state-dir or PROMPTDROP_STATE_DIR",
        )
    when = "" if existing == state_dir else " (created on the first start)"
    return Check(name, f"ok: {state_dir}{when}, {fstype}, local disk")
