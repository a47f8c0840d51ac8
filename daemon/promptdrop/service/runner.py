"""The daemon's lifecycle: lock, recovery, scan or watch, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from promptdrop.api import DEFAULT_BASE_URL, ToApisClient
from promptdrop.api.ratelimit import RateLimits
from promptdrop.jobs.engine import Engine, EngineOptions
from promptdrop.ledger import (
    FINAL,
    JobState,
    LedgerUnavailable,
    LedgerUrlError,
    default_host_id,
    disk_full,
    open_ledger,
)
from promptdrop.outputs import cleanup_temps
from promptdrop.service.sdnotify import Notifier
from promptdrop.spec import ApiSettings, RuleConfig, RulesFile, SpecError
from promptdrop.watch import FileEvent, Watcher, WatchRoot, is_candidate, is_conflict_copy

log = structlog.get_logger("promptdrop.service")
LOCK_NAME = "daemon.lock"
KICK_INTERVAL = 2.0  # how often the ledger is re-read for work that `retry` queued
STATUS_INTERVAL = 5.0  # how often systemd's status line is refreshed
# Test hook, like the crash points: block the working loop this many seconds after READY=1,
# as a real hang would, so tests can see the watchdog pings stop. Off unless set.
_STALL_AFTER = float(os.environ.get("PROMPTDROP_TEST_STALL_AFTER") or 0) or None


class AlreadyRunning(RuntimeError):
    """Another promptdrop daemon holds this state directory."""


class ConfigError(RuntimeError):
    """Something the user must fix before the daemon can start."""


@dataclass
class WatchOptions:
    rules: RulesFile
    state_dir: Path
    api_key: str
    base_url: str = DEFAULT_BASE_URL
    once: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    progress: bool = False
    # Reads the rules again on SIGHUP (raises SpecError when they are invalid); None: no reload.
    reload_rules: Callable[[], RulesFile] | None = None
    metrics: tuple[str, int] | None = None  # serve Prometheus metrics on this address
    # A postgresql:// URL: the ledger shared with other hosts; None: SQLite in state_dir.
    ledger: str | None = None


def resolve_api_key(api_key_file: Path | None = None) -> str | None:
    """The key from --api-key-file, the systemd credential, or TOAPIS_API_KEY, in that order."""
    candidates = []
    if api_key_file is not None:
        candidates.append(api_key_file)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidates.append(Path(creds) / "toapis-api-key")
    for path in candidates:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            if path is api_key_file:
                raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
            continue
        if key:
            return key
    return os.environ.get("TOAPIS_API_KEY", "").strip() or None


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the one-daemon-per-state-directory lock, or raise AlreadyRunning."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
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


def _roots(rules: list[RuleConfig]) -> list[WatchRoot]:
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


def scan(rule: RuleConfig) -> Iterator[Path]:
    """Every prompt file present under a rule's root, as the watcher would see it."""
    root = Path(rule.path)
    if not rule.recursive:
        for entry in sorted(root.iterdir()):
            if is_candidate(entry, root) or is_conflict_copy(entry.name):
                yield entry
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if is_candidate(path, root) or (name.endswith(".toml") and is_conflict_copy(name)):
                yield path


