"""The settle timers: one heap for all files, not one task per file.

A path is stat'ed in batches (in a worker thread, because a stat on a network share can block)
when its timer runs out; what the look means is decided by `settle.decide`. A 0-byte file is
never reported: browsers and sync clients create empty placeholders under the final name; the
real content arrives with a later event.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from promptdrop.watch.names import is_candidate_under, is_conflict_copy
from promptdrop.watch.roots import EventKind, RootState, ScanMode
from promptdrop.watch.scan import stat_many
from promptdrop.watch.settle import MISSING, Sig, decide, first_look

# Timers due this close together are checked in one batch.
_SLACK = 0.02


@dataclass(eq=False)
class _Pending:
    root: RootState
    path: str
    sig: Sig | None  # last observed; None: not stat'ed yet
    due: float
    force: bool  # emit even if unchanged since the last emission
    initial: bool = False
    gen: int = 0  # bumped by every event, so a stat taken meanwhile is not trusted
    heap_at: float | None = None
    sig_gen: int = -1  # `gen` when `sig` was taken; older than `gen`: taken before an event
    event_at: float = 0.0  # monotonic time of the last event


class Settler:
    """Files waiting to settle. `emit` reports a settled file or conflict copy, `request_scan`
    asks for a scan of a root (a file gone for a whole settle time), `after_batch` runs after
    each batch of looks (the watcher checks its readiness there)."""

    def __init__(
        self,
        emit: Callable[[EventKind, RootState, str], None],
        request_scan: Callable[[RootState, ScanMode], None],
        after_batch: Callable[[], None],
    ) -> None:
        self._emit = emit
        self._request_scan = request_scan
        self._after_batch = after_batch
        self._pending: dict[str, _Pending] = {}
        self._heap: list[tuple[float, int, _Pending]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def touch(self, state: RootState, path: str) -> None:
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

    def add_found(
        self, state: RootState, files: dict[str, Sig], *, force: bool, initial: bool = False
    ) -> set[str]:
        """Put scanned files under the settle timer; returns the paths that now wait."""
        now = time.monotonic()
        wall = time.time_ns()
        settle = state.root.settle
        waiting: set[str] = set()
        for path, sig in files.items():
            if not is_candidate_under(state.base, path, recursive=state.root.recursive):
                continue
            entry = self._pending.get(path)
            if entry is None:
                if not force and state.emitted.get(path) == sig:
                    continue
                due = first_look(sig, now, wall, settle=settle)
                entry = _Pending(state, path, sig=sig, due=due, force=force, sig_gen=0)
                self._pending[path] = entry
                self._schedule(entry)
            else:
                entry.force = entry.force or force
            if initial:
                entry.initial = True
                waiting.add(path)
        return waiting

    def drop_root(self, state: RootState) -> None:
        """Forget every file of the root that waits."""
        for entry in [e for e in self._pending.values() if e.root is state]:
            self._drop(entry)

    async def run(self) -> None:
        """Look at files as their timers run out; runs until cancelled."""
        while True:
            now = time.monotonic()
            batch = self._due(now)
            if batch:
                gens = [e.gen for e in batch]
                sigs = await asyncio.to_thread(stat_many, [e.path for e in batch])
                now = time.monotonic()
                for entry, gen, sig in zip(batch, gens, sigs, strict=True):
                    self._check(entry, gen, sig, now)
                self._after_batch()
                continue
            self._wake.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _due(self, now: float) -> list[_Pending]:
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
        return batch

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

    @staticmethod
    def _resolve_initial(entry: _Pending) -> None:
        if entry.initial:
            entry.initial = False
            left = entry.root.initial_left
            if left is not None:
                left.discard(entry.path)

    def _check(self, entry: _Pending, gen: int, sig: Sig, now: float) -> None:
        state = entry.root
        if self._pending.get(entry.path) is not entry:
            return
        if not state.available:
            self._drop(entry)
            return
        if entry.gen != gen:  # an event came while we looked: its timer stands
            entry.sig, entry.sig_gen = sig, gen
            return
        before_event = not state.polling and entry.sig_gen != gen
        decision = decide(
            entry.sig,
            sig,
            now,
            settle=state.root.settle,
            reported=state.emitted.get(entry.path),
            force=entry.force,
            event_after_prev=entry.event_at if before_event else None,
        )
        if decision.outcome == "wait":
            assert decision.until is not None
            if sig != MISSING:
                entry.sig_gen = gen
            entry.sig, entry.due = sig, decision.until
            self._schedule(entry)
            if decision.changing:
                # Still changing: it will come, but not hold up `ready`. A quiet file is only
                # given its short second look, and is part of the first scan as before.
                self._resolve_initial(entry)
            return
        self._drop(entry)
        if decision.outcome == "gone":
            # Gone for a whole settle time: let a scan of the root confirm it, so a vanished
            # share is told apart from deleted files.
            self._request_scan(state, "delta")
        elif decision.outcome == "settled":
            state.emitted[entry.path] = sig
            name = os.path.basename(entry.path)
            self._emit("conflict" if is_conflict_copy(name) else "settled", state, entry.path)
