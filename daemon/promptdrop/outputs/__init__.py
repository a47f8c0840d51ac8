"""Files promptdrop puts into users' folders: names, atomic no-clobber writes, provenance, notes.

This module never decides whether a file should be written (the engine does, with the ledger);
it guarantees how: every file appears under its final name in one step, complete, and never
replaces a file that is already there. Work in progress lives in hidden temporary files named
``.promptdrop-tmp-*`` in the same folder, which sync clients and our own watcher ignore and which
`cleanup_temps` removes after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import secrets
import stat
import struct
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from promptdrop import imaging
from promptdrop.crashpoints import reached
from promptdrop.spec import PROMPT_SUFFIX

TEMP_PREFIX = ".promptdrop-tmp-"
NOTE_SUFFIX = ".error.txt"
# The first line of every note we write starts with this; it is how we recognise our own notes
# (and refuse to touch a user's file that happens to have the same name). Never change it.
NOTE_MARKER = "promptdrop could not make an image from "
# NAME_MAX of every file system a watched folder is likely to live on (ext4, btrfs, xfs, NTFS
# through SMB, APFS), counted in encoded bytes.
NAME_MAX_BYTES = 255

StrPath = str | os.PathLike[str]

# os.link fails with these where the file system has no hard links (vfat, exFAT, many FUSE and
# SMB mounts) or refuses them for policy reasons (fs.protected_hardlinks): fall back to a rename.
_NO_HARDLINK_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
)
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_NOTE_READ_LIMIT = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_LIMIT = 1024 * 1024


# --- names -----------------------------------------------------------------------------------


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


def _fit_name(stem: str, tail: str) -> str:
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
    return src.parent / _fit_name(stem, tail)


def versioned_path(path: StrPath) -> Path:
    """The first free name "poster.vN.png" (N = 1, 2, ...) for keeping an earlier "poster.png".

    Free means nothing at all is there, not even a dangling symlink. The answer can be taken by
    someone else before it is used: `move_no_clobber` then raises FileExistsError, and asking
    again gives the next free name.
    """
    p = Path(path)
    stem, ext = os.path.splitext(p.name)
    n = 1
    while True:
        candidate = p.with_name(_fit_name(stem, f".v{n}{ext}"))
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def note_path(source: StrPath) -> Path:
    """Where the error note for `source` goes: "poster.error.txt" for "poster.prompt.toml"."""
    src = Path(source)
    return src.parent / _fit_name(source_stem(src), NOTE_SUFFIX)


# --- atomic, no-clobber writes ---------------------------------------------------------------


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func: Callable[..., int] = libc.renameat2
    except (OSError, AttributeError):
        return None
    return func


# renameat2(RENAME_NOREPLACE) (Linux >= 3.15, glibc >= 2.28) or None when unavailable.
_RENAMEAT2: Callable[..., int] | None = _load_renameat2()


def _rename_no_clobber(src: str, dst: str) -> None:
    """Rename src to dst, failing with FileExistsError if dst exists, for hard-link-less mounts.

    renameat2(RENAME_NOREPLACE) does this atomically where the kernel and file system support
    it. Where they do not (many FUSE and SMB mounts answer EINVAL), an existence check followed
    by a plain rename is the best available: POSIX offers no other no-clobber rename, and the
    window between the check and the rename is microseconds on a name that nobody but
    promptdrop is expected to create.
    """
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), src, None, dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), src, None, dst)
    os.rename(src, dst)


def _place(src: str, dst: str) -> None:
    """Give the file at src the name dst without replacing anything at dst; src goes away.

    A hard link is atomic and never replaces an existing name on POSIX; the extra name is then
    dropped. If dropping src fails, dst is dropped again so the caller sees one name, not two.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARDLINK_ERRNOS:
            raise
        _rename_no_clobber(src, dst)
        return
    try:
        os.unlink(src)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dst)
        raise


def _fsync_dir(folder: StrPath) -> None:
    """Make a rename in `folder` durable, as far as the file system allows.

    Best effort on purpose: by now the file is complete under its final name, so reporting a
    failure here as a failed write would be untrue; some file systems (SMB, some FUSE) cannot
    sync a folder at all.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp(folder: Path) -> tuple[int, Path]:
    """Create a fresh temporary file in `folder`; return its open descriptor and path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            # 0o666 minus the umask, like any other new file: the folder's users must be able
            # to read the image (mkstemp's 0o600 would hide it from them on a shared drive).
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _write_temp(folder: Path, data: bytes) -> Path:
    """Write `data` to a new, fsynced temporary file in `folder`; remove it on any failure."""
    fd, tmp = _new_temp(folder)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: StrPath, data: bytes) -> None:
    """Create `path` holding exactly `data`, atomically, never replacing anything.

    Raises FileExistsError (leaving the existing file untouched) if anything is at `path`.
    On any failure (full disk, I/O error, permissions) the exception propagates and nothing is
    left behind: the final name either holds all of `data` or does not exist.
    """
    final = Path(path)
    if os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(final))
    tmp = _write_temp(final.parent, data)
    reached("after_temp")
    try:
        _place(os.fspath(tmp), os.fspath(final))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def copy_atomic(src: StrPath, dst: StrPath) -> None:
    """Copy the file `src` to a new file `dst` with the guarantees of `write_atomic`."""
    write_atomic(dst, Path(src).read_bytes())


