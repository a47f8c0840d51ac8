"""The daemon's main loop: file events to the engine, kicks, reloads, status and watchdog pings.

Each turn of `MainLoop` pings the watchdog if due, applies a reload that SIGHUP asked for,
waits briefly for one file event and hands it to the engine in a task of its own, sends
READY=1 once every root's first scan has been handed over, and on its timers picks up work
`promptdrop retry` queued and refreshes systemd's status line. The turns stop when SIGINT or
SIGTERM sets the stop flag; `lifecycle.shutdown` then drains.

The pings come from this loop on purpose, so that a stuck loop stops them. Work that may block
on a slow share (reading the rules file, looking at the watched roots) runs in a thread, and
the loop keeps pinging while it waits for it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import structlog

from promptdrop.backoff import DISK_FULL
from promptdrop.jobs.engine import Engine
from promptdrop.jobs.gate import paused_rules
from promptdrop.ledger import JobState, disk_full
from promptdrop.service import reloads
from promptdrop.service.config import WatchOptions, engine_options, root_kind
from promptdrop.service.lifecycle import Flags, installed_signals, shutdown
from promptdrop.service.sdnotify import Notifier
from promptdrop.spec import RuleConfig, RulesFile, SpecError
from promptdrop.watch import FileEvent, Watcher, WatchRoot

log = structlog.get_logger("promptdrop.service")
KICK_INTERVAL = 2.0  # how often the ledger is re-read for `retry`, `pause` and `resume`
STATUS_INTERVAL = 5.0  # how often systemd's status line is refreshed
IDLE_WAIT = 0.5  # the longest wait for a file event in one turn
READY_PEEK = 0.02  # the wait for an event while READY=1 is owed and the first scan is out
# Test hook, like the crash points: block the working loop this many seconds after READY=1,
# as a real hang would, so tests can see the watchdog pings stop. Off unless set.
_STALL_AFTER = float(os.environ.get("PROMPTDROP_TEST_STALL_AFTER") or 0) or None
_RUNNING = (JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING)

T = TypeVar("T")


def idle_wait(watchdog_every: float | None) -> float:
    """How long one turn may wait for an event: short enough to ping the watchdog on time
    (systemd asks for a ping every half period; `watchdog_every` is that half)."""
    if watchdog_every is None:
        return IDLE_WAIT
    return max(0.01, min(IDLE_WAIT, watchdog_every / 2))


def watch_roots(rules: list[RuleConfig]) -> list[WatchRoot]:
    """What the watcher watches for these rules."""
    return [
        WatchRoot(
            name=r.name,
            path=Path(r.path),
            recursive=r.recursive,
            poll=r.poll,
            poll_interval=r.poll_interval,
            settle=r.settle,
            reconcile_interval=r.reconcile_interval,
        )
        for r in rules
    ]


def new_watcher(rules: list[RuleConfig]) -> Watcher:
    """A watcher (not started) of the rules' roots, its warnings logged."""
    return Watcher(
        watch_roots(rules), on_warning=lambda message: log.warning("watcher", message=message)
    )


def status_text(
    roots: int, counts: Mapping[str, int], done_today: int, pause_reason: str | None = None
) -> str:
    """The status line from the ledger's job counts by state, today's images and the pause."""
    running = sum(counts.get(str(s), 0) for s in _RUNNING)
    text = (
        f"Watching {roots} folder{'s' if roots != 1 else ''}; "
        f"{running} task{'s' if running != 1 else ''} running; "
        f"{done_today} image{'s' if done_today != 1 else ''} done today"
    )
    waiting = counts.get(str(JobState.WAITING), 0)
    if waiting:
        text += f"; {waiting} waiting for the daily budget"
    if pause_reason is not None:
        text += "; submissions paused: " + pause_reason.split(":")[0]
    return text


def start_of_today() -> float:
    """Local midnight, as a Unix time: what "today" means in the status line."""
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))


def status_line(engine: Engine, roots: int) -> str:
    """The one-line summary systemd shows: roots watched, tasks running, images done today,
    jobs held by a spent daily budget, the account pause, and the rules `promptdrop pause`
    holds."""
    counts = engine.ledger.state_counts()
    done = engine.ledger.done_since(start_of_today())
    pause = engine.pause.reason if engine.pause is not None else None
    text = status_text(roots, counts, done, pause)
    if engine.user_pauses:
        text += "; paused by promptdrop pause: " + paused_rules(engine.user_pauses)
    return text


