"""The watchdog side: starting, checking and stopping inotify observers, and turning watchdog's
overflow log line into a call. Observer threads only hand raw events to a sink; everything
else happens on the watcher's asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

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
)
from watchdog.observers.api import BaseObserver

from promptdrop.watch.health import limit_advice
from promptdrop.watch.roots import RootState

INOTIFY_LOGGER = "watchdog.observers.inotify_c"

# Only events that can mean "content changed, appeared or went away". Opens and read-only closes
# are left out on purpose: the engine reading a settled file must not make it settle again.
EVENT_FILTER: list[type[FileSystemEvent]] = [
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


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: Callable[[FileSystemEvent], None]) -> None:
        self._sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        self._sink(event)


class OverflowSpy(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log line; this turns it into a call.
    Attach it with `install`, detach with `remove`."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Inotify queue overflowed"):
            self._callback()

    def install(self) -> None:
        logging.getLogger(INOTIFY_LOGGER).addHandler(self)

    def remove(self) -> None:
        logging.getLogger(INOTIFY_LOGGER).removeHandler(self)


def open_observer(
    base: str,
    real: str,
    *,
    recursive: bool,
    poll_interval: float,
    sink: Callable[[FileSystemEvent], None],
) -> tuple[BaseObserver | None, str | None]:
    """Blocking: a started inotify observer on `real`, whose events go to `sink`. When inotify
    cannot be used, (None, a warning for the operator): the caller polls the root instead.
    Raises FileNotFoundError or NotADirectoryError when the root is gone, which polling would
    not fix."""
    observer: BaseObserver | None = None
    try:
        from watchdog.observers.inotify import InotifyObserver

        observer = InotifyObserver()
        observer.schedule(_Handler(sink), real, recursive=recursive, event_filter=EVENT_FILTER)
        observer.start()
        return observer, None
    except Exception as exc:  # any failure here must still leave the root watched
        if observer is not None:
            stop_observer(observer)
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            raise
        reason = (isinstance(exc, OSError) and limit_advice(exc)) or str(exc)
        return None, (
            f"Cannot watch {base} for changes instantly: {reason}. Until then the "
            f"folder is checked every {poll_interval:g} s instead, which is slower."
        )


def observer_dead(observer: BaseObserver) -> bool:
    """True when the observer thread or any of its emitters stopped."""
    if not observer.is_alive():
        return True
    try:
        emitters = list(observer.emitters)
    except RuntimeError:  # the set changed under us; look again next tick
        return False
    return not emitters or any(not e.is_alive() for e in emitters)


def stop_observer(observer: BaseObserver) -> None:
    """Blocking: stop the observer, waiting at most a second for its thread."""
    with contextlib.suppress(Exception):
        observer.stop()
    if observer.is_alive():
        observer.join(timeout=1.0)


class Inbox:
    """Raw events from observer threads, handed to `handle` on the loop in batches: one
    wake-up of the loop per batch, however many events a burst brings."""

    def __init__(self, handle: Callable[[RootState, FileSystemEvent], None]) -> None:
        self._handle = handle
        self._raw: list[tuple[RootState, FileSystemEvent]] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def push(self, state: RootState, event: FileSystemEvent) -> None:
        """Runs in observer threads."""
        with self._lock:
            self._raw.append((state, event))
            if self._scheduled:
                return
            self._scheduled = True
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: we are shutting down
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._raw = self._raw, []
            self._scheduled = False
        for state, event in batch:
            self._handle(state, event)
