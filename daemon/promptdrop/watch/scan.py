"""Walking a watched root: the prompt files it holds now, by the one name filter (names.py).

Used for the watcher's first scan, the delta scan of polled roots and the reconcile pass
(`scan_tree`, which stats what it finds), and for `watch --once` (`scan`, which only lists).
These block (a stat on a network share can hang): the watcher runs them in worker threads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from promptdrop.spec import RuleConfig
from promptdrop.watch.names import classify, is_hidden_folder
from promptdrop.watch.settle import MISSING, Sig


@dataclass
class Scan:
    """One walk of a root: the candidate files with their signatures, how many entries the top
    folder holds (0 on an unmounted share's mount point), whether it is a mount point, and how
    many folders were seen (to compare with the inotify watch limit)."""

    files: dict[str, Sig]
    top_entries: int
    is_mount: bool
    folders: int


def scan(rule: RuleConfig) -> Iterator[Path]:
    """Every prompt file and conflict copy of one under a rule's root, as the watcher would see
    it, in a stable order (folder by folder, names sorted)."""
    root = Path(rule.path)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_hidden_folder(d)) if rule.recursive else []
        for name in sorted(files):
            if classify(name) is not None:
                yield Path(folder) / name


def scan_tree(top: str, recursive: bool) -> Scan:
    """All candidate files under `top`; raises OSError if `top` itself cannot be listed."""
    files: dict[str, Sig] = {}
    top_entries = 0
    folders = 1
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            if folder == top:
                raise
            continue
        with it:
            for entry in it:
                if folder == top:
                    top_entries += 1
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders += 1
                        if recursive and not is_hidden_folder(entry.name):
                            stack.append(entry.path)
                        continue
                    if classify(entry.name) is None:
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    files[entry.path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return Scan(files, top_entries, os.path.ismount(top), folders)


def stat_many(paths: Iterable[str]) -> list[Sig]:
    """The signature of each path, MISSING for one that is gone or not a regular file."""
    out: list[Sig] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(MISSING)
            continue
        out.append((st.st_size, st.st_mtime_ns, st.st_ino) if stat.S_ISREG(st.st_mode) else MISSING)
    return out


def vanished(reported: Iterable[str], found: Scan) -> list[str]:
    """The reported paths a scan no longer finds."""
    return [p for p in reported if p not in found.files]
