"""Provenance as a second ledger: an image promptdrop already made for a request is adopted,
not paid for again.

On a reinstall, a new laptop, a lost state folder, or a second daemon started later on the same
synced drive, the ledger does not know the images in the folder, but each carries its
provenance (`promptdrop:request`, `promptdrop:index`). Before a new job is sent, the source's
output names for that index (every format, then the kept versions `NAME.vN.EXT`) are read; a
whole image made for exactly this request and index is recorded as the job's image.

`choose` is the pure decision; `look` is the thin reading around it (call it in a thread).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from promptdrop import imaging
from promptdrop.outputs import read_provenance
from promptdrop.outputs.naming import plain_names, versioned_name

# An image larger than this is not read to look for provenance (the API's are a few MiB).
MAX_CANDIDATE_BYTES = 64 * 1024 * 1024
# Kept versions looked at per plain name: v1, v2... until one is missing, at most this many.
MAX_VERSIONS = 200


@dataclass(frozen=True)
class Candidate:
    """One file at a name this job's image could have, as read."""

    path: Path
    plain: bool  # at a plain name (poster.png), not a kept version (poster.v2.png)
    request: str | None  # its provenance's promptdrop:request
    index: str | None  # its provenance's promptdrop:index
    whole: bool  # a regular file (not a link) whose bytes are a complete image
    sha256: str = ""
    format: str = ""
    task_id: str = ""


def choose(candidates: list[Candidate], request_hash: str, index: int) -> Candidate | None:
    """The file to adopt as image `index` of `request_hash`: made for exactly it, whole, at a
    plain name if one is, else the newest kept version; None when no file qualifies."""
    fits = [
        c
        for c in candidates
        if c.whole and c.request == request_hash and c.index == str(index) and c.sha256
    ]
    plain = [c for c in fits if c.plain]
    if plain:
        return plain[0]
    return fits[-1] if fits else None


def look(source: Path, index: int, count: int) -> list[Candidate]:
    """Read every file at a name image `index` of `source` could have: its plain names in each
    format, then each one's versions v1, v2... in order."""
    found = []
    for plain in plain_names(source, index, count):
        if os.path.lexists(plain):
            found.append(_read(plain, plain=True))
        for n in range(1, MAX_VERSIONS + 1):
            kept = versioned_name(plain, n)
            if not os.path.lexists(kept):
                break
            found.append(_read(kept, plain=False))
    return found


def _read(path: Path, *, plain: bool) -> Candidate:
    unusable = Candidate(path, plain, None, None, whole=False)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CANDIDATE_BYTES:
            return unusable
        data = path.read_bytes()
    except OSError:
        return unusable
    info = read_provenance(data)
    request, idx = info.get("promptdrop:request"), info.get("promptdrop:index")
    if request is None:
        return unusable
    try:
        fmt = imaging.inspect(data).format
    except imaging.ImageError:
        return Candidate(path, plain, request, idx, whole=False)
    return Candidate(
        path,
        plain,
        request,
        idx,
        whole=True,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        task_id=info.get("promptdrop:task_id", ""),
    )