async def run(opts: WatchOptions) -> int:
    """Run the daemon (or one pass with --once); return the process exit code."""
    for rule in opts.rules.rules:
        if not Path(rule.path).is_dir():
            raise ConfigError(f"the watched folder {rule.path} does not exist (rule {rule.name!r})")
    notifier = Notifier()
    with state_lock(opts.state_dir):
        notifier.status("Starting: opening the ledger")
        try:
            ledger = open_ledger(
                opts.ledger, opts.state_dir, roots={r.name: Path(r.path) for r in opts.rules.rules}
            )
        except (LedgerUrlError, LedgerUnavailable) as exc:
            notifier.close()
            raise ConfigError(str(exc)) from None
        # Shared: claims name this daemon; other hosts' live work is left to them.
        host = default_host_id(opts.state_dir) if opts.ledger else None
        try:
            recovery = ledger.recover(host=host)
            log.info("ledger opened", path=ledger.location, host=host, recovery=str(recovery))
            removed = await asyncio.to_thread(_clean_temporaries, opts.rules.rules)
            if removed:
                log.info("removed temporary files left by an earlier stop", count=removed)
            api = opts.rules.api
            async with ToApisClient(
                opts.api_key,
                opts.base_url,
                account_group=api.account_group,
                rate_limits=rate_limits(api),
                timeout=api.timeout,
            ) as client:
                engine = Engine(ledger, client, opts.rules.rules, engine_options(opts))
                engine.host = host
                metrics = None
                if opts.metrics:
                    # Imported here: the metrics module (and prometheus-client) only when asked.
                    from promptdrop.service.metrics import Metrics, start_metrics

                    metrics = start_metrics(opts.metrics, Metrics(engine))
                try:
                    if opts.once:
                        return await _once(engine, opts)
                    return await _daemon(engine, opts, notifier)
                finally:
                    if metrics is not None:
                        metrics.close()
        finally:
            if host is not None:
                # A clean stop: other hosts may take over what is left at once.
                with contextlib.suppress(LedgerUnavailable):
                    ledger.release_all(host)
            ledger.close()
            notifier.close()


def rate_limits(api: ApiSettings) -> RateLimits:
    """The client-side limits: the account group's, with `submit_rate` when the rules set one."""
    limits = RateLimits.for_group(api.account_group)
    return limits if api.submit_rate is None else limits.with_submit_rate(api.submit_rate)


def engine_options(opts: WatchOptions) -> EngineOptions:
    """The engine's options, with the poll timing the caller (--poll-interval) set, else the
    rules file's [api] poll_first / poll_interval."""
    engine = opts.engine
    api = opts.rules.api
    return replace(
        engine,
        poll_first=api.poll_first if engine.poll_first is None else engine.poll_first,
        poll_interval=api.poll_interval if engine.poll_interval is None else engine.poll_interval,
    )


def _clean_temporaries(rules: list[RuleConfig], older_than: float = 30.0) -> int:
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


def _install_signals(stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # embedded in another program's thread: its owner handles signals
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # The handler only sets a flag; the main loop drains and exits.
        loop.add_signal_handler(sig, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload.set)


async def _once(engine: Engine, opts: WatchOptions) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    engine.resume()
    sources: list[Path] = []
    for rule in opts.rules.rules:
        for path in scan(rule):
            if is_conflict_copy(path.name):
                engine.handle_conflict(path, rule)
                continue
            sources.append(path)
            await engine.handle_file(path, rule)
    log.info("scan done", prompt_files=len(sources))
    waiter = asyncio.ensure_future(engine.wait_idle())
    progress = _Progress(engine, sources, enabled=opts.progress)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not waiter.done():
            await asyncio.wait({waiter, stopped}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            progress.update()
            if stop.is_set():
                log.info("stopping on signal; running tasks resume on the next start")
                await engine.drain()
                return 1
    finally:
        progress.close()
        waiter.cancel()
        stopped.cancel()
    # Stop the engine's timers (the budget's midnight wake-up) before the ledger is closed.
    await engine.drain()
    waiting = _waiting_sources(engine, sources)
    if waiting:
        log.info(
            "files wait for the next day's budget; run again tomorrow, or keep the daemon running",
            files=waiting,
        )
    return 0 if _all_done(engine, sources) else 1


def _waiting_sources(engine: Engine, sources: list[Path]) -> int:
    return sum(1 for p in sources if JobState.WAITING in _jobs_of(engine, p)[1])


def _jobs_of(engine: Engine, path: Path) -> tuple[str, list[JobState]]:
    src = engine.ledger.get_source(path)
    if src is None:
        return "unknown", []
    if src.status != "active" or not src.request_hash:
        return src.status, []
    states = [
        j.state
        for j in engine.ledger.jobs_for_request(src.request_hash)
        if j.image_index <= (src.image_count or 1)
    ]
    return src.status, states


def _all_done(engine: Engine, sources: list[Path]) -> bool:
    ok = True
    for path in sources:
        status, states = _jobs_of(engine, path)
        # Waiting for tomorrow's budget is not a failure: the rule asked for it.
        if status != "active" or any(s not in (JobState.DONE, JobState.WAITING) for s in states):
            ok = False
    return ok


class _Progress:
    """A progress bar on a terminal; a log line every 10 s otherwise."""

    def __init__(self, engine: Engine, sources: list[Path], *, enabled: bool) -> None:
        self.engine = engine
        self.sources = sources
        self.bar = None
        self.last_log = time.monotonic()
        if enabled:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(total=self._total(), unit="image", file=sys.stderr)

    def _total(self) -> int:
        return sum(max(len(_jobs_of(self.engine, p)[1]), 1) for p in self.sources)

    def _finished(self) -> int:
        n = 0
        for p in self.sources:
            status, states = _jobs_of(self.engine, p)
            n += 1 if status != "active" else sum(1 for s in states if s in FINAL)
        return n

    def update(self) -> None:
        done = self._finished()
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()
        elif time.monotonic() - self.last_log >= 10:
            self.last_log = time.monotonic()
            log.info("progress", finished=done, total=self._total())

    def close(self) -> None:
        if self.bar is not None:
            self.update()
            self.bar.close()


def _new_watcher(rules: list[RuleConfig]) -> Watcher:
    return Watcher(
        _roots(rules), on_warning=lambda message: log.warning("watcher", message=message)
    )


def _start_of_today() -> float:
    """Local midnight, as a Unix time: what "today" means in the status line."""
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))


