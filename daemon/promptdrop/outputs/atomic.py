"""Atomic, no-clobber writes into users' folders, and the cleanup of what a crash left.

Every file appears under its final name in one step, complete, and never replaces a file that
is already there. Work in progress lives in hidden temporary files (TEMP_PREFIX) in the same
folder, fsynced before they are given their name by a hard link (atomic and no-clobber on
POSIX) or, where the file system has none, by a no-clobber rename; the folder is then fsynced.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

from promptdrop.crashpoints import reached
from promptdrop.outputs.naming import TEMP_PREFIX, StrPath, is_own_temp

# os.link fails with these where the file system has no hard links (vfat, exFAT, many FUSE and
# SMB mounts) or refuses them for policy reasons (fs.protected_hardlinks): fall back to a rename.
_NO_HARDLINK_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
)
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


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


def fsync_dir(folder: StrPath) -> None:
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
    fsync_dir(final.parent)


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
    fsync_dir(d.parent)
    if s.parent != d.parent:
        fsync_dir(s.parent)


def replace_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step. Only for files we have verified to be ours."""
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


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