def move_no_clobber(src: StrPath, dst: StrPath) -> None:
    """Rename `src` to `dst` (normally in the same folder) without replacing anything at `dst`.

    Raises FileExistsError if `dst` exists, FileNotFoundError if `src` does not; either way
    both names are as they were.
    """
    s, d = Path(src), Path(dst)
    _place(os.fspath(s), os.fspath(d))
    _fsync_dir(d.parent)
    if s.parent != d.parent:
        _fsync_dir(s.parent)


def _replace_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step. Only for files we have verified to be ours."""
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def cleanup_temps(folder: StrPath, *, older_than: float = 0.0) -> int:
    """Remove our leftover temporary files from `folder` (not its subfolders); return how many.

    Only regular files whose name starts with TEMP_PREFIX are touched. `older_than` (seconds)
    spares temporaries that may still be in use by another promptdrop writing into the same
    shared folder right now. A missing folder counts as clean.
    """
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not is_own_temp(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (older_than > 0 and st.st_mtime > cutoff):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed += 1
    return removed


# --- provenance ------------------------------------------------------------------------------


def with_provenance(data: bytes, fmt: str, info: Mapping[str, str]) -> bytes:
    """Return the image with `info` embedded as metadata; the pixel data is not re-encoded.

    PNG: one uncompressed iTXt chunk per key, right after IHDR (earlier text with the same keys
    is dropped). JPEG: one COM segment holding a UTF-8 JSON object, after SOI and the APPn
    segments that must come first (an earlier promptdrop comment is dropped). WebP: returned
    unchanged, provenance is not supported for it yet. Raises imaging.ImageError when the
    bytes are not a well-formed image of format `fmt`, ValueError for an unusable key.
    """
    if imaging.sniff(data) != fmt:
        raise imaging.ImageError(f"the data is not a {fmt.upper()} image")
    if fmt == "png":
        return _png_with_text(data, info)
    if fmt == "jpeg":
        return _jpeg_with_comment(data, info)
    return data


def read_provenance(data: bytes) -> dict[str, str]:
    """The metadata `with_provenance` embeds, read back; {} when there is none or on bad data.

    For PNG every text chunk is returned (ours have the keys the engine chose); for JPEG the
    JSON-object comments are merged.
    """
    try:
        fmt = imaging.sniff(data)
        if fmt == "png":
            return _png_read_text(data)
        if fmt == "jpeg":
            return _jpeg_read_comments(data)
    except (ValueError, struct.error, zlib.error):
        pass
    return {}


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of every chunk up to IEND: data[start:end] is the whole chunk."""
    if not data.startswith(_PNG_SIGNATURE):
        raise imaging.ImageError("not a PNG image")
    chunks: list[tuple[bytes, int, int]] = []
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise imaging.ImageError("the PNG data is truncated")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise imaging.ImageError("the PNG data is truncated")
        chunks.append((ctype, pos, end))
        pos = end
        if ctype == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise imaging.ImageError("the PNG data is not complete")
    return chunks


def _png_text_key(ctype: bytes, body: bytes) -> str | None:
    if ctype not in (b"tEXt", b"iTXt", b"zTXt"):
        return None
    return body.split(b"\0", 1)[0].decode("latin-1")


def _png_with_text(data: bytes, info: Mapping[str, str]) -> bytes:
    chunks = _png_chunks(data)
    new: list[bytes] = []
    for key, value in info.items():
        try:
            kbytes = key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"PNG text keys must be Latin-1: {key!r}") from None
        if not 1 <= len(kbytes) <= 79 or b"\0" in kbytes:
            raise ValueError(f"PNG text keys must be 1-79 characters without NUL: {key!r}")
        # NUL cannot be stored in iTXt text; provenance is descriptive, so U+FFFD is fine.
        text = value.replace("\0", "\ufffd").encode("utf-8", "replace")
        # keyword NUL, compression flag 0 and method 0, empty language tag NUL, empty
        # translated keyword NUL, then the text.
        body = kbytes + b"\0" + b"\0\0" + b"\0" + b"\0" + text
        new.append(
            struct.pack(">I", len(body))
            + b"iTXt"
            + body
            + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF)
        )
    out = [data[: chunks[0][2]], *new]
    for ctype, start, end in chunks[1:]:
        if _png_text_key(ctype, data[start + 8 : end - 4]) in info:
            continue
        out.append(data[start:end])
    return b"".join(out)