def status_line(engine: Engine, roots: int) -> str:
    """The one-line summary systemd shows: roots watched, tasks running, images done today,
    jobs held by a spent daily budget, and a pause if submissions are paused."""
    counts = engine.ledger.state_counts()
    running = sum(
        counts.get(str(s), 0) for s in (JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING)
    )
    done = engine.ledger.done_since(_start_of_today())
    text = (
        f"Watching {roots} folder{'s' if roots != 1 else ''}; "
        f"{running} task{'s' if running != 1 else ''} running; "
        f"{done} image{'s' if done != 1 else ''} done today"
    )
    waiting = counts.get(str(JobState.WAITING), 0)
    if waiting:
        text += f"; {waiting} waiting for the daily budget"
    if engine.pause is not None:
        text += "; submissions paused: " + engine.pause.reason.split(":")[0]
    return text


def _load_new_rules(opts: WatchOptions) -> RulesFile | None:
    """The rules file read again, or None (after saying why) when it cannot be used."""
    assert opts.reload_rules is not None
    try:
        rules = opts.reload_rules()
    except SpecError as exc:
        log.error("the rules file has errors; keeping the rules in use", problems=str(exc))
        return None
    except OSError as exc:
        log.error(
            "cannot read the rules file; keeping the rules in use", error=exc.strerror or str(exc)
        )
        return None
    missing = [str(r.path) for r in rules.rules if not Path(r.path).is_dir()]
    if missing:
        log.error(
            "a watched folder in the new rules does not exist; keeping the rules in use",
            folders=missing,
        )
        return None
    return rules