def load_new_rules(reload_rules: Callable[[], RulesFile]) -> RulesFile | str:
    """The rules file read again, or (after logging it) one line saying why it cannot be used.

    Reads files and stats the watched roots: run it off the event loop."""
    try:
        rules = reload_rules()
    except SpecError as exc:
        log.error("the rules file has errors; keeping the rules in use", problems=str(exc))
        return "the rules file has errors: " + "; ".join(str(exc).split("\n"))
    except OSError as exc:
        error = exc.strerror or str(exc)
        log.error("cannot read the rules file; keeping the rules in use", error=error)
        return f"cannot read the rules file: {error}"
    kinds = [(r, root_kind(Path(r.path))) for r in rules.rules]
    files = [str(r.path) for r, kind in kinds if kind == "file"]
    if files:
        log.error(
            "a watched folder in the new rules is a file, not a folder; keeping the rules in use",
            folders=files,
        )
        return "a watched folder in the new rules is a file, not a folder: " + ", ".join(files)
    for rule, kind in kinds:
        if kind == "missing":  # the rules file's folders need not exist yet: waited for
            log.warning(
                "the watched folder does not exist yet; waiting for it to appear",
                rule=rule.name,
                folder=str(rule.path),
            )
    return rules


async def pinging(notifier: Notifier, every: float, work: Callable[..., T], *args: object) -> T:
    """`work(*args)` in a thread; meanwhile the watchdog is pinged (when due) every `every`
    seconds, so that a slow share does not look like a hung daemon."""
    future = asyncio.ensure_future(asyncio.to_thread(work, *args))
    while True:
        done, _ = await asyncio.wait({future}, timeout=every)
        notifier.watchdog(time.monotonic())
        if done:
            return future.result()


async def _handle(engine: Engine, rule: RuleConfig, event: FileEvent) -> None:
    if event.kind == "settled":
        await engine.handle_file(event.path, rule)
    elif event.kind == "deleted":
        engine.handle_deleted(event.path)
    elif event.kind == "conflict":
        engine.handle_conflict(event.path, rule)
    else:
        log.warning("watched folder " + event.kind.replace("_", " "), root=str(event.path))


async def dispatch(engine: Engine, rules: Mapping[str, RuleConfig], event: FileEvent) -> None:
    """Hand one file event to the engine. While the ledger's disk is full the event waits
    (DISK_FULL backoff) and is tried again; any other error is logged and the event dropped."""
    rule = rules.get(event.root.name)
    if rule is None:
        return  # its rule was removed by a reload
    attempt = 0
    while True:
        try:
            await _handle(engine, rule, event)
            return
        except Exception as exc:
            if not disk_full(exc):
                log.exception(
                    "could not handle a file event", source=str(event.path), kind=event.kind
                )
                return
            wait = DISK_FULL.delay(attempt)
            # The event is not dropped: the file is taken up once the ledger can be written.
            log.error(
                "the disk holding the ledger is full; the file waits",
                retry_in=wait,
                source=str(event.path),
                fix="free space on the disk of the state folder",
            )
            await asyncio.sleep(wait)
            attempt += 1


async def kick(engine: Engine, rules: Mapping[str, RuleConfig]) -> None:
    """Pick up what `promptdrop retry` and `promptdrop pause` / `resume` asked for while the
    daemon runs, and prompt files whose missing reference images have appeared."""
    engine.refresh_pauses()
    engine.resume()
    for src in engine.ledger.sources_with_status("retry"):
        rule = rules.get(src.rule or "")
        if rule is not None:
            await engine.handle_file(Path(src.path), rule)
    await engine.recheck_references()


async def main_loop(engine: Engine, opts: WatchOptions, notifier: Notifier | None = None) -> int:
    """Watch the rules' roots and feed the engine until SIGINT or SIGTERM; then shut down
    (see `lifecycle.shutdown`) and return 0. SIGHUP reloads the rules when the options can."""
    flags = Flags()
    with installed_signals(flags, reload=opts.reload_rules is not None):
        loop = MainLoop(engine, opts, notifier or Notifier({}), flags)
        await loop.start()
        try:
            while not flags.stop.is_set():
                await loop.turn()
        finally:
            await shutdown(engine, loop.watcher, loop.handlers, loop.notifier)
    return 0


