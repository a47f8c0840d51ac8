"""File-system events → settled prompt-file paths on an asyncio queue.

The watcher never parses a file and never calls the API: it only says "this prompt file is
complete and stable now" (`settled`), "it is gone" (`deleted`), "a sync client made a conflict
copy" (`conflict`), or "the whole folder went away / came back" (`root_unavailable` /
`root_available`). The engine decides what that means.

The rooms, along the road of a file event:
- names.py: which names are prompt files (the one name filter, also used by `check` and
  `watch --once`).
- observers.py: one watchdog inotify observer per root; on network and FUSE file systems (see
  fstypes.py), or when inotify cannot be used, no observer: the root is rescanned every poll
  interval instead. Observer threads only append raw events to a list; the loop drains it.
- settle.py / settling.py: a file is reported once its size, mtime and inode stayed the same
  for the root's settle time with no new event in between (the pure decision, and its timers).
- scan.py: walking a root (first scan, delta scan of polled roots, reconcile pass).
- health.py: deletions are never reported straight from an event. A path that stays missing for
  the settle time triggers a scan of its root, and only that scan reports `deleted`, after
  checking that the root itself is still there. So an unmounted share produces
  `root_unavailable`, never a burst of `deleted`. A scan in which at least 10 known files and
  more than half of them vanish at once, or in which a mount point turns up empty, is treated
  the same way. If such a mass deletion persists while the folder is readable and not empty
  for MASS_DELETE_GRACE seconds, it is taken as real: `root_available`, then `deleted`.

The Watcher here is the driver that ties them together: a supervisor restarts dead observer
threads, notices a root that was deleted, replaced or remounted, rescans after an inotify queue
overflow, and rescans every `reconcile_interval`. It lives in the package itself so that the
tunables it reads (MASS_DELETE_GRACE) are the package's names, which tests may shorten.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileSystemEvent,
    FileSystemMovedEvent,
)
from watchdog.observers.api import BaseObserver

from promptdrop.watch.fstypes import should_poll
from promptdrop.watch.health import (
    MASS_DELETE_GRACE,
    MASS_DELETE_MIN,
    OVERFLOW_WARNING,
    identity,
    judge_return,
    limit_advice,
    root_problem,
    unavailable_warning,
)
from promptdrop.watch.names import (
    classify,
    is_candidate,
    is_candidate_name,
    is_candidate_under,
    is_conflict_copy,
    is_ignored,
)
from promptdrop.watch.observers import (
    Inbox,
    OverflowSpy,
    observer_dead,
    open_observer,
    stop_observer,
)
from promptdrop.watch.roots import EventKind, FileEvent, RootState, ScanMode, WatchRoot
from promptdrop.watch.scan import scan_tree, vanished
from promptdrop.watch.scanning import Scanner
from promptdrop.watch.settling import Settler

__all__ = [
    "MASS_DELETE_GRACE",
    "MASS_DELETE_MIN",
    "EventKind",
    "FileEvent",
    "WatchRoot",
    "Watcher",
    "classify",
    "is_candidate",
    "is_candidate_name",
    "is_conflict_copy",
    "is_ignored",
    "limit_advice",
]

log = structlog.get_logger(__name__)

_OVERFLOW_WARN_EVERY = 60.0


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
        self._states: dict[str, RootState] = {}
        for r in self.roots:
            base = os.path.abspath(r.path)
            self._states[r.name] = RootState(
                r, base, os.path.realpath(base), polling=should_poll(Path(base), r.poll)
            )
        self._settler = Settler(self._emit, self._request_scan, self._check_ready)
        self._scanner = Scanner(
            self._settler,
            emit=self._emit,
            set_unavailable=self._set_unavailable,
            warn=self._warn,
            after_scan=self._check_ready,
        )
        self._inbox = Inbox(self._handle)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._spy: OverflowSpy | None = None
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
        self._loop = self._inbox.loop = asyncio.get_running_loop()
        self._spy = OverflowSpy(self._overflow_from_thread)
        self._spy.install()
        now = time.monotonic()
        for state in self._states.values():
            state.next_probe = now + state.root.poll_interval
            state.next_reconcile = now + state.root.reconcile_interval
            problem = await asyncio.to_thread(root_problem, state.base)
            if problem is not None:
                self._set_unavailable(state, problem)
                continue
            await self._start_observer(state)
            self._request_scan(state, "full")
        self._tasks = [
            asyncio.create_task(self._settler.run(), name="watcher-settle"),
            asyncio.create_task(self._scanner.run(), name="watcher-scan"),
            asyncio.create_task(self._supervise(), name="watcher-supervise"),
        ]
        self._check_ready()

    async def stop(self) -> None:
        """Stop observers, timers and scans; returns well under a second."""
        self._stopping = self._scanner.stopping = True
        tasks = [*self._tasks, *self._side_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        observers = [s.observer for s in self._states.values() if s.observer is not None]
        for state in self._states.values():
            state.observer = None
        if observers:
            await asyncio.wait(
                [asyncio.create_task(asyncio.to_thread(stop_observer, o)) for o in observers],
                timeout=2.0,
            )
        if self._spy is not None:
            self._spy.remove()
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

    # --- observers and events ------------------------------------------------------------

    async def _start_observer(self, state: RootState) -> None:
        state.identity = await asyncio.to_thread(identity, state.base)
        observer: BaseObserver | None = None
        warning = None
        if not state.polling:
            try:
                observer, warning = await asyncio.to_thread(
                    open_observer,
                    state.base,
                    state.real,
                    recursive=state.root.recursive,
                    poll_interval=state.root.poll_interval,
                    sink=lambda event: self._inbox.push(state, event),
                )
            except OSError as exc:  # the root vanished between the check and the start
                self._set_unavailable(state, exc.strerror or str(exc))
                return
        # No watchdog PollingObserver: it stats every file in the tree (images included) and
        # keeps two snapshots of it; the delta scan stats only prompt files and keeps nothing
        # but their signatures, which the watcher holds anyway.
        if warning is not None:
            state.polling = True
        if self._stopping:
            if observer is not None:
                await asyncio.to_thread(stop_observer, observer)
            return
        state.observer = observer
        if warning:
            self._warn(warning)

    async def _restart(self, state: RootState) -> None:
        old, state.observer = state.observer, None
        if old is not None:
            await asyncio.to_thread(stop_observer, old)
        await self._start_observer(state)
        self._request_scan(state, "delta")

    def _handle(self, state: RootState, event: FileSystemEvent) -> None:
        if self._stopping or not state.available:
            return
        src = state.to_base(os.fsdecode(event.src_path)) if event.src_path else ""
        dest = ""
        if isinstance(event, FileSystemMovedEvent) and event.dest_path:
            dest = state.to_base(os.fsdecode(event.dest_path))
        if event.is_directory:
            if src == state.base and isinstance(event, DirDeletedEvent):
                state.next_probe = 0.0  # the root itself went away: check at the next tick
            elif isinstance(event, DirCreatedEvent):
                self._scanner.request_sub(state, src)
            elif isinstance(event, DirMovedEvent):
                self._touch_under(state, src)
                if dest:
                    self._scanner.request_sub(state, dest)
            elif isinstance(event, DirDeletedEvent):
                self._touch_under(state, src)
            return
        for path in (src, dest):
            if path and is_candidate_under(state.base, path, recursive=state.root.recursive):
                self._settler.touch(state, path)

    def _touch_under(self, state: RootState, folder: str) -> None:
        prefix = folder + os.sep
        for path in [p for p in state.emitted if p.startswith(prefix)]:
            self._settler.touch(state, path)

    def _check_ready(self) -> None:
        if self.ready.is_set():
            return
        for state in self._states.values():
            if state.initial_left is None or state.initial_left:
                return
        self.ready.set()

    def _request_scan(self, state: RootState, mode: ScanMode) -> None:
        self._scanner.request(state, mode)

    # --- availability --------------------------------------------------------------------

    def _set_unavailable(self, state: RootState, reason: str) -> None:
        if not state.available:
            return
        state.available = False
        state.suspicious_since = None
        state.next_probe = time.monotonic() + state.root.poll_interval
        self._settler.drop_root(state)
        if state.initial_left is None:
            state.initial_left = set()
        state.scanned = True
        self._emit("root_unavailable", state, state.base)
        self._warn(unavailable_warning(state.base, reason))
        if state.observer is not None:
            observer, state.observer = state.observer, None
            self._spawn(asyncio.to_thread(stop_observer, observer))
        self._check_ready()

    async def _probe_return(self, state: RootState) -> None:
        try:
            found = await asyncio.to_thread(scan_tree, state.base, state.root.recursive)
        except OSError:
            return
        gone = vanished(state.emitted, found)
        judged = judge_return(
            len(gone),
            len(state.emitted),
            found,
            time.monotonic(),
            state.suspicious_since,
            grace=MASS_DELETE_GRACE,
        )
        state.suspicious_since = judged.since
        if judged.verdict != "back":
            return
        # Back. What vanished meanwhile is forgotten without "deleted": an outage and a deletion
        # look the same from here, and a burst of deletions is the one thing never to send.
        for path in gone:
            del state.emitted[path]
        state.available = True
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

    async def _supervise_root(self, state: RootState) -> None:
        now = time.monotonic()
        if not state.available:
            if now >= state.next_probe:
                state.next_probe = now + state.root.poll_interval
                await self._probe_return(state)
            return
        dead = not state.polling and (state.observer is None or observer_dead(state.observer))
        if dead or now >= state.next_probe:
            state.next_probe = now + state.root.poll_interval
            problem = await asyncio.to_thread(root_problem, state.base)
            if problem is not None:
                self._set_unavailable(state, problem)
                return
            if dead:
                log.warning("watcher_observer_restarted", root=state.root.name)
                await self._restart(state)
                return
            if await asyncio.to_thread(identity, state.base) != state.identity:
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
            self._warn(OVERFLOW_WARNING)

    # --- output --------------------------------------------------------------------------

    def _emit(self, kind: EventKind, state: RootState, path: str) -> None:
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
