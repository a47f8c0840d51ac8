"""What is watched and what the engine is told: the roots as configured, the events, and the
watcher's per-root state."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from watchdog.observers.api import BaseObserver

from promptdrop.watch.fstypes import PollMode
from promptdrop.watch.settle import Sig

EventKind = Literal["settled", "deleted", "conflict", "root_unavailable", "root_available"]
ScanMode = Literal["full", "delta"]  # full: report everything again; delta: changes only


@dataclass(frozen=True)
class WatchRoot:
    """One watched folder and how to watch it."""

    name: str
    path: Path
    recursive: bool = True
    poll: PollMode = "auto"
    poll_interval: float = 5.0
    settle: float = 1.0
    reconcile_interval: float = 600.0


@dataclass(frozen=True)
class FileEvent:
    """What the engine is told. For root events, `path` is the root's path."""

    kind: EventKind
    path: Path
    root: WatchRoot


@dataclass(eq=False)
class RootState:
    """The watcher's view of one root."""

    root: WatchRoot
    base: str  # absolute path as configured: every reported path starts with it
    real: str  # symlinks resolved: observers are scheduled here (inotify would watch the link)
    polling: bool
    observer: BaseObserver | None = None
    identity: tuple[int, int] | None = None
    available: bool = True
    suspicious_since: float | None = None
    emitted: dict[str, Sig] = field(default_factory=dict)
    scanned: bool = False
    initial_left: set[str] | None = None  # first-scan paths not yet checked; None: not scanned
    scan_wanted: ScanMode | None = None
    next_probe: float = 0.0
    next_reconcile: float = 0.0

    def to_base(self, path: str) -> str:
        """An observer's path (under `real`) as the same path under `base`."""
        if self.real == self.base or not (path == self.real or path.startswith(self.real + os.sep)):
            return path
        return self.base + path[len(self.real) :]
