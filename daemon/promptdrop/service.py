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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from promptdrop.api import DEFAULT_BASE_URL, ToApisClient
from promptdrop.engine import Engine, EngineOptions
from promptdrop.ledger import FINAL, JobState, Ledger
from promptdrop.outputs import cleanup_temps
from promptdrop.spec import RuleConfig, RulesFile
from promptdrop.watcher import FileEvent, Watcher, WatchRoot, is_candidate, is_conflict_copy

log = structlog.get_logger("promptdrop.service")
LOCK_NAME = "daemon.lock"
KICK_INTERVAL = 2.0  # how often the ledger is re-read for work that `retry` queued


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
        WatchRoot(name=r.name, path=Path(r.path), recursive=r.recursive, poll=r.poll,
                  poll_interval=r.poll_interval, settle=r.settle,
                  reconcile_interval=r.reconcile_interval)
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
    with state_lock(opts.state_dir):
        ledger = Ledger.open(opts.state_dir)
        try:
            recovery = ledger.recover()
            log.info("ledger opened", path=str(ledger.path), recovery=str(recovery))
            removed = await asyncio.to_thread(_clean_temporaries, opts.rules.rules)
            if removed:
                log.info("removed temporary files left by an earlier stop", count=removed)
            group = opts.rules.api.account_group
            async with ToApisClient(opts.api_key, opts.base_url, account_group=group) as client:
                engine = Engine(ledger, client, opts.rules.rules, opts.engine)
                if opts.once:
                    return await _once(engine, opts)
                return await _daemon(engine, opts)
        finally:
            ledger.close()


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


def _install_signals(stop: asyncio.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # embedded in another program's thread: its owner handles signals
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # The handler only sets a flag; the main loop drains and exits.
        loop.add_signal_handler(sig, stop.set)


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
            await asyncio.wait({waiter, stopped}, timeout=1.0,
                               return_when=asyncio.FIRST_COMPLETED)
            progress.update()
            if stop.is_set():
                log.info("stopping on signal; running tasks resume on the next start")
                await engine.drain()
                return 1
    finally:
        progress.close()
        waiter.cancel()
        stopped.cancel()
    return 0 if _all_done(engine, sources) else 1


def _jobs_of(engine: Engine, path: Path) -> tuple[str, list[JobState]]:
    src = engine.ledger.get_source(path)
    if src is None:
        return "unknown", []
    if src.status != "active" or not src.request_hash:
        return src.status, []
    states = [j.state for j in engine.ledger.jobs_for_request(src.request_hash)
              if j.image_index <= (src.image_count or 1)]
    return src.status, states


def _all_done(engine: Engine, sources: list[Path]) -> bool:
    ok = True
    for path in sources:
        status, states = _jobs_of(engine, path)
        if status != "active" or any(s is not JobState.DONE for s in states):
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


async def _daemon(engine: Engine, opts: WatchOptions) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    by_name = {r.name: r for r in opts.rules.rules}
    watcher = Watcher(_roots(opts.rules.rules),
                      on_warning=lambda message: log.warning("watcher", message=message))
    engine.resume()
    await watcher.start()
    log.info("watching", roots=[str(r.path) for r in opts.rules.rules])
    handlers: set[asyncio.Task[None]] = set()
    next_kick = time.monotonic() + KICK_INTERVAL
    try:
        while not stop.is_set():
            try:
                event = await asyncio.wait_for(watcher.get(), timeout=0.5)
            except TimeoutError:
                event = None
            if event is not None:
                task = asyncio.ensure_future(_dispatch(engine, by_name, event))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
            if time.monotonic() >= next_kick:
                next_kick = time.monotonic() + KICK_INTERVAL
                await _kick(engine, by_name)
    finally:
        log.info("stopping: finishing writes in progress; running tasks resume on the next start")
        for task in handlers:
            task.cancel()
        await engine.drain()
        await watcher.stop()
    return 0


async def _dispatch(engine: Engine, rules: dict[str, RuleConfig], event: FileEvent) -> None:
    rule = rules[event.root.name]
    try:
        if event.kind == "settled":
            await engine.handle_file(event.path, rule)
        elif event.kind == "deleted":
            engine.handle_deleted(event.path)
        elif event.kind == "conflict":
            engine.handle_conflict(event.path, rule)
        else:
            log.warning("watched folder " + event.kind.replace("_", " "), root=str(event.path))
    except Exception:
        log.exception("could not handle a file event", source=str(event.path), kind=event.kind)


async def _kick(engine: Engine, rules: dict[str, RuleConfig]) -> None:
    """Pick up what `promptdrop retry` asked for while the daemon runs."""
    engine.resume()
    for src in engine.ledger.sources_with_status("retry"):
        rule = rules.get(src.rule or "")
        if rule is not None:
            await engine.handle_file(Path(src.path), rule)
