"""Names of the files promptdrop puts beside a prompt file: pure functions of paths.

"poster.prompt.toml" makes "poster.png" (or "poster-1.png", "poster-2.png"... for several
images), keeps an earlier "poster.png" as "poster.v1.png", and explains a failure in
"poster.error.txt". Every name fits in NAME_MAX_BYTES. Nothing here touches the disk except
`versioned_path` and `next_version`, and they only ask the `taken` function they are given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from promptdrop import imaging
from promptdrop.spec import PROMPT_SUFFIX

TEMP_PREFIX = ".promptdrop-tmp-"
NOTE_SUFFIX = ".error.txt"
# NAME_MAX of every file system a watched folder is likely to live on (ext4, btrfs, xfs, NTFS
# through SMB, APFS), counted in encoded bytes.
NAME_MAX_BYTES = 255

StrPath = str | os.PathLike[str]
# The formats the API returns an image in: each gives the plain name another extension.
IMAGE_FORMATS = ("png", "jpeg", "webp")


def is_own_temp(name: StrPath) -> bool:
    """True when the file name (or the last part of a path) is one of our temporary files."""
    return os.path.basename(os.fspath(name)).startswith(TEMP_PREFIX)


def source_stem(source: StrPath) -> str:
    """The name a prompt file gives its outputs: "poster.prompt.toml" -> "poster".

    A name without the prompt suffix loses its last extension instead; an empty stem (a file
    called just ".prompt.toml") becomes "prompt" so outputs never turn into hidden files.
    """
    name = os.path.basename(os.fspath(source))
    if name.endswith(PROMPT_SUFFIX):
        return name[: -len(PROMPT_SUFFIX)] or "prompt"
    return os.path.splitext(name)[0] or "prompt"


def fit_name(stem: str, tail: str) -> str:
    """stem + tail, with the stem shortened so the whole name fits in NAME_MAX_BYTES.

    Shortening is deterministic (the same long stem always gives the same name) and keeps
    different long stems apart by appending a short hash of the full stem.
    """
    name = stem + tail
    if len(os.fsencode(name)) <= NAME_MAX_BYTES:
        return name
    digest = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:10]
    budget = NAME_MAX_BYTES - len(os.fsencode(tail + digest))
    if budget < 1:
        raise ValueError(f"file name ending {tail!r} cannot fit in {NAME_MAX_BYTES} bytes")
    cut = stem
    # Cut whole characters, so a multi-byte UTF-8 character is never split in half.
    while len(os.fsencode(cut)) > budget:
        cut = cut[:-1]
    return cut + digest + tail


def output_path(source: StrPath, index: int, count: int, fmt: str) -> Path:
    """Where image `index` (1-based) of `count` made from `source` goes, in the same folder.

    "poster.png" when count is 1, else "poster-<index>.<ext>"; the extension follows the image's
    real format (jpeg -> .jpg). The name always fits in 255 bytes.
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"image index {index} is outside 1..{count}")
    try:
        ext = imaging.EXTENSIONS[fmt]
    except KeyError:
        raise ValueError(f"no file extension for image format {fmt!r}") from None
    src = Path(source)
    stem = source_stem(src)
    tail = ext if count == 1 else f"-{index}{ext}"
    return src.parent / fit_name(stem, tail)


def versioned_name(path: StrPath, n: int) -> Path:
    """Version `n` (1, 2, ...) of `path`: "poster.png" -> "poster.vN.png", in the same folder."""
    if n < 1:
        raise ValueError(f"versions count from 1, not {n}")
    p = Path(path)
    stem, ext = os.path.splitext(p.name)
    return p.with_name(fit_name(stem, f".v{n}{ext}"))


def versioned_path(path: StrPath, taken: Callable[[Path], bool] = os.path.lexists) -> Path:
    """The first free name "poster.vN.png" (N = 1, 2, ...) for keeping an earlier "poster.png".

    Free means `taken` says no; by default, that nothing at all is there, not even a dangling
    symlink. The answer can be taken by someone else before it is used: `move_no_clobber` then
    raises FileExistsError, and asking again gives the next free name.
    """
    n = 1
    while taken(candidate := versioned_name(path, n)):
        n += 1
    return candidate


def plain_names(source: StrPath, index: int, count: int) -> list[Path]:
    """Every name image `index` of `count` made from `source` can take, one per format the API
    may return: "poster.png", "poster.jpg", "poster.webp". Only one of them is current."""
    return [output_path(source, index, count, fmt) for fmt in IMAGE_FORMATS]


def next_version(path: StrPath, taken: Callable[[Path], bool] = os.path.lexists) -> Path:
    """The first "poster.vN.EXT" (for `path` = "poster.EXT") whose number N no version of the
    same name holds in any image format: the versions of one source count up across formats,
    so "poster.v1.png" and "poster.v1.jpg" never both exist."""
    p = Path(path)
    stem = os.path.splitext(p.name)[0]
    n = 1
    while any(
        taken(versioned_name(p.with_name(stem + imaging.EXTENSIONS[fmt]), n))
        for fmt in IMAGE_FORMATS
    ):
        n += 1
    return versioned_name(p, n)


def note_path(source: StrPath) -> Path:
    """Where the error note for `source` goes: "poster.error.txt" for "poster.prompt.toml"."""
    src = Path(source)
    return src.parent / fit_name(source_stem(src), NOTE_SUFFIX)