class MainLoop:
    """One daemon's turns: what it watches, the event handlers running, its timers."""

    def __init__(self, engine: Engine, opts: WatchOptions, notifier: Notifier, flags: Flags):
        self.engine = engine
        self.opts = opts
        self.notifier = notifier
        self.flags = flags
        self.rules = opts.rules
        # Mutated in place on reload: handlers already running look their rule up here.
        self.by_name = {r.name: r for r in self.rules.rules}
        self.watcher = new_watcher(self.rules.rules)
        self.handlers: set[asyncio.Task[None]] = set()
        self.idle_wait = idle_wait(notifier.watchdog_every)
        now = time.monotonic()
        self.next_kick = now + KICK_INTERVAL
        self.next_status = now + STATUS_INTERVAL
        # READY=1 is owed until the first scan of every root has been handed to the engine.
        self.owe_ready = True
        self.stall_at: float | None = None

    async def start(self) -> None:
        """Resume the ledger's work and start the watcher (its first scan begins)."""
        self.engine.resume()
        self.notifier.status("Starting: scanning the watched folders")
        await self.watcher.start()
        log.info("watching", roots=[str(r.path) for r in self.rules.rules])

    async def turn(self) -> None:
        """One turn: ping, reload if asked, one event (or READY=1), then the timers."""
        now = time.monotonic()
        self.notifier.watchdog(now)
        if self.stall_at is not None and now >= self.stall_at:
            time.sleep(3600)  # the test hook: a hung loop, as far as systemd can tell
        if self.flags.reload.is_set():
            self.flags.reload.clear()
            await self.reload()
        event = await self._next_event()
        if event is not None:
            task = asyncio.ensure_future(dispatch(self.engine, self.by_name, event))
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)
        elif self._ready_due():
            self._announce_ready()
        await self._timers(time.monotonic())

    async def _next_event(self) -> FileEvent | None:
        # Once the watcher says its first scan is out, look at the queue briefly: READY
        # waits until it is empty and every event taken has been handled.
        scanned = self.owe_ready and self.watcher.ready.is_set()
        try:
            return await asyncio.wait_for(
                self.watcher.get(), timeout=READY_PEEK if scanned else self.idle_wait
            )
        except TimeoutError:
            return None

    def _ready_due(self) -> bool:
        # (The queue is looked at too: a get() that timed out just as an event came leaves
        # that event queued for the next turn.)
        return (
            self.owe_ready
            and self.watcher.ready.is_set()
            and not self.handlers
            and not self.watcher.queued()
        )

    def _announce_ready(self) -> None:
        self.owe_ready = False
        self.notifier.ready(status_line(self.engine, len(self.rules.rules)))
        log.info(
            "ready: every watched folder's first scan is handed over", roots=len(self.rules.rules)
        )
        self.next_status = time.monotonic() + STATUS_INTERVAL
        if _STALL_AFTER is not None and self.stall_at is None:
            self.stall_at = time.monotonic() + _STALL_AFTER

    async def _timers(self, now: float) -> None:
        if now >= self.next_kick:
            self.next_kick = now + KICK_INTERVAL
            await kick(self.engine, self.by_name)
        if self.notifier.enabled and not self.owe_ready and now >= self.next_status:
            self.next_status = now + STATUS_INTERVAL
            self.notifier.status(status_line(self.engine, len(self.rules.rules)))

    async def reload(self) -> None:
        """Read the rules again (SIGHUP) and use them if they are valid; acknowledge the
        outcome in the state folder (see `service.reloads`); READY=1 follows once the new
        roots' first scans are handed over."""
        assert self.opts.reload_rules is not None
        started = reloads.monotonic_ns()
        self.notifier.reloading(started)
        new = await pinging(self.notifier, self.idle_wait, load_new_rules, self.opts.reload_rules)
        if isinstance(new, str):
            outcome = reloads.ReloadOutcome(started, False, new, os.getpid())
        else:
            await self._use(new)
            roots = ", ".join(str(r.path) for r in new.rules)
            outcome = reloads.ReloadOutcome(started, True, f"watching {roots}", os.getpid())
        # `promptdrop reload --wait` (ExecReload=) returns when this is written: the new
        # rules are in use, or refused and the old ones kept.
        problem = reloads.acknowledge(self.opts.state_dir, outcome)
        if problem is not None:
            log.warning("cannot write the reload acknowledgement", error=problem)
        self.owe_ready = True

    async def _use(self, new: RulesFile) -> None:
        old_roots = set(watch_roots(self.rules.rules))
        self.rules = self.opts.rules = new
        self.engine.update_rules(new.rules, new.prices)
        # New poll timings apply from each task's next poll; a new submit_rate needs a
        # restart (the client's limiter holds its recent history).
        self.engine.options = engine_options(self.opts)
        self.by_name.clear()
        self.by_name.update((r.name, r) for r in new.rules)
        if set(watch_roots(new.rules)) != old_roots:
            await self.watcher.stop()
            self.watcher = new_watcher(new.rules)
            await self.watcher.start()
        log.info("rules reloaded", roots=[str(r.path) for r in new.rules])
