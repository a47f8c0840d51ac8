"""Prompt files that wait for their references: refused only because local reference images
are not there yet (a slow sync often brings the prompt file first), and taken up again as soon
as one of those paths exists, with no edit needed.

A path counts as arrived once it has held still between two looks (same size and mtime), so
an image still being copied in place is not read half-written. The engine keeps one
`LateReferences`; it is rebuilt at every start, since the first scan validates every invalid
prompt file again. The class is pure bookkeeping; `present` does the `stat`s (run it off
the event loop).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# What a look at an existing path saw: its size and its mtime in nanoseconds.
Signature = tuple[int, int]


@dataclass(frozen=True)
class Waiter:
    """One prompt file waiting: the rule it belongs to and the paths it waits for."""

    rule: str
    missing: frozenset[Path]


class LateReferences:
    """Which prompt files wait for which missing reference paths."""

    def __init__(self) -> None:
        self._waiting: dict[Path, Waiter] = {}
        self._seen: dict[Path, Signature] = {}  # the last look at each path that exists

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self, source: Path, rule: str, missing: Iterable[Path]) -> None:
        """`source` (of `rule`) cannot be used until one of `missing` appears."""
        self._waiting[source] = Waiter(rule, frozenset(missing))

    def forget(self, source: Path) -> None:
        """`source` waits no more (deleted, changed, or taken up)."""
        self._waiting.pop(source, None)

    def paths(self) -> set[Path]:
        """Every path some prompt file waits for."""
        return {p for w in self._waiting.values() for p in w.missing}

    def arrived(self, seen: Mapping[Path, Signature]) -> list[tuple[Path, str]]:
        """The prompt files (with their rule) waiting for a path that exists in `seen` and
        looked the same at the previous look; they are forgotten here, and the caller takes
        each up again, which records it anew if something is still missing."""
        still = {p for p, sig in seen.items() if self._seen.get(p) == sig}
        due = [(src, w.rule) for src, w in self._waiting.items() if w.missing & still]
        for src, _rule in due:
            del self._waiting[src]
        wanted = self.paths()
        self._seen = {p: sig for p, sig in seen.items() if p in wanted}
        return sorted(due)


def present(paths: Iterable[Path]) -> dict[Path, Signature]:
    """The paths among `paths` that exist now (a link counts when its target does)."""
    found = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        found[p] = (st.st_size, st.st_mtime_ns)
    return found


def shown_names(source: Path, missing: Iterable[Path]) -> list[str]:
    """The missing paths as the user would write them: relative to the prompt file's folder."""
    folder = Path(source).absolute().parent.resolve()
    return [os.path.relpath(p, folder) for p in missing]
