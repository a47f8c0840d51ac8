"""Which file names are prompt files: the one name filter.

The watcher, the `--once` scan, the reconcile pass and `promptdrop check` all ask here, so they
never disagree about a name. A name is one of three things:

- a prompt file ("poster.prompt.toml"): taken up;
- a conflict copy of a prompt file, made by a sync app when two edits collided (Dropbox
  "poster (Ann's conflicted copy 2024-05-01).prompt.toml", Syncthing
  "poster.prompt.sync-conflict-20240501-101010-ABCDEFG.toml", "-safeBackup-"): never processed,
  the folder gets a note saying why;
- anything else (None): never looked at. That covers images and notes promptdrop writes, its own
  temporary files (hidden, ".promptdrop-tmp-…"), temporary files of sync apps, browsers and
  editors, OS litter, and a conflict copy of a file that is not a prompt file
  ("photo (conflicted copy).jpg"): none of them is ours to report on.

Google Drive and OneDrive mark a collision only by a number or a computer name ("poster (1).prompt
.toml", "poster.prompt-LAPTOP.toml"): the first is an ordinary prompt file (same content, same
request: nothing is paid twice), the second is not a prompt name at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from promptdrop.spec import PROMPT_SUFFIX

NameKind = Literal["prompt", "conflict"]

_IGNORED_PREFIXES = (".", "~$", "~syncthing~")
_IGNORED_SUFFIXES = (".partial", ".crdownload", ".part", ".filepart", ".swp", ".tmp", "~")
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_CONFLICT = re.compile(r"conflicted copy|\.sync-conflict-|-safebackup-", re.IGNORECASE)


def is_ignored(name: str) -> bool:
    """True for names that are never prompt files: hidden names (all temp files of promptdrop,
    rsync, Syncthing, LibreOffice, GNOME, NFS and FUSE start with "."), partial downloads and
    uploads, editor swap and backup files, Office lock files, and OS litter."""
    if not name:
        return True
    lower = name.lower()
    return (
        name.startswith(_IGNORED_PREFIXES)
        or lower.endswith(_IGNORED_SUFFIXES)
        or (lower in _IGNORED_NAMES)
    )


def is_conflict_copy(name: str) -> bool:
    """True for the copies sync clients make when two edits collide (Dropbox "conflicted copy",
    Syncthing ".sync-conflict-", "-safeBackup-"), whatever the file is."""
    return _CONFLICT.search(name) is not None


def classify(name: str) -> NameKind | None:
    """What a file name is to promptdrop: "prompt", "conflict" (a sync app's conflict copy of a
    prompt file), or None for every other name, which is never looked at."""
    if is_ignored(name):
        return None
    conflict = is_conflict_copy(name)
    if name.endswith(PROMPT_SUFFIX):
        return "conflict" if conflict else "prompt"
    # Syncthing puts its marker before the last extension: a.prompt.sync-conflict-….toml
    if conflict and name.endswith(".toml") and ".prompt" in name:
        return "conflict"
    return None


def is_candidate_name(name: str) -> bool:
    """True if the name is a prompt file or a conflict copy of one."""
    return classify(name) is not None


def is_hidden_folder(name: str) -> bool:
    """Folders never searched below a watched root: hidden ones (sync apps keep their caches and
    half-done downloads there: ".dropbox.cache", ".tmp.drivedownload", ".~tmp~")."""
    return name.startswith(".")


def is_candidate(path: Path | str, root: Path | str | None = None) -> bool:
    """True if `path` may be a prompt file the watcher reports: its name is a prompt file or a
    conflict copy of one. With `root`, the path must also lie under it and not inside a hidden
    folder below it."""
    p = Path(path)
    if not is_candidate_name(p.name):
        return False
    if root is None:
        return True
    try:
        rel = p.relative_to(root)
    except ValueError:
        return False
    return not any(is_hidden_folder(part) for part in rel.parts[:-1])


def is_candidate_under(base: str, path: str, *, recursive: bool) -> bool:
    """`is_candidate(path, base)` on plain strings, for a root watched with or without its
    subfolders. Called for every file of every scan, where building Path objects took a
    noticeable share of a 10,000-file start."""
    prefix = base.rstrip(os.sep) + os.sep
    if not path.startswith(prefix):
        return False
    parts = path[len(prefix) :].split(os.sep)
    if not recursive and len(parts) != 1:
        return False
    if any(is_hidden_folder(part) for part in parts[:-1]):
        return False
    return is_candidate_name(parts[-1])
