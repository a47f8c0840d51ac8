"""`promptdrop check PATH…`: validate prompt files, folder defaults and rules files.

Every file is checked exactly as the daemon would read it (same code in `spec`), so a file that
passes here is one the daemon accepts. Nothing here calls the API or writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from promptdrop.spec import (
    DEFAULTS_NAME,
    PROMPT_SUFFIX,
    Problem,
    SpecError,
    check_defaults_file,
    read_prompt_file,
    read_rules,
)
from promptdrop.watch.names import classify, is_hidden_folder

EXIT_VALID = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _found_in(folder: Path) -> list[Path]:
    """Prompt and defaults files under `folder`, skipping hidden folders below it. Which names
    are prompt files is the watcher's one name filter, so sync apps' conflict copies and
    temporary files are left out here as the daemon leaves them out."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden_folder(d))
        for name in sorted(filenames):
            if name == DEFAULTS_NAME or classify(name) == "prompt":
                found.append(Path(dirpath) / name)
    return found


def _checker(path: Path, root: Path) -> Callable[[], object] | None:
    name = path.name
    if name.endswith(PROMPT_SUFFIX):
        return lambda: read_prompt_file(path, root)
    if name == DEFAULTS_NAME:
        return lambda: check_defaults_file(path, root)
    if name.endswith(".toml"):
        return lambda: read_rules(path)
    return None


def _near_misses(folder: Path, limit: int = 3) -> list[str]:
    """A few names under `folder` that look meant as prompt files but are not read as such
    (`poster.toml`, `cat.prompt.txt`), relative to `folder`."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden_folder(d))
        for name in sorted(filenames):
            if name.endswith(".toml") or ".prompt" in name:
                found.append(os.path.relpath(Path(dirpath) / name, folder))
                if len(found) >= limit:
                    return found
    return found


def nothing_found(folder: Path, near: Sequence[str]) -> str:
    """The line for a folder in which there is nothing to check."""
    text = (
        f"promptdrop check: {folder} holds no prompt files (NAME{PROMPT_SUFFIX}) and no "
        f"folder defaults ({DEFAULTS_NAME}): nothing was checked"
    )
    if near:
        text += (
            f"; not read as prompt files: {', '.join(near)} (a prompt file's name ends in "
            f"{PROMPT_SUFFIX}; name a rules file to check it)"
        )
    return text


def _collect(
    paths: Sequence[Path], root: Path | None
) -> tuple[list[tuple[Path, Callable[[], object]]], list[str], list[str]]:
    """Each file to check with its checker, the usage errors (paths that cannot be), and a
    line for each folder with nothing to check."""
    jobs: list[tuple[Path, Callable[[], object]]] = []
    usage_errors: list[str] = []
    empty: list[str] = []
    for given in paths:
        given = Path(given)
        if not os.path.lexists(given):
            usage_errors.append(f"promptdrop check: no such file or folder: {given}")
        elif given.is_dir():
            folder_root = root if root is not None else given
            before = len(jobs)
            for found in _found_in(given):
                check = _checker(found, folder_root)
                if check is not None:
                    jobs.append((found, check))
            if len(jobs) == before:
                empty.append(nothing_found(given, _near_misses(given)))
        else:
            check = _checker(given, root if root is not None else given.absolute().parent)
            if check is None:
                usage_errors.append(
                    f"promptdrop check: {given} is not a prompt file (NAME{PROMPT_SUFFIX}), "
                    f"folder defaults ({DEFAULTS_NAME}) or rules file (NAME.toml)"
                )
            else:
                jobs.append((given, check))
    return jobs, usage_errors, empty


def run_check(paths: Sequence[Path], out: TextIO, root: Path | None = None) -> int:
    """Check every file and folder in `paths`; print `path:line:col: message` per problem.

    Folders are searched recursively for `*.prompt.toml` and `.promptdrop.toml`; a file given
    by name may also be a rules file (any other `*.toml`). The watched root used for `..` and
    symlink checks is `root`, else the folder argument, else a file argument's folder. Ends with
    a summary line. Returns 0 when all files are valid, 1 when any has a problem or a folder
    holds nothing to check (a check that read nothing proved nothing: most likely a wrong
    folder or misnamed files), 2 when a path does not exist or is not a file promptdrop reads
    (nothing is checked then).
    """
    jobs, usage_errors, empty = _collect(paths, root)
    if usage_errors:
        for line in usage_errors:
            print(line, file=out)
        return EXIT_USAGE

    printed: set[Problem] = set()
    failed = 0
    for _path, check in jobs:
        try:
            check()
        except SpecError as exc:
            failed += 1
            for problem in exc.problems:
                # A broken .promptdrop.toml shows up under every prompt file below it: say it once.
                if problem not in printed:
                    printed.add(problem)
                    print(problem, file=out)
    for line in empty:
        print(line, file=out)
    if not jobs:
        return EXIT_PROBLEMS
    files = f"{len(jobs)} file" + ("" if len(jobs) == 1 else "s")
    if empty and not failed:
        print(f"checked {files}: all valid, but {len(empty)} folder(s) held none", file=out)
        return EXIT_PROBLEMS
    if failed:
        print(f"checked {files}: {failed} with problems", file=out)
        return EXIT_PROBLEMS
    print(f"checked {files}: all valid", file=out)
    return EXIT_VALID
