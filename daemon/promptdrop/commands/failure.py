"""The command line's last line of defence: what a command that failed unexpectedly, or whose
reader went away, leaves on the terminal.

The words are pure functions (`internal_error_line`, `masked`, `empty_argument`); `closed_pipe`
and `secrets` are the small bits of I/O around them that `cli.main` calls.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

MASK = "[redacted]"
DEBUG_VARIABLE = "PROMPTDROP_DEBUG"
# What a shell reports for a program that a closed pipe stopped (128 + SIGPIPE), as `yes | head`.
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE.value
_MAX_DETAIL = 300  # an exception's text beyond this is cut: the line must stay one line


# The arguments that name a file, a folder or an address: an empty one would silently mean
# the current folder (Path("") is ".") or nothing at all, never what was meant.
_FILE = "name a file or a folder"
_ADDRESS = "give an address, or leave the option out"
_NAMED = {
    "paths": ("PATH", _FILE),
    "folders": ("FOLDER", _FILE),
    "path": ("PATH", _FILE),
    "folder": ("FOLDER", _FILE),
    "rules": ("--rules", "name a rules file, or leave the option out"),
    "state_dir": ("--state-dir", "name a folder, or leave the option out"),
    "api_key_file": ("--api-key-file", "name the file holding the key, or leave the option out"),
    "metrics": ("--metrics", _ADDRESS),
    "ledger": ("--ledger", _ADDRESS),
}


def empty_argument(args: argparse.Namespace) -> str | None:
    """What to say when an argument naming a file, folder or address is an empty string."""
    for attr, (shown, fix) in _NAMED.items():
        value = getattr(args, attr, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            return f"{shown} is empty: {fix}"
    return None


def masked(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret of at least 4 characters replaced by MASK."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def internal_error_line(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """The one line for an exception no command expected: its type and text on one line,
    the secrets masked, and what to do about it."""
    detail = " ".join(str(exc).split()) or "(no message)"
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 1] + "…"
    detail = masked(detail, secrets)
    return (
        f"promptdrop: internal error: {type(exc).__name__}: {detail}; please report it "
        f"(run again with {DEBUG_VARIABLE}=1 for the details)"
    )


def debugging(environ: Mapping[str, str]) -> bool:
    """Whether PROMPTDROP_DEBUG asks for tracebacks."""
    return environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "no", "false")


def secrets(api_key_file: str | None, environ: Mapping[str, str]) -> set[str]:
    """Every value the API key may have in this process: the variable, the key file, the
    systemd credential, and what the log filter was told. Unreadable files are skipped."""
    from promptdrop import logs
    from promptdrop.service.config import CREDENTIAL_NAME, KEY_VARIABLE

    found = set(logs._SECRETS)
    found.add(environ.get(KEY_VARIABLE, "").strip())
    files = [Path(api_key_file)] if api_key_file else []
    if environ.get("CREDENTIALS_DIRECTORY"):
        files.append(Path(environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME)
    for path in files:
        try:
            if path.is_file() and path.stat().st_size < 65536:
                found.add(path.read_text(encoding="utf-8", errors="replace").strip())
        except OSError:
            continue
    return {s for s in found if s}


def closed_pipe() -> int:
    """After a write to a closed pipe (`promptdrop status | head -1`): point stdout at
    /dev/null so that the final flush cannot fail again, and return the conventional code."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a real file: nothing will flush it at exit either
    return EXIT_CLOSED_PIPE
