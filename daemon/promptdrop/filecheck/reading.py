"""Reading a small regular UTF-8 TOML file defensively, and parsing it.

Anything that is not a small regular UTF-8 text file is refused before it is parsed, and nothing
is ever opened that could block (a FIFO is refused by `stat`, before any `open`).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from promptdrop.filecheck.fields import MAX_PROMPT_FILE_BYTES, PROMPT_SUFFIX
from promptdrop.filecheck.problems import fail

_TOML_POS = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.S)
_TOML_END = re.compile(r"^(?P<msg>.*?)\s*\(at end of document\)$", re.S)


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words ("a folder", "a named pipe"...)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def human(n: int) -> str:
    """A byte count as people read it: bytes, KiB or MB (an MB is 1,000,000 bytes, as the
    API's "10MB" limit is read)."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def read_bytes(path: Path, limit: int, what: str) -> bytes:
    """Read a regular file of at most `limit` bytes without ever blocking on it.

    `stat` comes first so a FIFO or device is refused without being opened; the open uses
    O_NONBLOCK and O_NOFOLLOW (callers pass a resolved path) and the type is checked again on the
    open descriptor, in case the file was swapped in between.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise fail(path, f"the {what} was not found") from None
    except OSError as exc:
        raise fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(path, f"the {what} is {kind_of(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise fail(path, f"the {what} is {human(st.st_size)}; it may be at most {human(limit)}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise fail(path, f"the {what} is not a regular file")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise fail(path, f"the {what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise fail(path, f"the {what} is over {human(limit)}; it may be at most {human(limit)}")
    return data


def _read_at_most(fd: int, most: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < most:
        chunk = os.read(fd, min(1 << 20, most - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def byte_pos(data: bytes, offset: int) -> tuple[int, int]:
    """The 1-based line and column of a byte offset."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def decode(path: Path, data: bytes) -> str:
    """Bytes to text: UTF-8 only; a leading UTF-8 byte order mark is accepted and dropped
    (some Windows editors add one), NUL bytes are refused (not a text file)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        raise fail(
            path,
            "the file is empty"
            + ("; write at least a prompt line" if path.name.endswith(PROMPT_SUFFIX) else ""),
            not_ready=True,
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = byte_pos(data, nul)
        raise fail(
            path,
            "the file contains NUL bytes, so it is not a text file; save it as plain UTF-8 text",
            line,
            col,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = byte_pos(data, exc.start)
        truncated = exc.end == len(data) and "unexpected end" in exc.reason
        raise fail(
            path,
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
            line,
            col,
            not_ready=truncated,
        ) from None


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error becomes a located problem (not_ready: maybe half-written)."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise fail(
            path, "the file is nested too deeply to read; keep to plain keys and short lists"
        ) from None
    except ValueError as exc:  # tomllib.TOMLDecodeError, incl. impossible dates
        raw = str(exc)
        line: int | None = None
        col: int | None = None
        m = _TOML_POS.match(raw)
        if m:
            raw, line, col = m["msg"], int(m["line"]), int(m["col"])
        else:
            m = _TOML_END.match(raw)
            if m:
                raw = m["msg"] + " at the end of the file"
                line = text.count("\n") + 1
        raise fail(
            path,
            f"this is not valid TOML: {raw}. Check quotes, brackets and '=' signs",
            line,
            col,
            not_ready=True,
        ) from None


def load(
    path: Path, limit: int = MAX_PROMPT_FILE_BYTES, what: str = "file"
) -> tuple[dict[str, Any], str]:
    """Read, decode and parse one TOML file; return its table and its text (for locating keys)."""
    text = decode(path, read_bytes(path, limit, what))
    return parse_toml(path, text), text
