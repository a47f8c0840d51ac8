"""`promptdrop completion bash|zsh|fish`: a static completion script made from the parser.

shtab writes it from the argparse parser itself, so every command and option the parser has is
in it, and completing costs the shell nothing: promptdrop is not run on each Tab.
"""

from __future__ import annotations

import argparse

import shtab

SHELLS = ("bash", "zsh", "fish")


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of `parser` (prog "promptdrop") for `shell`, ending in a newline.
    Paths complete as files or folders where the argument is one."""
    _mark_paths(parser)
    script = str(shtab.complete(parser, shell=shell))
    return script if script.endswith("\n") else script + "\n"


_FILES = {"--rules", "--api-key-file", "--faults"}
_FOLDERS = {"--state-dir", "--root"}


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    # shtab reads a `complete` attribute on each action: what the shell offers for it.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub)
            continue
        flags = set(action.option_strings)
        if flags & _FILES or action.dest in ("paths", "path"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif flags & _FOLDERS or action.dest in ("folders", "folder"):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