async def _daemon(engine: Engine, opts: WatchOptions, notifier: Notifier | None = None) -> int:
    notifier = notifier or Notifier({})
    stop = asyncio.Event()
    reload = asyncio.Event()
    _install_signals(stop, reload if opts.reload_rules is not None else None)
    rules = opts.rules
    by_name = {r.name: r for r in rules.rules}
    watcher = _new_watcher(rules.rules)
    engine.resume()
    notifier.status("Starting: scanning the watched folders")
    await watcher.start()
    log.info("watching", roots=[str(r.path) for r in rules.rules])
    handlers: set[asyncio.Task[None]] = set()
    now = time.monotonic()
    next_kick = now + KICK_INTERVAL
    next_status = now + STATUS_INTERVAL
    # READY=1 is owed until the first scan of every root has been handed to the engine.
    owe_ready = True
    stall_at: float | None = None
    # Wake often enough to ping the watchdog on time (systemd asks for every half period).
    idle_wait = 0.5
    if notifier.watchdog_every is not None:
        idle_wait = max(0.01, min(idle_wait, notifier.watchdog_every / 2))
    try:
        while not stop.is_set():
            now = time.monotonic()
            notifier.watchdog(now)
            if stall_at is not None and now >= stall_at:
                time.sleep(3600)  # the test hook: a hung loop, as far as systemd can tell
            if reload.is_set():
                reload.clear()
                notifier.reloading()
                new = _load_new_rules(opts)
                if new is not None:
                    old_roots = set(_roots(rules.rules))
                    rules = opts.rules = new
                    engine.update_rules(new.rules)
                    # New poll timings apply from each task's next poll; a new submit_rate
                    # needs a restart (the client's limiter holds its recent history).
                    engine.options = engine_options(opts)
                    by_name.clear()
                    by_name.update((r.name, r) for r in new.rules)
                    if set(_roots(new.rules)) != old_roots:
                        await watcher.stop()
                        watcher = _new_watcher(new.rules)
                        await watcher.start()
                    log.info("rules reloaded", roots=[str(r.path) for r in new.rules])
                owe_ready = True
            # Once the watcher says its first scan is out, look at the queue briefly: READY
            # waits until it is empty and every event taken has been handled.
            wait = 0.02 if owe_ready and watcher.ready.is_set() else idle_wait
            try:
                event = await asyncio.wait_for(watcher.get(), timeout=wait)
            except TimeoutError:
                event = None
            if event is not None:
                task = asyncio.ensure_future(_dispatch(engine, by_name, event))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
            elif owe_ready and watcher.ready.is_set() and not handlers and not watcher.queued():
                # (The queue is looked at too: a get() that timed out just as an event came
                # leaves that event queued for the next turn.)
                owe_ready = False
                notifier.ready(status_line(engine, len(rules.rules)))
                log.info(
                    "ready: every watched folder's first scan is handed over",
                    roots=len(rules.rules),
                )
                next_status = time.monotonic() + STATUS_INTERVAL
                if _STALL_AFTER is not None and stall_at is None:
                    stall_at = time.monotonic() + _STALL_AFTER
            now = time.monotonic()
            if now >= next_kick:
                next_kick = now + KICK_INTERVAL
                await _kick(engine, by_name)
            if notifier.enabled and not owe_ready and now >= next_status:
                next_status = now + STATUS_INTERVAL
                notifier.status(status_line(engine, len(rules.rules)))
    finally:
        notifier.stopping("Stopping: finishing writes in progress")
        log.info("stopping: finishing writes in progress; running tasks resume on the next start")
        for task in handlers:
            task.cancel()
        await engine.drain()
        await watcher.stop()
    return 0


async def _dispatch(engine: Engine, rules: dict[str, RuleConfig], event: FileEvent) -> None:
    rule = rules.get(event.root.name)
    if rule is None:
        return  # its rule was removed by a reload
    wait = 0.5
    while True:
        try:
            if event.kind == "settled":
                await engine.handle_file(event.path, rule)
            elif event.kind == "deleted":
                engine.handle_deleted(event.path)
            elif event.kind == "conflict":
                engine.handle_conflict(event.path, rule)
            else:
                log.warning("watched folder " + event.kind.replace("_", " "), root=str(event.path))
            return
        except Exception as exc:
            if not disk_full(exc):
                log.exception(
                    "could not handle a file event", source=str(event.path), kind=event.kind
                )
                return
            # The event is not dropped: the file is taken up once the ledger can be written.
            log.error(
                "the disk holding the ledger is full; the file waits",
                retry_in=wait,
                source=str(event.path),
                fix="free space on the disk of the state folder",
            )
            await asyncio.sleep(wait)
            wait = min(wait * 2, 10.0)


async def _kick(engine: Engine, rules: dict[str, RuleConfig]) -> None:
    """Pick up what `promptdrop retry` asked for while the daemon runs."""
    engine.resume()
    for src in engine.ledger.sources_with_status("retry"):
        rule = rules.get(src.rule or "")
        if rule is not None:
            await engine.handle_file(Path(src.path), rule)
