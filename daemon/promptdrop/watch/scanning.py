"""The scan queue: scans of whole roots (first scan, delta scan of polled roots, reconcile pass,
rescans) and of folders that appeared, one at a time in a worker thread.

Only a scan of a root reports `deleted`, and only after `health.suspicious` found that the root
itself is still there: a share that went away is reported as unavailable, never as a burst of
deletions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from promptdrop.watch.health import suspicious, too_many_folders_warning, watch_limit
from promptdrop.watch.names import is_hidden_folder
from promptdrop.watch.roots import EventKind, RootState, ScanMode
from promptdrop.watch.scan import scan_tree, vanished
from promptdrop.watch.settling import Settler

log = structlog.get_logger(__name__)


class Scanner:
    """Runs requested scans and hands what they find to the settler. `set_unavailable` is
    called when a root cannot be listed or looks like an outage, `after_scan` after each scan
    (the watcher checks its readiness there)."""

    def __init__(
        self,
        settler: Settler,
        *,
        emit: Callable[[EventKind, RootState, str], None],
        set_unavailable: Callable[[RootState, str], None],
        warn: Callable[[str], None],
        after_scan: Callable[[], None],
    ) -> None:
        self._settler = settler
        self._emit = emit
        self._set_unavailable = set_unavailable
        self._warn = warn
        self._after_scan = after_scan
        self._queue: asyncio.Queue[tuple[RootState, str | None]] = asyncio.Queue()
        self._sub_wanted: set[tuple[RootState, str]] = set()
        self.stopping = False

    def request(self, state: RootState, mode: ScanMode) -> None:
        """Ask for a scan of the whole root; a "full" request wins over a waiting "delta"."""
        if self.stopping:
            return
        if state.scan_wanted is None:
            state.scan_wanted = mode
            self._queue.put_nowait((state, None))
        elif mode == "full":
            state.scan_wanted = "full"

    def request_sub(self, state: RootState, folder: str) -> None:
        """Ask for a scan of a folder that appeared under a recursive root."""
        if not state.root.recursive or self.stopping:
            return
        try:
            rel = Path(folder).relative_to(state.base)
        except ValueError:
            return
        if any(is_hidden_folder(part) for part in rel.parts):
            return
        if (state, folder) not in self._sub_wanted:
            self._sub_wanted.add((state, folder))
            self._queue.put_nowait((state, folder))

    async def run(self) -> None:
        """Run requested scans one by one; runs until cancelled."""
        while True:
            state, folder = await self._queue.get()
            try:
                if folder is None:
                    mode, state.scan_wanted = state.scan_wanted, None
                    if mode is not None and state.available:
                        await self._scan_root(state, full=mode == "full")
                else:
                    self._sub_wanted.discard((state, folder))
                    if state.available:
                        with contextlib.suppress(OSError):
                            found = await asyncio.to_thread(scan_tree, folder, True)
                            self._settler.add_found(state, found.files, force=True)
            except Exception:  # a scan must never take the watcher down
                log.exception("watcher_scan_failed", root=state.root.name)
            self._after_scan()

    async def _scan_root(self, state: RootState, *, full: bool) -> None:
        try:
            found = await asyncio.to_thread(scan_tree, state.base, state.root.recursive)
        except OSError as exc:
            self._set_unavailable(state, exc.strerror or str(exc))
            return
        if not state.available:
            return
        gone = vanished(state.emitted, found)
        if suspicious(len(gone), len(state.emitted), found):
            self._set_unavailable(
                state, f"{len(gone)} of its {len(state.emitted)} prompt files vanished at once"
            )
            state.suspicious_since = time.monotonic() if found.top_entries else None
            return
        for path in gone:
            del state.emitted[path]
            self._emit("deleted", state, path)
        initial = not state.scanned
        state.scanned = True
        added = self._settler.add_found(state, found.files, force=full, initial=initial)
        if initial:
            state.initial_left = added
        if initial and not state.polling and state.root.recursive:
            # watchdog skips sub-folders it cannot watch without a word; warn before files
            # in them go unnoticed until the next reconcile scan.
            limit = await asyncio.to_thread(watch_limit)
            every = state.root.reconcile_interval
            warning = too_many_folders_warning(state.base, found.folders, limit, every)
            if warning is not None:
                self._warn(warning)
