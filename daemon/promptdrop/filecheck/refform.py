"""How a reference may be written (a relative file name or an http(s) web address), checked
before any file is looked at: the same rule for prompt files, defaults files and rules files."""

from __future__ import annotations

import re
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit

from promptdrop.filecheck.locate import locate
from promptdrop.filecheck.problems import Problem

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def is_url_like(source: str) -> bool:
    """Whether a reference is written as an address (`scheme://...` or `data:`), not a path."""
    m = _SCHEME.match(source)
    if not m or len(m[1]) == 1:  # a single letter is a Windows drive, not a scheme
        return False
    return source[m.end() :].startswith("//") or m[1].lower() == "data"


def reference_form_problem(source: str) -> str | None:
    """What is wrong with how a reference is written, before looking at any file."""
    if not source.strip():
        return "a references entry is empty; write a file name or a web address"
    if "\x00" in source:
        return f"reference {source!r} contains a NUL character"
    if is_url_like(source):
        return _url_form_problem(source)
    if (
        source.startswith(("/", "\\", "~"))
        or PureWindowsPath(source).is_absolute()
        or PureWindowsPath(source).drive
    ):
        return (
            f"reference '{source}' is an absolute path; write it relative to this file's "
            "folder, like 'sketch.png'"
        )
    return None


def _url_form_problem(source: str) -> str | None:
    scheme = source.split(":", 1)[0].lower()
    if scheme == "data":
        return (
            "data: URIs (images pasted as text) are not accepted; save the image next "
            "to the prompt file and list its file name"
        )
    if scheme not in ("http", "https"):
        return (
            f"reference '{source}' uses {scheme}:, but only http:// and https:// web "
            "addresses or file names are accepted"
        )
    try:
        parts = urlsplit(source)
        host = parts.hostname
    except ValueError:
        host = None
    if not host or any(c.isspace() for c in source):
        return f"reference '{source}' is not a complete web address (it needs a host name)"
    return None


def reference_forms(
    refs: Any,
    path: Path,
    text: str,
    prefix: str = "",
    table: str | None = None,
    index: int | None = None,
) -> list[Problem]:
    """The form problems of a raw `references` value (anything but a list is left to the model),
    each located at the `references` key."""
    if not isinstance(refs, list):
        return []
    line, col = locate(text, "references", table, index)
    return [
        Problem(path, prefix + msg, line, col)
        for s in refs
        if isinstance(s, str)
        for msg in [reference_form_problem(s)]
        if msg
    ]
