"""systemd notifications from the real `promptdrop watch`: a real AF_UNIX datagram socket plays
systemd's notification socket ($NOTIFY_SOCKET), the daemon runs as a subprocess against the
emulator, and the ledger file is read directly to see what the daemon knew at each message."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import CANARY, spawn
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.ledger import LEDGER_NAME
from promptdrop.service.loop import IDLE_WAIT, idle_wait, pinging, status_text
from promptdrop.service.sdnotify import Notifier, socket_address, watchdog_interval

KEY = CANARY  # the suite-wide canary: the session-end scan looks for it
STOP_TIMEOUT = 15.0  # TimeoutStopSec= of the shipped units
STATUS = re.compile(r"Watching (\d+) folders?; (\d+) tasks? running; (\d+) images? done today")


@dataclass
class Listener:
    """systemd's side of the notification socket: records every datagram with its arrival time.

    `on_message` runs in the receiving thread before the message is recorded, so a test can
    freeze the daemon (SIGSTOP) the moment a message arrives."""

    sock: socket.socket
    address: str
    messages: list[tuple[float, str]] = field(default_factory=list)
    on_message: Callable[[str], None] | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Listener:
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode()
            if self.on_message is not None:
                self.on_message(text)
            with self._lock:
                self.messages.append((time.monotonic(), text))

    def all(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def with_line(self, line: str, after: float = 0.0) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.all() if t >= after and line in m.split("\n")]

    def close(self) -> None:
        self.sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)


@contextlib.contextmanager
def listening(tmp_path: Path, *, abstract: bool = False) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"promptdrop-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        path = tmp_path / "notify.sock"
        if len(str(path)) > 100:  # sun_path holds 108 bytes
            path = Path(tempfile.mkdtemp(prefix="pdn-")) / "n.sock"
        sock.bind(str(path))
        address = str(path)
    listener = Listener(sock, address).start()
    try:
        yield listener
    finally:
        listener.close()


@dataclass
class Rig:
    tmp: Path
    emu: Emulator
    folder: Path
    state: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def rules(self, *folders: Path, settle: float = 0.2) -> Path:
        path = self.tmp / "rules.toml"
        path.write_text(
            '[api]\naccount_group = "svip"\n'
            + "".join(
                f'[[rules]]\nname = "r{i}"\npath = {json.dumps(str(f))}\nsettle = {settle}\n'
                for i, f in enumerate(folders or (self.folder,))
            ),
            encoding="utf-8",
        )
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "PROMPTDROP_STATE_DIR",
                "STATE_DIRECTORY",
                "CREDENTIALS_DIRECTORY",
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
            )
        }
        env.update(TOAPIS_BASE_URL=self.emu.base_url, TOAPIS_API_KEY=KEY, **extra)
        return env

    def start(
        self,
        listener: Listener | None,
        *,
        watchdog_usec: int | None = None,
        own_pid: bool = False,
        **extra: str,
    ) -> subprocess.Popen[bytes]:
        env = self.env(**extra)
        if listener is not None:
            env["NOTIFY_SOCKET"] = listener.address
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        # As systemd does: WATCHDOG_PID is the daemon's own pid. The shell's pid is it, since
        # exec keeps the pid.
        prefix = ("sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh") if own_pid else ()
        proc = spawn(
            self.tmp / "rules.toml",
            self.state,
            env,
            cwd=self.tmp,
            name=f"daemon{len(self.procs)}",
            prefix=prefix,
        ).proc
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("daemon*.err")))

    def drop(self, name: str, prompt: str, folder: Path | None = None) -> Path:
        path = (folder or self.folder) / name
        path.write_text(f"prompt = {json.dumps(prompt)}\n", encoding="utf-8")
        return path

    def ledger(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.state / LEDGER_NAME}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()


def make_rig(tmp_path: Path, latency: float) -> Iterator[Rig]:
    with Emulator(
        EmulatorConfig(api_key=KEY, latency=latency, jitter=0.0, rate_limits=None)
    ) as emu:
        folder = tmp_path / "drop"
        folder.mkdir()
        rig = Rig(tmp_path, emu, folder, tmp_path / "state")
        rig.rules()
        try:
            yield rig
        finally:
            rig.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path, latency=0.2)


@pytest.fixture
def slow_rig(tmp_path: Path) -> Iterator[Rig]:
    """Tasks take 3 s, so one is still running when the test reloads the daemon."""
    yield from make_rig(tmp_path, latency=3.0)


def wait_for(cond: Callable[[], Any], what: str, rig: Rig, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if any(p.poll() is not None for p in rig.procs[-1:]):
            raise AssertionError(f"the daemon exited while waiting for {what}:\n{rig.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{rig.log()}")
        time.sleep(0.02)


def stop_and_time(proc: subprocess.Popen[bytes]) -> float:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the daemon did not stop within TimeoutStopSec") from None
    return time.monotonic() - began


# ------------------------------------------------------------------------------ the protocol


def test_without_a_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


def test_an_abstract_socket_name_gets_a_leading_nul_byte() -> None:
    assert socket_address("@promptdrop/x") == b"\0promptdrop/x"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("vsock:2:1234") is None


def test_a_manager_that_stops_reading_never_blocks_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))  # bound, never read: its queue fills up
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        sent = [notifier.send(f"STATUS=message {i}") for i in range(500)]
        elapsed = time.monotonic() - started
        notifier.close()
        assert sent[0] is True
        assert sent[-1] is False  # dropped, not waited for
        assert elapsed < 5.0  # a blocking send would hang here forever
        listener.setblocking(False)
        assert listener.recv(4096) == b"STATUS=message 0"


def test_the_watchdog_is_pinged_at_half_its_period_and_only_by_its_own_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, pid=7) == 1.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


@pytest.mark.parametrize(
    ("roots", "counts", "done", "pause", "expected"),
    [
        (1, {}, 0, None, "Watching 1 folder; 0 tasks running; 0 images done today"),
        (
            2,
            {"submitting": 1, "running": 2, "downloading": 1, "pending": 9, "done": 4},
            1,
            None,
            "Watching 2 folders; 4 tasks running; 1 image done today",
        ),
        (
            3,
            {"running": 1, "waiting": 5},
            2,
            None,
            "Watching 3 folders; 1 task running; 2 images done today; "
            "5 waiting for the daily budget",
        ),
        (
            1,
            {},
            0,
            "key rejected: HTTP 401 from the API",
            "Watching 1 folder; 0 tasks running; 0 images done today; "
            "submissions paused: key rejected",
        ),
    ],
)
def test_the_status_line_counts_running_tasks_todays_images_the_budget_and_a_pause(
    roots: int, counts: dict[str, int], done: int, pause: str | None, expected: str
) -> None:
    """Pending and done jobs are not "running"; a pause shows its reason up to the colon."""
    assert status_text(roots, counts, done, pause) == expected


@pytest.mark.parametrize(
    ("watchdog_every", "expected"),
    [(None, IDLE_WAIT), (30.0, IDLE_WAIT), (0.6, 0.3), (0.001, 0.01)],
)
def test_the_loop_waits_for_events_no_longer_than_half_a_watchdog_interval(
    watchdog_every: float | None, expected: float
) -> None:
    assert idle_wait(watchdog_every) == pytest.approx(expected)


def test_a_slow_blocking_read_off_the_loop_does_not_stop_the_watchdog_pings(
    tmp_path: Path,
) -> None:
    """While a rules file on a hung share is read in a thread, the loop keeps pinging."""
    path = tmp_path / "notify"
    share = threading.Event()  # the "share" answers only when the test says so
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000"})

        def slow_read() -> bool:
            return share.wait(5)  # False: no pings came while this thread was blocked

        async def reload_while_pinged() -> bool:
            return await pinging(notifier, 0.005, slow_read)

        def answer_after_three_pings() -> None:
            pings = 0
            with contextlib.suppress(TimeoutError):
                while pings < 3:
                    if listener.recv(64) == b"WATCHDOG=1":
                        pings += 1
                share.set()

        answerer = threading.Thread(target=answer_after_three_pings)
        answerer.start()
        try:
            assert asyncio.run(reload_while_pinged()) is True
        finally:
            share.set()
            answerer.join(10)
            notifier.close()
        assert not answerer.is_alive()


# ------------------------------------------------------------------------------ the daemon


def test_ready_is_sent_only_after_recovery_and_the_first_scan_reached_the_ledger(
    rig: Rig, tmp_path: Path
) -> None:
    # An earlier run dies right after committing a submission: recovery must settle that job
    # (as ambiguous) before READY.
    crashed = rig.drop("crashed.prompt.toml", "a crash before the answer")
    doomed = rig.start(None, PROMPTDROP_CRASH_AT="after_intent")
    doomed.wait(20)
    assert doomed.returncode == -signal.SIGKILL, rig.log()
    present = [rig.drop(f"p{i}.prompt.toml", f"present before the start {i}") for i in range(3)]
    # Files this fresh wait a whole settle time before the watcher hands them over: a READY
    # sent before the first scan is done would come well before the ledger knows them.
    rig.rules(settle=1.5)
    seen: dict[str, Any] = {}

    with listening(tmp_path) as listener:
        proc: subprocess.Popen[bytes] | None = None

        def freeze_on_ready(message: str) -> None:
            # Stop the daemon the instant READY arrives and look at what it had done by then.
            if "READY=1" in message.split("\n") and "sources" not in seen and proc is not None:
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    seen["sources"] = dict(rig.ledger("SELECT path, status FROM sources"))
                    seen["jobs"] = rig.ledger("SELECT state FROM jobs")
                finally:
                    os.kill(proc.pid, signal.SIGCONT)

        listener.on_message = freeze_on_ready
        proc = rig.start(listener)
        wait_for(lambda: listener.with_line("READY=1"), "READY=1", rig)
        assert stop_and_time(proc) < STOP_TIMEOUT

    assert "sources" in seen
    assert {str(p) for p in present} | {str(crashed)} <= set(seen["sources"]), rig.log()
    assert all(seen["sources"][str(p)] == "active" for p in present)
    states = sorted(s for (s,) in seen["jobs"])
    # The crashed submission was settled by recovery; the others may already be on the wire.
    assert states.count("ambiguous") == 1
    assert len(states) == 4  # one job per prompt file: the scan reached the engine
    ready = listener.with_line("READY=1")[0][1]
    match = STATUS.search(ready)
    assert match is not None, ready
    assert match.group(1) == "1"
    # Before READY, the status line says what start-up is doing.
    first_status = next(m for _, m in listener.all() if m.startswith("STATUS="))
    assert first_status.startswith("STATUS=Starting")


def test_watchdog_pings_come_every_half_period_and_sigterm_is_announced(
    rig: Rig, tmp_path: Path
) -> None:
    with listening(tmp_path) as listener:
        proc = rig.start(listener, watchdog_usec=1_000_000, own_pid=True)
        ready_at = wait_for(lambda: listener.with_line("READY=1"), "READY=1", rig)[0][0]
        source = rig.drop("one.prompt.toml", "a single image")
        wait_for(
            lambda: source.with_name("one.png").exists() or source.with_name("one.jpg").exists(),
            "the image",
            rig,
        )
        # The periodic status line follows the work: one image done today.
        wait_for(
            lambda: any(
                (m := STATUS.search(text)) and m.group(3) == "1" for _, text in listener.all()
            ),
            "a status with 1 image done",
            rig,
            timeout=10,
        )
        pings = [t for t, _ in listener.with_line("WATCHDOG=1", after=ready_at)]
        assert stop_and_time(proc) < STOP_TIMEOUT
    assert len(pings) >= 4
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # Half of WATCHDOG_USEC = 0.5 s; never as late as the full second that would trip systemd.
    assert 0.35 <= sorted(gaps)[len(gaps) // 2] <= 0.8, gaps
    assert max(gaps) < 1.0, gaps
    stopping = listener.with_line("STOPPING=1")
    assert stopping and stopping[0][0] > pings[-1] - 1.0
    assert proc.returncode == 0


def test_a_watchdog_meant_for_another_process_gets_no_pings(rig: Rig, tmp_path: Path) -> None:
    with listening(tmp_path) as listener:
        proc = rig.start(listener, watchdog_usec=1_000_000, WATCHDOG_PID="1")
        wait_for(lambda: listener.with_line("READY=1"), "READY=1", rig)
        time.sleep(1.2)
        assert stop_and_time(proc) < STOP_TIMEOUT
    assert not listener.with_line("WATCHDOG=1")


def test_sighup_reloads_the_rules_without_dropping_a_running_task(
    slow_rig: Rig, tmp_path: Path
) -> None:
    rig = slow_rig
    second = tmp_path / "second"
    second.mkdir()
    with listening(tmp_path, abstract=True) as listener:
        proc = rig.start(listener)
        wait_for(lambda: listener.with_line("READY=1"), "READY=1", rig)
        source = rig.drop("slow.prompt.toml", "a slow image")
        wait_for(
            lambda: rig.ledger("SELECT state FROM jobs") == [("running",)], "the task to run", rig
        )
        rig.rules(rig.folder, second)  # a second watched folder
        hup_at = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading = wait_for(
            lambda: listener.with_line("RELOADING=1", after=hup_at), "RELOADING=1", rig
        )
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading[0][1].split("\n"))
        again = wait_for(
            lambda: listener.with_line("READY=1", after=reloading[0][0]),
            "READY=1 after the reload",
            rig,
        )
        status = STATUS.search(again[0][1])
        assert status is not None and status.group(1) == "2", again
        # The task that was running when the rules changed still ends in an image, paid once.
        wait_for(
            lambda: rig.ledger("SELECT state FROM jobs") == [("done",)],
            "the running task to finish",
            rig,
        )
        assert source.with_name("slow.png").exists() or source.with_name("slow.jpg").exists()
        # The new folder is watched.
        rig.drop("new.prompt.toml", "from the new folder", folder=second)
        wait_for(
            lambda: len(rig.ledger("SELECT state FROM jobs")) == 2,
            "the new folder's file to be taken up",
            rig,
        )
        assert stop_and_time(proc) < STOP_TIMEOUT
    prompts = [s["prompt"] for s in rig.emu.stats()["submissions"]]
    assert prompts.count("a slow image") == 1


def test_an_invalid_rules_file_on_sighup_keeps_the_old_rules_and_still_reports_ready(
    rig: Rig, tmp_path: Path
) -> None:
    with listening(tmp_path) as listener:
        proc = rig.start(listener)
        wait_for(lambda: listener.with_line("READY=1"), "READY=1", rig)
        (tmp_path / "rules.toml").write_text("[[rules]]\nname = 'r0'\npaht = 'x'\n")
        hup_at = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading = wait_for(
            lambda: listener.with_line("RELOADING=1", after=hup_at), "RELOADING=1", rig
        )
        wait_for(
            lambda: listener.with_line("READY=1", after=reloading[0][0]),
            "READY=1 after the refused reload",
            rig,
        )
        # Still watching the old folder.
        rig.drop("after.prompt.toml", "after a bad reload")
        wait_for(lambda: rig.ledger("SELECT state FROM jobs"), "the file to be taken up", rig)
        assert stop_and_time(proc) < STOP_TIMEOUT
    assert "the rules file has errors; keeping the rules in use" in rig.log()
    assert "paht" in rig.log()


def test_a_stuck_work_loop_stops_the_watchdog_pings(rig: Rig, tmp_path: Path) -> None:
    # PROMPTDROP_TEST_STALL_AFTER blocks the daemon's working loop, as a hang would.
    with listening(tmp_path) as listener:
        rig.start(listener, watchdog_usec=600_000, own_pid=True, PROMPTDROP_TEST_STALL_AFTER="0.8")
        ready_at = wait_for(lambda: listener.with_line("READY=1"), "READY=1", rig)[0][0]
        time.sleep(2.5)
        pings = [t for t, _ in listener.with_line("WATCHDOG=1", after=ready_at)]
        proc = rig.procs[-1]
        assert proc.poll() is None  # alive but stuck: killing it is systemd's job
    assert pings, "no pings before the stall"
    assert pings[-1] - ready_at < 1.5
    assert time.monotonic() - pings[-1] > 1.0  # silent for longer than WATCHDOG_USEC
