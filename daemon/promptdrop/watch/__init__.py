"""File-system events → settled prompt-file paths on an asyncio queue.

The watcher never parses a file and never calls the API: it only says "this prompt file is
complete and stable now" (`settled`), "it is gone" (`deleted`), "a sync client made a conflict
copy" (`conflict`), or "the whole folder went away / came back" (`root_unavailable` /
`root_available`). The engine decides what that means.

How it works:
- One watchdog inotify observer per root; on network and FUSE file systems (see fstypes.py), or
  when inotify cannot be used, no observer: the root is rescanned every poll interval instead
  (a scan stats only prompt files). Observer threads only append raw events to a list; the
  asyncio loop drains it.
- Settling is one timer heap for all files, not one task per file. A path is stat'ed in batches
  (in a worker thread, because a stat on a network share can block); it is emitted once its size,
  mtime and inode have stayed the same for the root's settle time with no new event in between.
  A 0-byte file is never emitted: browsers and sync clients create empty placeholders under the
  final name; the real content arrives with a later event.
- Deletions are never emitted straight from an event. A path that stays missing for the settle
  time triggers a scan of its root, and only that scan emits `deleted`, after checking that the
  root itself is still there. So an unmounted share produces `root_unavailable`, never a burst of
  `deleted`. A scan in which at least 10 known files and more than half of them vanish at once,
  or in which a mount point turns up empty, is treated the same way. If such a mass deletion
  persists while the folder is readable and not empty for MASS_DELETE_GRACE seconds, it is taken
  as real: `root_available`, then `deleted` for each file.
- A supervisor restarts dead observer threads, notices a root that was deleted, replaced or
  remounted, rescans after an inotify queue overflow, and rescans every `reconcile_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.api import BaseObserver

from promptdrop.spec import PROMPT_SUFFIX
from promptdrop.watch.fstypes import PollMode, should_poll

log = structlog.get_logger(__name__)

EventKind = Literal["settled", "deleted", "conflict", "root_unavailable", "root_available"]

# A mass deletion seen while the folder is readable and not empty is believed after this long.
MASS_DELETE_GRACE = 60.0
MASS_DELETE_MIN = 10

# Files found by a scan that are older than the settle time need only this second look.
_QUICK_RECHECK = 0.1
# A file whose settle timer ran out with no event, but whose last stat was older than its last
# event, needs only this second look: long enough for an event already on its way to arrive.
_QUIET_RECHECK = 0.05
# Timers due this close together are checked in one batch.
_SLACK = 0.02
_OVERFLOW_WARN_EVERY = 60.0

# Only events that can mean "content changed, appeared or went away". Opens and read-only closes
# are left out on purpose: the engine reading a settled file must not make it settle again.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

_IGNORED_PREFIXES = (".", "~$", "~syncthing~")
_IGNORED_SUFFIXES = (".partial", ".crdownload", ".part", ".filepart", ".swp", ".tmp", "~")
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_CONFLICT = re.compile(r"conflicted copy|\.sync-conflict-|-safebackup-", re.IGNORECASE)

_Sig = tuple[int, int, int]  # size, mtime_ns, inode
_MISSING: _Sig = (-1, -1, -1)


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


def is_ignored(name: str) -> bool:
    """True for names that are never prompt files: hidden names (all temp files of promptdrop,
    rsync, Syncthing, LibreOffice, GNOME, NFS and FUSE start with "."), partial downloads and
    uploads, editor swap and backup files, Office lock files, and OS litter."""
    if not name:
        return True
    lower = name.lower()
    return (
        name.startswith(_IGNORED_PREFIXES)
        or lower.endswith(_IGNORED_SUFFIXES)
        or (lower in _IGNORED_NAMES)
    )


def is_conflict_copy(name: str) -> bool:
    """True for the copies sync clients make when two edits collide (Dropbox "conflicted copy",
    Syncthing ".sync-conflict-", "-safeBackup-")."""
    return _CONFLICT.search(name) is not None


def _is_candidate_name(name: str) -> bool:
    if is_ignored(name):
        return False
    if name.endswith(PROMPT_SUFFIX):
        return True
    # Syncthing puts its marker before the last extension: a.prompt.sync-conflict-….toml
    return is_conflict_copy(name) and name.endswith(".toml") and ".prompt" in name


def is_candidate(path: Path | str, root: Path | str | None = None) -> bool:
    """True if `path` may be a prompt file the watcher reports: its name ends in ".prompt.toml"
    (or it is a conflict copy of one) and is not ignored. With `root`, the path must also lie
    under it and not inside a hidden folder below it."""
    p = Path(path)
    if not _is_candidate_name(p.name):
        return False
    if root is None:
        return True
    try:
        rel = p.relative_to(root)
    except ValueError:
        return False
    return not any(part.startswith(".") for part in rel.parts[:-1])


_RAISE_WATCHES = (
    "sudo sysctl fs.inotify.max_user_watches=524288 (and put that setting in "
    "/etc/sysctl.d/90-promptdrop.conf to keep it after a reboot)"
)
_RAISE_INSTANCES = (
    "sudo sysctl fs.inotify.max_user_instances=1024 (and put that setting in "
    "/etc/sysctl.d/90-promptdrop.conf to keep it after a reboot)"
)


def limit_advice(exc: OSError) -> str | None:
    """For an inotify resource error, which kernel limit to raise and how; else None."""
    if exc.errno == errno.ENOSPC:
        return (
            "the system limit on watched folders is reached (fs.inotify.max_user_watches). "
            f"Raise it with: {_RAISE_WATCHES}"
        )
    if exc.errno == errno.EMFILE:
        return (
            "the system limit on inotify instances is reached (fs.inotify.max_user_instances). "
            f"Raise it with: {_RAISE_INSTANCES}"
        )
    return None


# --- blocking helpers, run in worker threads -------------------------------------------------


def _stat_many(paths: list[str]) -> list[_Sig]:
    out: list[_Sig] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(_MISSING)
            continue
        out.append(
            (st.st_size, st.st_mtime_ns, st.st_ino) if stat.S_ISREG(st.st_mode) else _MISSING
        )
    return out


@dataclass
class _Scan:
    files: dict[str, _Sig]
    top_entries: int
    is_mount: bool
    folders: int


def _scan_tree(top: str, recursive: bool) -> _Scan:
    """All candidate files under `top`; raises OSError if `top` itself cannot be listed."""
    files: dict[str, _Sig] = {}
    top_entries = 0
    folders = 1
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            if folder == top:
                raise
            continue
        with it:
            for entry in it:
                if folder == top:
                    top_entries += 1
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders += 1
                        if recursive and not entry.name.startswith("."):
                            stack.append(entry.path)
                        continue
                    if not _is_candidate_name(entry.name):
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    files[entry.path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return _Scan(files, top_entries, os.path.ismount(top), folders)


def _watch_limit() -> int | None:
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None


def _root_problem(path: str) -> str | None:
    """Why the root cannot be watched right now, or None if it can."""
    try:
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            return "it is not a folder"
        with os.scandir(path) as it:
            next(it, None)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _observer_dead(observer: BaseObserver) -> bool:
    if not observer.is_alive():
        return True
    try:
        emitters = list(observer.emitters)
    except RuntimeError:  # the set changed under us; look again next tick
        return False
    return not emitters or any(not e.is_alive() for e in emitters)


def _stop_observer(observer: BaseObserver) -> None:
    with contextlib.suppress(Exception):
        observer.stop()
    if observer.is_alive():
        observer.join(timeout=1.0)


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: Callable[[FileSystemEvent], None]) -> None:
        self._sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        self._sink(event)


class _OverflowSpy(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log line; this turns it into a call."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Inotify queue overflowed"):
            self._callback()


# --- state ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Root:
    root: WatchRoot
    base: str  # absolute path as configured: every reported path starts with it
    real: str  # symlinks resolved: observers are scheduled here (inotify would watch the link)
    polling: bool
    observer: BaseObserver | None = None
    identity: tuple[int, int] | None = None
    available: bool = True
    suspicious_since: float | None = None
    emitted: dict[str, _Sig] = field(default_factory=dict)
    scanned: bool = False
    initial_left: set[str] | None = None  # first-scan paths not yet checked; None: not scanned
    scan_wanted: str | None = None  # "full" (re-emit everything) or "delta" (changes only)
    next_probe: float = 0.0
    next_reconcile: float = 0.0

    def to_base(self, path: str) -> str:
        if self.real == self.base or not (path == self.real or path.startswith(self.real + os.sep)):
            return path
        return self.base + path[len(self.real) :]


@dataclass(eq=False)
class _Pending:
    root: _Root
    path: str
    sig: _Sig | None  # last observed; None: not stat'ed yet
    due: float
    force: bool  # emit even if unchanged since the last emission
    initial: bool = False
    gen: int = 0  # bumped by every event, so a stat taken meanwhile is not trusted
    heap_at: float | None = None
    sig_gen: int = -1  # `gen` when `sig` was taken; older than `gen`: taken before an event
    event_at: float = 0.0  # monotonic time of the last event


class Watcher:
    """Watches roots and puts FileEvents on a queue; see the module docstring."""

    def __init__(
        self, roots: Iterable[WatchRoot], *, on_warning: Callable[[str], None] | None = None
    ) -> None:
        self.roots = tuple(roots)
        names = [r.name for r in self.roots]
        if len(set(names)) != len(names):
            raise ValueError("two watched folders have the same name")
        self.ready = asyncio.Event()
        self._on_warning = on_warning
        self._queue: asyncio.Queue[FileEvent] = asyncio.Queue()
        self._states: dict[str, _Root] = {}
        for r in self.roots:
            base = os.path.abspath(r.path)
            self._states[r.name] = _Root(
                r, base, os.path.realpath(base), polling=should_poll(Path(base), r.poll)
            )
        self._pending: dict[str, _Pending] = {}
        self._heap: list[tuple[float, int, _Pending]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._scan_q: asyncio.Queue[tuple[_Root, str | None]] = asyncio.Queue()
        self._sub_wanted: set[tuple[_Root, str]] = set()
        self._raw: list[tuple[_Root, FileSystemEvent]] = []
        self._raw_lock = threading.Lock()
        self._raw_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._spy: _OverflowSpy | None = None
        self._last_overflow_warning = -_OVERFLOW_WARN_EVERY
        self._started = False
        self._stopping = False

    # --- public --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start one observer per root and schedule the first full scan of each. Every prompt
        file present is emitted once settled; `ready` is set when every file of the first scans
        has been emitted, found empty or gone, or seen still changing (it follows later)."""
        if self._started:
            raise RuntimeError("this watcher was already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._spy = _OverflowSpy(self._overflow_from_thread)
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._spy)
        now = time.monotonic()
        for state in self._states.values():
            state.next_probe = now + state.root.poll_interval
            state.next_reconcile = now + state.root.reconcile_interval
            problem = await asyncio.to_thread(_root_problem, state.base)
            if problem is not None:
                self._set_unavailable(state, problem)
                continue
            await self._start_observer(state)
            self._request_scan(state, "full")
        self._tasks = [
            asyncio.create_task(self._settle_loop(), name="watcher-settle"),
            asyncio.create_task(self._scan_worker(), name="watcher-scan"),
            asyncio.create_task(self._supervise(), name="watcher-supervise"),
        ]
        self._check_ready()

    async def stop(self) -> None:
        """Stop observers, timers and scans; returns well under a second."""
        self._stopping = True
        tasks = [*self._tasks, *self._side_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        observers = [s.observer for s in self._states.values() if s.observer is not None]
        for state in self._states.values():
            state.observer = None
        if observers:
            await asyncio.wait(
                [asyncio.create_task(asyncio.to_thread(_stop_observer, o)) for o in observers],
                timeout=2.0,
            )
        if self._spy is not None:
            logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._spy)
            self._spy = None

    async def get(self) -> FileEvent:
        """The next event, waiting for one if needed."""
        return await self._queue.get()

    def queued(self) -> int:
        """Events emitted and not yet taken with `get`."""
        return self._queue.qsize()

    def rescan(self, root_name: str | None = None) -> None:
        """Schedule a full scan of one root (by name) or all: every prompt file present is
        emitted again once settled, and files gone since the last scan are reported deleted."""
        if root_name is not None and root_name not in self._states:
            raise ValueError(f"no watched folder is named {root_name!r}")
        for name, state in self._states.items():
            if root_name is None or name == root_name:
                self._request_scan(state, "full")

    def uses_polling(self, root: WatchRoot | str) -> bool:
        """True if the root is polled rather than watched with inotify."""
        return self._states[root if isinstance(root, str) else root.name].polling

    def _observer(self, root_name: str) -> BaseObserver | None:
        """The root's current observer (for tests and diagnostics)."""
        return self._states[root_name].observer

    # --- observers -----------------------------------------------------------------------

    def _make_observer(self, state: _Root) -> tuple[BaseObserver | None, str | None]:
        """Runs in a thread: the inotify observer, or None for a polled root (or when inotify
        cannot be used), which the supervisor rescans every poll interval instead."""
        warning = None
        handler = _Handler(lambda event: self._push_raw(state, event))
        if not state.polling:
            observer: BaseObserver | None = None
            try:
                from watchdog.observers.inotify import InotifyObserver

                observer = InotifyObserver()
                observer.schedule(
                    handler, state.real, recursive=state.root.recursive, event_filter=_EVENT_FILTER
                )
                observer.start()
                return observer, None
            except Exception as exc:  # any failure here must still leave the root watched
                if observer is not None:
                    _stop_observer(observer)
                if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                    raise  # the root is gone, which polling would not fix
                reason = (isinstance(exc, OSError) and limit_advice(exc)) or str(exc)
                warning = (
                    f"Cannot watch {state.base} for changes instantly: {reason}. Until then the "
                    f"folder is checked every {state.root.poll_interval:g} s instead, which is "
                    "slower."
                )
                state.polling = True
        # No watchdog PollingObserver: it stats every file in the tree (images included) and
        # keeps two snapshots of it; the delta scan stats only prompt files and keeps nothing
        # but their signatures, which the watcher holds anyway.
        return None, warning

    async def _start_observer(self, state: _Root) -> None:
        state.identity = await asyncio.to_thread(_identity, state.base)
        try:
            observer, warning = await asyncio.to_thread(self._make_observer, state)
        except OSError as exc:  # the root vanished between the check and the start
            self._set_unavailable(state, exc.strerror or str(exc))
            return
        if self._stopping:
            if observer is not None:
                await asyncio.to_thread(_stop_observer, observer)
            return
        state.observer = observer
        if warning:
            self._warn(warning)

    async def _restart(self, state: _Root) -> None:
        old, state.observer = state.observer, None
        if old is not None:
            await asyncio.to_thread(_stop_observer, old)
        await self._start_observer(state)
        self._request_scan(state, "delta")

    def _push_raw(self, state: _Root, event: FileSystemEvent) -> None:
        """Runs in observer threads: hand the event to the loop, one wake-up per batch."""
        with self._raw_lock:
            self._raw.append((state, event))
            if self._raw_scheduled:
                return
            self._raw_scheduled = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: we are shutting down
                loop.call_soon_threadsafe(self._drain_raw)

    def _drain_raw(self) -> None:
        with self._raw_lock:
            batch, self._raw = self._raw, []
            self._raw_scheduled = False
        for state, event in batch:
            if not self._stopping and state.available:
                self._handle(state, event)

    def _handle(self, state: _Root, event: FileSystemEvent) -> None:
        src = state.to_base(os.fsdecode(event.src_path)) if event.src_path else ""
        dest = ""
        if isinstance(event, FileSystemMovedEvent) and event.dest_path:
            dest = state.to_base(os.fsdecode(event.dest_path))
        if event.is_directory:
            if src == state.base and isinstance(event, DirDeletedEvent):
                state.next_probe = 0.0  # the root itself went away: check at the next tick
            elif isinstance(event, DirCreatedEvent):
                self._request_sub_scan(state, src)
            elif isinstance(event, DirMovedEvent):
                self._touch_under(state, src)
                if dest:
                    self._request_sub_scan(state, dest)
            elif isinstance(event, DirDeletedEvent):
                self._touch_under(state, src)
            return
        for path in (src, dest):
            if path and self._is_candidate(state, path):
                self._touch(state, path)

    def _is_candidate(self, state: _Root, path: str) -> bool:
        # is_candidate(path, base) on strings: called for every file of every scan, where
        # building Path objects took a noticeable share of a 10,000-file start.
        prefix = state.base.rstrip(os.sep) + os.sep
        if not path.startswith(prefix):
            return False
        parts = path[len(prefix) :].split(os.sep)
        if not state.root.recursive and len(parts) != 1:
            return False
        if any(part.startswith(".") for part in parts[:-1]):
            return False
        return _is_candidate_name(parts[-1])

    def _touch_under(self, state: _Root, folder: str) -> None:
        prefix = folder + os.sep
        for path in [p for p in state.emitted if p.startswith(prefix)]:
            self._touch(state, path)

    # --- settling ------------------------------------------------------------------------

    def _touch(self, state: _Root, path: str) -> None:
        """An event on `path`: (re)start its settle timer."""
        now = time.monotonic()
        entry = self._pending.get(path)
        if entry is None:
            # First sight: take the baseline stat at once, so a file dropped in one go
            # settles after one settle time, not two.
            entry = _Pending(state, path, sig=None, due=now, force=True, event_at=now)
            self._pending[path] = entry
        else:
            entry.gen += 1
            entry.force = True
            entry.due = now + state.root.settle
            entry.event_at = now
        self._schedule(entry)

    def _schedule(self, entry: _Pending) -> None:
        # One live heap item per entry; an entry whose due time moved later is re-pushed when
        # its old item comes up, so a burst of events costs no heap growth.
        if entry.heap_at is not None and entry.heap_at <= entry.due:
            return
        entry.heap_at = entry.due
        heapq.heappush(self._heap, (entry.due, next(self._seq), entry))
        self._wake.set()

    def _drop(self, entry: _Pending) -> None:
        if self._pending.get(entry.path) is entry:
            del self._pending[entry.path]
        self._resolve_initial(entry)

    def _resolve_initial(self, entry: _Pending) -> None:
        if entry.initial:
            entry.initial = False
            left = entry.root.initial_left
            if left is not None:
                left.discard(entry.path)

    async def _settle_loop(self) -> None:
        while True:
            now = time.monotonic()
            batch: list[_Pending] = []
            while self._heap and self._heap[0][0] <= now + _SLACK:
                at, _, entry = heapq.heappop(self._heap)
                if self._pending.get(entry.path) is not entry or entry.heap_at != at:
                    continue
                entry.heap_at = None
                if entry.due > now + _SLACK:
                    self._schedule(entry)
                else:
                    batch.append(entry)
            if batch:
                gens = [e.gen for e in batch]
                sigs = await asyncio.to_thread(_stat_many, [e.path for e in batch])
                now = time.monotonic()
                for entry, gen, sig in zip(batch, gens, sigs, strict=True):
                    self._check(entry, gen, sig, now)
                self._check_ready()
                continue
            self._wake.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _check(self, entry: _Pending, gen: int, sig: _Sig, now: float) -> None:
        state = entry.root
        if self._pending.get(entry.path) is not entry:
            return
        if not state.available:
            self._drop(entry)
            return
        if entry.gen != gen:  # an event came while we looked: its timer stands
            entry.sig, entry.sig_gen = sig, gen
            return
        settle = state.root.settle
        if sig == _MISSING:
            if entry.path not in state.emitted:
                self._drop(entry)
            elif entry.sig != _MISSING:
                entry.sig, entry.due = sig, now + settle
                self._schedule(entry)
            else:
                # Gone for a whole settle time: let a scan of the root confirm it, so a vanished
                # share is told apart from deleted files.
                self._drop(entry)
                self._request_scan(state, "delta")
            return
        if sig != entry.sig:
            # With inotify, a timer that ran out means no event for a whole settle time. If the
            # stat we compare with was taken before the last event (a file written in one go
            # right after it was created), the difference is that write, not a new one: a short
            # second look confirms the file is still, instead of a second settle time.
            quiet = not state.polling and entry.sig_gen != gen and now - entry.event_at >= settle
            entry.sig, entry.sig_gen = sig, gen
            entry.due = now + (min(_QUIET_RECHECK, settle) if quiet else settle)
            self._schedule(entry)
            if not quiet:
                # Still changing: it will come, but not hold up `ready`. A quiet file is only
                # given its short second look, and is part of the first scan as before.
                self._resolve_initial(entry)
            return
        self._drop(entry)
        if sig[0] == 0:
            return  # an empty placeholder: its content will bring a new event
        if not entry.force and state.emitted.get(entry.path) == sig:
            return
        state.emitted[entry.path] = sig
        name = os.path.basename(entry.path)
        self._emit("conflict" if is_conflict_copy(name) else "settled", state, entry.path)

    def _check_ready(self) -> None:
        if self.ready.is_set():
            return
        for state in self._states.values():
            if state.initial_left is None or state.initial_left:
                return
        self.ready.set()

    # --- scans ---------------------------------------------------------------------------

    def _request_scan(self, state: _Root, mode: str) -> None:
        if self._stopping:
            return
        if state.scan_wanted is None:
            state.scan_wanted = mode
            self._scan_q.put_nowait((state, None))
        elif mode == "full":
            state.scan_wanted = "full"

    def _request_sub_scan(self, state: _Root, folder: str) -> None:
        if not state.root.recursive or self._stopping:
            return
        try:
            rel = Path(folder).relative_to(state.base)
        except ValueError:
            return
        if any(part.startswith(".") for part in rel.parts):
            return
        if (state, folder) not in self._sub_wanted:
            self._sub_wanted.add((state, folder))
            self._scan_q.put_nowait((state, folder))

    async def _scan_worker(self) -> None:
        while True:
            state, folder = await self._scan_q.get()
            try:
                if folder is None:
                    mode, state.scan_wanted = state.scan_wanted, None
                    if mode is not None and state.available:
                        await self._scan_root(state, full=mode == "full")
                else:
                    self._sub_wanted.discard((state, folder))
                    if state.available:
                        with contextlib.suppress(OSError):
                            scan = await asyncio.to_thread(_scan_tree, folder, True)
                            self._add_found(state, scan.files, force=True)
            except Exception:  # a scan must never take the watcher down
                log.exception("watcher_scan_failed", root=state.root.name)
            self._check_ready()

    async def _scan_root(self, state: _Root, *, full: bool) -> None:
        try:
            scan = await asyncio.to_thread(_scan_tree, state.base, state.root.recursive)
        except OSError as exc:
            self._set_unavailable(state, exc.strerror or str(exc))
            return
        if not state.available:
            return
        vanished = [p for p in state.emitted if p not in scan.files]
        if self._suspicious(state, vanished, scan):
            self._set_unavailable(
                state, f"{len(vanished)} of its {len(state.emitted)} prompt files vanished at once"
            )
            state.suspicious_since = time.monotonic() if scan.top_entries else None
            return
        self._forget(state, vanished)
        initial = not state.scanned
        state.scanned = True
        added = self._add_found(state, scan.files, force=full, initial=initial)
        if initial:
            state.initial_left = added
        if initial and not state.polling and state.root.recursive:
            # watchdog skips sub-folders it cannot watch without a word; warn before files
            # in them go unnoticed until the next reconcile scan.
            limit = await asyncio.to_thread(_watch_limit)
            if limit is not None and scan.folders >= limit:
                self._warn(
                    f"{state.base} has {scan.folders} folders, more than the system allows to "
                    f"watch (fs.inotify.max_user_watches = {limit}), so changes in some of them "
                    f"are only found by the scan every {state.root.reconcile_interval:g} s. "
                    f"Raise the limit with: {_RAISE_WATCHES}"
                )

    @staticmethod
    def _suspicious(state: _Root, vanished: list[str], scan: _Scan) -> bool:
        if vanished and scan.top_entries == 0 and scan.is_mount:
            return True  # an unmounted share shows its empty mount point
        return len(vanished) >= MASS_DELETE_MIN and 2 * len(vanished) > len(state.emitted)

    def _forget(self, state: _Root, vanished: list[str]) -> None:
        for path in vanished:
            del state.emitted[path]
            self._emit("deleted", state, path)

    def _add_found(
        self, state: _Root, files: dict[str, _Sig], *, force: bool, initial: bool = False
    ) -> set[str]:
        """Put scanned files under the settle timer; returns the paths that now wait."""
        now = time.monotonic()
        wall = time.time_ns()
        settle = state.root.settle
        waiting: set[str] = set()
        for path, sig in files.items():
            if not self._is_candidate(state, path):
                continue
            entry = self._pending.get(path)
            if entry is None:
                if not force and state.emitted.get(path) == sig:
                    continue
                # Untouched for longer than the settle time: one quick second look will do.
                old = wall - sig[1] >= settle * 1e9
                entry = _Pending(
                    state,
                    path,
                    sig=sig,
                    due=now + (min(_QUICK_RECHECK, settle) if old else settle),
                    force=force,
                    sig_gen=0,
                )
                self._pending[path] = entry
                self._schedule(entry)
            else:
                entry.force = entry.force or force
            if initial:
                entry.initial = True
                waiting.add(path)
        return waiting

    # --- availability --------------------------------------------------------------------

    def _set_unavailable(self, state: _Root, reason: str) -> None:
        if not state.available:
            return
        state.available = False
        state.suspicious_since = None
        state.next_probe = time.monotonic() + state.root.poll_interval
        for entry in [e for e in self._pending.values() if e.root is state]:
            self._drop(entry)
        if state.initial_left is None:
            state.initial_left = set()
        state.scanned = True
        self._emit("root_unavailable", state, state.base)
        self._warn(
            f"The watched folder {state.base} cannot be read ({reason}). Is the drive or share "
            "connected? promptdrop keeps checking and picks up again when it is back."
        )
        if state.observer is not None:
            observer, state.observer = state.observer, None
            self._spawn(asyncio.to_thread(_stop_observer, observer))
        self._check_ready()

    async def _probe_return(self, state: _Root) -> None:
        try:
            scan = await asyncio.to_thread(_scan_tree, state.base, state.root.recursive)
        except OSError:
            return
        vanished = [p for p in state.emitted if p not in scan.files]
        if scan.top_entries == 0 and scan.is_mount:
            state.suspicious_since = None
            return  # the share's empty mount point: not back yet
        if self._suspicious(state, vanished, scan):
            now = time.monotonic()
            if state.suspicious_since is None:
                state.suspicious_since = now
            if now - state.suspicious_since < MASS_DELETE_GRACE:
                return
        # Back. What vanished meanwhile is forgotten without "deleted": an outage and a deletion
        # look the same from here, and a burst of deletions is the one thing never to send.
        for path in vanished:
            del state.emitted[path]
        state.available = True
        state.suspicious_since = None
        self._emit("root_available", state, state.base)
        log.info("watcher_root_back", root=state.root.name, path=state.base)
        await self._start_observer(state)
        self._request_scan(state, "delta")

    async def _supervise(self) -> None:
        tick = max(0.05, min([0.5, *(r.poll_interval for r in self.roots)]))
        while True:
            await asyncio.sleep(tick)
            for state in self._states.values():
                try:
                    await self._supervise_root(state)
                except Exception:  # supervision must outlive any one failure
                    log.exception("watcher_supervise_failed", root=state.root.name)

    async def _supervise_root(self, state: _Root) -> None:
        now = time.monotonic()
        if not state.available:
            if now >= state.next_probe:
                state.next_probe = now + state.root.poll_interval
                await self._probe_return(state)
            return
        dead = not state.polling and (state.observer is None or _observer_dead(state.observer))
        if dead or now >= state.next_probe:
            state.next_probe = now + state.root.poll_interval
            problem = await asyncio.to_thread(_root_problem, state.base)
            if problem is not None:
                self._set_unavailable(state, problem)
                return
            if dead:
                log.warning("watcher_observer_restarted", root=state.root.name)
                await self._restart(state)
                return
            if await asyncio.to_thread(_identity, state.base) != state.identity:
                # Replaced or remounted: the old watches point at a folder that is gone.
                await self._restart(state)
                return
            if state.polling:
                self._request_scan(state, "delta")
        if now >= state.next_reconcile:
            state.next_reconcile = now + state.root.reconcile_interval
            self._request_scan(state, "delta")

    def _overflow_from_thread(self) -> None:
        loop = self._loop
        if loop is not None and not self._stopping:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_overflow)

    def _on_overflow(self) -> None:
        for state in self._states.values():
            if not state.polling:
                self._request_scan(state, "delta")
        now = time.monotonic()
        if now - self._last_overflow_warning >= _OVERFLOW_WARN_EVERY:
            self._last_overflow_warning = now
            self._warn(
                "Too many file changes arrived at once and some were missed "
                "(the inotify event queue overflowed); the watched folders are being rescanned. "
                "If this happens often, raise the limit: "
                "sudo sysctl fs.inotify.max_queued_events=65536"
            )

    # --- output --------------------------------------------------------------------------

    def _emit(self, kind: EventKind, state: _Root, path: str) -> None:
        self._queue.put_nowait(FileEvent(kind, Path(path), state.root))

    def _warn(self, message: str) -> None:
        if self._on_warning is None:
            log.warning("watcher_warning", message=message)
            return
        try:
            self._on_warning(message)
        except Exception:
            log.exception("watcher_warning_callback_failed")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
