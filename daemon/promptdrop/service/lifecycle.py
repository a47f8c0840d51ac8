"""The daemon's start-up and shutdown phases, around the main loop (`service.loop`).

Start-up: the watched folders must exist, one daemon per state directory (a lock file), the
ledger opened and recovered from whatever stop came before, our own half-written temporaries
swept away. Shutdown: STOPPING=1, file-event handlers cancelled, the engine drained within its
own time bound, the watcher stopped, the ledger released and closed.

Signals: the handlers installed here only set a flag (`Flags`); the main loop notices it. They
are removed again, and the handlers that were there before put back, when the phase ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from promptdrop.jobs.engine import Engine
from promptdrop.ledger import (
    LEDGER_NAME,
    LedgerBase,
    LedgerUnavailable,
    LedgerUrlError,
    default_host_id,
    open_ledger,
)
from promptdrop.outputs import cleanup_temps
from promptdrop.service.config import (
    ConfigError,
    WatchOptions,
    ledger_problem,
    root_kind,
    root_refusal,
    state_dir_problem,
)
from promptdrop.service.reloads import LOCK_NAME
from promptdrop.service.sdnotify import Notifier
from promptdrop.spec import RuleConfig
from promptdrop.watch import Watcher

log = structlog.get_logger("promptdrop.service")


class AlreadyRunning(RuntimeError):
    """Another promptdrop daemon holds this state directory."""


@dataclass
class Flags:
    """What the signal handlers may do: set one of these. The main loop reads them."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)  # SIGINT, SIGTERM
    reload: asyncio.Event = field(default_factory=asyncio.Event)  # SIGHUP


@contextlib.contextmanager
def installed_signals(flags: Flags, *, reload: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM set `flags.stop` (and SIGHUP `flags.reload` when `reload`) while
    inside; on leaving, the handlers that were there before are put back.

    Outside the main thread nothing is installed: a program embedding the daemon in one of
    its threads handles signals itself.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    wanted = {signal.SIGINT: flags.stop, signal.SIGTERM: flags.stop}
    if reload:
        wanted[signal.SIGHUP] = flags.reload
    before = {sig: signal.getsignal(sig) for sig in wanted}
    for sig, flag in wanted.items():
        loop.add_signal_handler(sig, flag.set)
    try:
        yield
    finally:
        for sig, previous in before.items():
            loop.remove_signal_handler(sig)
            if previous is not None:  # None: a handler not set from Python; leave the default
                signal.signal(sig, previous)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the one-daemon-per-state-directory lock, or raise AlreadyRunning (ConfigError
    when the folder cannot be made or used)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(state_dir_problem(state_dir, exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            raise AlreadyRunning(
                f"another promptdrop daemon (pid {other}) already uses the state directory "
                f"{state_dir}; stop it first, or give this one its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


async def require_folders(
    rules: Iterable[RuleConfig], *, from_rules_file: bool = False, once: bool = False
) -> None:
    """Raise ConfigError naming the first watched root the daemon cannot start with (see
    `root_refusal`); a missing root it may wait for is logged, and the watcher picks it up
    when it appears."""
    rules = list(rules)
    kinds = await asyncio.to_thread(lambda: [root_kind(Path(r.path)) for r in rules])
    for rule, kind in zip(rules, kinds, strict=True):
        refusal = root_refusal(rule, kind, from_rules_file=from_rules_file, once=once)
        if refusal is not None:
            raise ConfigError(refusal)
    for rule, kind in zip(rules, kinds, strict=True):
        if kind == "missing":
            log.warning(
                "the watched folder does not exist yet; waiting for it to appear",
                rule=rule.name,
                folder=str(rule.path),
            )


def open_for(opts: WatchOptions, notifier: Notifier) -> tuple[LedgerBase, str | None]:
    """The ledger the options name, and this daemon's host name when it is shared (None for
    SQLite). An unusable ledger setting is a ConfigError.

    Opened on the event loop's thread on purpose: a ledger object is used from one thread only,
    and the engine uses it from this one.
    """
    notifier.status("Starting: opening the ledger")
    try:
        ledger = open_ledger(
            opts.ledger, opts.state_dir, roots={r.name: Path(r.path) for r in opts.rules.rules}
        )
    except (LedgerUrlError, LedgerUnavailable) as exc:
        raise ConfigError(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise ConfigError(ledger_problem(opts.state_dir / LEDGER_NAME, exc)) from None
    # Shared: claims name this daemon; other hosts' live work is left to them.
    host = default_host_id(opts.state_dir) if opts.ledger else None
    return ledger, host


async def recover(ledger: LedgerBase, host: str | None, rules: list[RuleConfig]) -> None:
    """Repair what the last stop left in the ledger, and remove our stale temporaries."""
    recovery = ledger.recover(host=host)
    log.info("ledger opened", path=ledger.location, host=host, recovery=str(recovery))
    removed = await asyncio.to_thread(clean_temporaries, rules)
    if removed:
        log.info("removed temporary files left by an earlier stop", count=removed)


def clean_temporaries(rules: list[RuleConfig], older_than: float = 30.0) -> int:
    """Remove our own half-written temporaries that a crash left behind.

    Only files older than `older_than` seconds: on a shared drive another host may be
    writing one right now.
    """
    removed = 0
    for rule in rules:
        for folder, dirs, _files in os.walk(rule.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")] if rule.recursive else []
            removed += cleanup_temps(folder, older_than=older_than)
    return removed


def close_ledger(ledger: LedgerBase, host: str | None) -> None:
    """Release this host's claims in a shared ledger (a clean stop: other hosts may take over
    what is left at once), then close it."""
    try:
        if host is not None:
            with contextlib.suppress(LedgerUnavailable):
                ledger.release_all(host)
    finally:
        ledger.close()


async def shutdown(
    engine: Engine, watcher: Watcher, handlers: Iterable[asyncio.Task[None]], notifier: Notifier
) -> None:
    """Say STOPPING, cancel file-event handlers, drain the engine (bounded by its
    drain_timeout), stop the watcher. Running tasks resume on the next start."""
    notifier.stopping("Stopping: finishing writes in progress")
    log.info("stopping: finishing writes in progress; running tasks resume on the next start")
    for task in list(handlers):
        task.cancel()
    await engine.drain()
    await watcher.stop()
