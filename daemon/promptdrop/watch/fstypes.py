"""Which file system a folder lives on, read from /proc/self/mountinfo.

inotify only reports changes made through the local kernel: on a network share (NFS, SMB) or a
FUSE file system (sshfs, rclone, Google Drive clients), files written by other machines or by the
FUSE daemon itself never raise an event. Such folders must be polled. This module answers "is this
folder on such a file system?" so the watcher can choose.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MOUNTINFO = Path("/proc/self/mountinfo")

PollMode = Literal["auto", "always", "never"]

# File systems whose changes inotify cannot be trusted to report. The last group is not in the
# original list but shares the problem: the host or another client writes behind the kernel's back.
NETWORK_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse",
        "fuseblk",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "sshfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "vboxsf",
        "virtiofs",
    }
)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where a file system is mounted and of which type."""

    mount_point: str
    fstype: str
    source: str


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes in a mountinfo field (space is written \\040)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse the text of /proc/PID/mountinfo into mounts, in the kernel's order.

    Malformed lines are skipped rather than fatal: a wrong guess only costs a polling choice.
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        # The optional fields between the mount options and "-" vary in number.
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        mounts.append(
            Mount(
                mount_point=unescape(fields[4]),
                fstype=unescape(fields[sep + 1]),
                source=unescape(fields[sep + 2]),
            )
        )
    return mounts


def _contains(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    mp = mount_point.rstrip("/")
    return path == mp or path.startswith(mp + "/")


def find_mount(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds `path` (an absolute, resolved path): the longest matching mount point;
    among mounts on the same point, the last one, which hides the earlier ones."""
    best: Mount | None = None
    for mount in mounts:
        if not _contains(mount.mount_point, path):
            continue
        if best is None or len(mount.mount_point.rstrip("/")) >= len(best.mount_point.rstrip("/")):
            best = mount
    return best


def is_network_fstype(fstype: str) -> bool:
    """True for network and FUSE file systems (any `fuse.*` subtype): inotify misses changes."""
    return fstype in NETWORK_FSTYPES or fstype.startswith("fuse.")


def read_mountinfo(path: Path = MOUNTINFO) -> str | None:
    """The mountinfo text, or None where it cannot be read (not Linux, restricted /proc)."""
    try:
        return os.fsdecode(path.read_bytes())
    except OSError:
        return None


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The file system type of the folder `path` (symlinks resolved), or None if unknown.

    `mountinfo` is the text of a mountinfo file; by default this process's own is read.
    """
    text = read_mountinfo() if mountinfo is None else mountinfo
    if text is None:
        return None
    mount = find_mount(os.path.realpath(path), parse_mountinfo(text))
    return mount.fstype if mount is not None else None


def should_poll(path: Path, poll: PollMode, mountinfo: str | None = None) -> bool:
    """Whether a root must be polled: always for "always", never for "never", and for "auto" when
    the folder is on a network or FUSE file system. An unknown file system is trusted to inotify."""
    if poll == "always":
        return True
    if poll == "never":
        return False
    fstype = filesystem_type(path, mountinfo)
    return fstype is not None and is_network_fstype(fstype)