def _png_read_text(data: bytes) -> dict[str, str]:
    result: dict[str, str] = {}
    for ctype, start, end in _png_chunks(data):
        body = data[start + 8 : end - 4]
        key = _png_text_key(ctype, body)
        if key is None:
            continue
        rest = body.split(b"\0", 1)[1] if b"\0" in body else b""
        if ctype == b"tEXt":
            result[key] = rest.decode("latin-1")
        elif ctype == b"zTXt":
            result[key] = _inflate(rest[1:]).decode("latin-1")
        else:
            compressed = rest[:1] == b"\x01"
            _lang, _translated, text = rest[2:].split(b"\0", 2)
            result[key] = (_inflate(text) if compressed else text).decode("utf-8", "replace")
    return result


def _inflate(data: bytes) -> bytes:
    # Bounded, so a hostile file cannot make `promptdrop status` inflate gigabytes.
    return zlib.decompressobj().decompress(data, _PNG_TEXT_LIMIT)


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Header segments (marker, start, end) between SOI and SOS, and where SOS starts."""
    if not data.startswith(b"\xff\xd8"):
        raise imaging.ImageError("not a JPEG image")
    segments: list[tuple[int, int, int]] = []
    pos = 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise imaging.ImageError("the JPEG header is malformed")
        while data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
            if pos + 4 > len(data):
                raise imaging.ImageError("the JPEG header is malformed")
        marker = data[pos + 1]
        if marker == 0xDA:
            return segments, pos
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise imaging.ImageError("the JPEG header is truncated")
        segments.append((marker, pos, end))
        pos = end


def _jpeg_comment_object(body: bytes) -> dict[str, str] | None:
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, dict) and all(isinstance(v, str) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    return None


def _jpeg_with_comment(data: bytes, info: Mapping[str, str]) -> bytes:
    segments, sos = _jpeg_segments(data)
    payload = json.dumps(dict(info), ensure_ascii=False, sort_keys=True).encode("utf-8", "replace")
    if len(payload) > 0xFFFF - 2:
        raise ValueError("provenance is too large for a JPEG comment (64 KiB)")
    comment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    out = [data[:2]]
    inserted = False
    for marker, start, end in segments:
        # APP0 (JFIF) and APP1 (Exif) must directly follow SOI for strict readers.
        if not inserted and not 0xE0 <= marker <= 0xEF:
            out.append(comment)
            inserted = True
        if marker == 0xFE:
            old = _jpeg_comment_object(data[start + 4 : end])
            if old is not None and old.keys() & info.keys():
                continue
        out.append(data[start:end])
    if not inserted:
        out.append(comment)
    out.append(data[sos:])
    return b"".join(out)


def _jpeg_read_comments(data: bytes) -> dict[str, str]:
    segments, _sos = _jpeg_segments(data)
    result: dict[str, str] = {}
    for marker, start, end in segments:
        if marker == 0xFE:
            result.update(_jpeg_comment_object(data[start + 4 : end]) or {})
    return result


# --- error notes -----------------------------------------------------------------------------


def _display_name(name: str) -> str:
    # A file name may hold newlines or undecodable bytes; the note must stay one header line.
    return "".join("\ufffd" if ord(c) < 32 or ord(c) == 127 else c for c in name)


def is_own_note(path: StrPath) -> bool:
    """True when `path` is a regular file whose first line carries promptdrop's note marker."""
    try:
        # O_NONBLOCK: a FIFO under the note's name must not hang the daemon.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, _NOTE_READ_LIMIT)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head.startswith(NOTE_MARKER.encode("utf-8"))


def _note_text(source: Path, message: str) -> bytes:
    name = _display_name(os.path.basename(os.fspath(source)))
    text = (
        f"{NOTE_MARKER}{name}\n"
        "\n"
        f"{message.strip()}\n"
        "\n"
        f"(This note was written by promptdrop. It goes away by itself once {name} "
        "makes an image.)\n"
    )
    return text.encode("utf-8", "replace")


def write_note(source: StrPath, message: str) -> bool:
    """Write the plain-language error note for `source`; False if a file not ours is there.

    The note starts with NOTE_MARKER and the prompt file's name, then `message`, then a line
    saying the note goes away once the file succeeds. An earlier note of ours is replaced in
    one step (unchanged text is not rewritten, so sync clients see nothing); a user's file with
    the note's name is never touched.
    """
    src = Path(source)
    path = note_path(src)
    data = _note_text(src, message)
    try:
        write_atomic(path, data)
        return True
    except FileExistsError:
        pass
    if not is_own_note(path):
        return False
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return True
    # Replacing is safe only because the file was just checked to be ours; someone could put a
    # file there between the check and the rename, a window of microseconds on a name that
    # holds our note.
    _replace_atomic(path, data)
    return True


def clear_note(source: StrPath) -> bool:
    """Delete the error note for `source` if it is ours; return whether one was deleted.

    As with `write_note`, the ownership check and the deletion are two steps; the window
    between them is tiny.
    """
    path = note_path(source)
    if not is_own_note(path):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True
