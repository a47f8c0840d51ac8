"""Plain-language error notes beside a prompt file that could not make an image.

"poster.error.txt" says what went wrong with "poster.prompt.toml" and goes away once the file
makes an image (or, for a file that never will, such as a sync app's conflict copy, when it is
deleted; every note goes with its prompt file). A note is ours only when its first line
carries NOTE_MARKER: a user's file under the same name is never replaced or deleted.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from promptdrop.outputs.atomic import fsync_dir, replace_atomic, write_atomic
from promptdrop.outputs.naming import StrPath, note_path

# The first line of every note we write starts with this; it is how we recognise our own notes
# (and refuse to touch a user's file that happens to have the same name). Never change it.
NOTE_MARKER = "promptdrop could not make an image from "
_NOTE_READ_LIMIT = 4096


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


# The footer of a note about a file that never makes an image (a conflict copy).
GOES_WHEN_DELETED = "It goes away when this copy is deleted."


def _note_text(source: Path, message: str, goes_away: str | None) -> bytes:
    name = _display_name(os.path.basename(os.fspath(source)))
    footer = goes_away or f"It goes away by itself once {name} makes an image."
    text = (
        f"{NOTE_MARKER}{name}\n"
        "\n"
        f"{message.strip()}\n"
        "\n"
        f"(This note was written by promptdrop. {footer})\n"
    )
    return text.encode("utf-8", "replace")


def write_note(source: StrPath, message: str, *, goes_away: str | None = None) -> bool:
    """Write the plain-language error note for `source`; False if a file not ours is there.

    The note starts with NOTE_MARKER and the prompt file's name, then `message`, then a line
    saying when the note goes away: `goes_away` (a sentence), by default once the file
    succeeds. An earlier note of ours is replaced in
    one step (unchanged text is not rewritten, so sync clients see nothing); a user's file with
    the note's name is never touched.
    """
    src = Path(source)
    path = note_path(src)
    data = _note_text(src, message, goes_away)
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
    replace_atomic(path, data)
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
    fsync_dir(path.parent)
    return True
