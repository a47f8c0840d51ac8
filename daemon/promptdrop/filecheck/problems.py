"""The problem records and the one error raised for any file promptdrop cannot use."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, located where possible (1-based line and column).

    `missing` is set only for a local reference that does not exist (yet): the path looked
    for. Such a problem may solve itself (a reference still syncing), unlike every other.
    """

    path: Path
    message: str
    line: int | None = None
    col: int | None = None
    missing: Path | None = None

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.message}"


class SpecError(Exception):
    """A prompt, defaults or rules file cannot be used; `problems` says every reason found.

    `not_ready` is True only when the failure may come from a file caught half-written (a TOML
    syntax error, UTF-8 cut off at the very end, an empty file): the caller may wait and read again.
    """

    def __init__(self, problems: Iterable[Problem], *, not_ready: bool = False) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.not_ready = not_ready
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def missing_references(self) -> tuple[Path, ...]:
        """The paths looked for, when every problem is a local reference that does not exist
        yet (the file may be fine once they appear); empty when anything else is wrong."""
        if not self.problems or any(p.missing is None for p in self.problems):
            return ()
        return tuple(dict.fromkeys(p.missing for p in self.problems if p.missing is not None))


def by_position(p: Problem) -> tuple[bool, int, int]:
    """Sort key: located problems first, in file order; unlocated ones last."""
    return (p.line is None, p.line or 0, p.col or 0)


def fail(
    path: Path,
    message: str,
    line: int | None = None,
    col: int | None = None,
    *,
    not_ready: bool = False,
) -> SpecError:
    """A SpecError with a single problem (for the caller to raise)."""
    return SpecError([Problem(path, message, line, col)], not_ready=not_ready)


def reported_as(path: Path, exc: SpecError) -> SpecError:
    """The same problems, told against `path` (the name the user sees, not a link's target)."""
    return SpecError(
        [Problem(path, p.message, p.line, p.col, p.missing) for p in exc.problems],
        not_ready=exc.not_ready,
    )
