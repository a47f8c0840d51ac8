"""What every benchmark needs: the emulator in this process, the daemon as a subprocess, a tree of
prompt files already done, /proc readings, and a description of the machine."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from promptdrop import outputs
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.emulator import handlers as emu_handlers
from promptdrop.emulator.config import RateLimitConfig
from promptdrop.emulator.images import render
from promptdrop.ledger import JobState, Ledger
from promptdrop.spec import read_prompt_file
from promptdrop.watch import fstypes

from .procs import terminate

KEY = "sk-bench-0123456789"
REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark could not produce its figure (the daemon died, a wait timed out)."""


def wait_for(
    cond: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.02,
    daemon: Daemon | None = None,
) -> T:
    """Poll `cond` until it returns something truthy; BenchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None:
            raise BenchError(f"the daemon exited while waiting for {what}:\n{daemon.tail()}")
        if time.monotonic() > deadline:
            extra = f"\n{daemon.tail()}" if daemon is not None else ""
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


# --- the emulator ---------------------------------------------------------------------------


_PRERENDERED: dict[tuple[str, str], bytes] = {}


def _one_image_per_size(prompt: str, size: str, fmt: str) -> bytes:
    # A real image of the requested size and format, rendered once per (size, format): the
    # emulator's per-prompt rendering (~13 ms of PNG encoding each) would otherwise be what the
    # throughput benchmarks measure, for the daemon and the raw loop alike.
    key = (size, fmt)
    if key not in _PRERENDERED:
        _PRERENDERED[key] = render("promptdrop benchmark", size, fmt)
    return _PRERENDERED[key]


@contextlib.contextmanager
def emulator(
    *, latency: float, submit_per_s: float | None = None, fast_images: bool = True
) -> Iterator[Emulator]:
    """A started emulator in this process; `submit_per_s` None turns rate limits off.

    With a submit rate, the submit bucket allows that many per second and ten times that per
    10 s, and the query bucket ten times as many, so polls are never what is limited."""
    limits = None
    if submit_per_s is not None:
        limits = RateLimitConfig(
            submit_per_s=submit_per_s,
            submit_burst_10s=int(submit_per_s * 10),
            query_per_s=submit_per_s * 10,
            query_burst_10s=int(submit_per_s * 100),
        )
    saved = getattr(emu_handlers, "render")  # noqa: B009 (not re-exported: mypy)
    if fast_images:
        setattr(emu_handlers, "render", _one_image_per_size)  # noqa: B010
    emu = Emulator(EmulatorConfig(latency=latency, jitter=0.0, rate_limits=limits)).start()
    try:
        yield emu
    finally:
        emu.stop()
        setattr(emu_handlers, "render", saved)  # noqa: B010


# --- the daemon -----------------------------------------------------------------------------


def write_rules(
    path: Path,
    root: Path,
    *,
    settle: float = 1.0,
    max_in_flight: int = 32,
    group: str = "svip",
    poll: str = "auto",
    scan_interval: float = 5.0,
    poll_first: float | None = None,
    poll_interval: float | None = None,
    submit_rate: float | None = None,
) -> Path:
    """A rules file with one rule named "bench" watching `root`.

    `poll` and `scan_interval` are the folder's (inotify or scanning); `poll_first`,
    `poll_interval` and `submit_rate` go in [api] (task polling and the client's submit rate),
    left out when None so the daemon's defaults apply."""
    api = [f'account_group = "{group}"']
    for key, value in (
        ("poll_first", poll_first),
        ("poll_interval", poll_interval),
        ("submit_rate", submit_rate),
    ):
        if value is not None:
            api.append(f"{key} = {float(value)!r}")
    path.write_text(
        "[api]\n" + "\n".join(api) + "\n"
        "[[rules]]\n"
        'name = "bench"\n'
        f"path = {json.dumps(str(root))}\n"
        f"settle = {settle}\n"
        f"max_in_flight = {max_in_flight}\n"
        f'poll = "{poll}"\n'
        f"poll_interval = {scan_interval}\n",
        encoding="utf-8",
    )
    return path


class NotifyListener:
    """A NOTIFY_SOCKET for the daemon, read all the time as systemd does (a datagram socket
    that nobody reads fills after 10 messages); records when READY=1 first arrives."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"notify-{os.getpid()}-{time.monotonic_ns()}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.ready_at: float | None = None
        self.messages = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-notify", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages += 1
            if self.ready_at is None and b"READY=1" in data.split(b"\n"):
                self.ready_at = time.monotonic()

    def poll(self) -> float | None:
        """The monotonic time READY=1 was first seen, or None."""
        return self.ready_at

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=1)
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


@dataclass
class Daemon:
    """A `promptdrop watch` subprocess and what can be read about it."""

    proc: subprocess.Popen[bytes]
    stderr: Path
    started: float
    notify: NotifyListener | None = None
    _seen: int = 0
    _events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (read incrementally)."""
        with self.stderr.open("rb") as f:
            f.seek(self._seen)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._seen += end
        for line in chunk[:end].splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    self._events.append(obj)
        return self._events

    def logged(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.events())

    def tail(self, n: int = 4000) -> str:
        return self.stderr.read_text(errors="replace")[-n:]

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the daemon process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        """Resident memory now, in MiB."""
        pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        return pages * PAGE / 2**20

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it lingers; the exit code."""
        code = terminate(self.proc, timeout)
        if self.notify is not None:
            self.notify.close()
        return code


def daemon_env(emu: Emulator) -> dict[str, str]:
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
    env["TOAPIS_BASE_URL"] = emu.base_url
    env["TOAPIS_API_KEY"] = KEY
    return env


def start_daemon(
    emu: Emulator, rules: Path, state: Path, work: Path, *, once: bool = False, tag: str = "daemon"
) -> Daemon:
    """Start `python -m promptdrop watch --rules RULES` with JSON logs and a NOTIFY_SOCKET.

    Task polling and the submit rate come from the rules file's [api] table (write_rules)."""
    err = work / f"{tag}-{time.monotonic_ns()}.log"
    notify = NotifyListener(work)
    env = daemon_env(emu)
    env["NOTIFY_SOCKET"] = str(notify.path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    argv = [
        sys.executable,
        "-m",
        "promptdrop",
        "watch",
        "--rules",
        str(rules),
        "--state-dir",
        str(state),
        "--log-format",
        "json",
    ]
    if once:
        argv.append("--once")
    with err.open("wb") as fe:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=fe, stdin=subprocess.DEVNULL, env=env, cwd=work
        )
    return Daemon(proc, err, started, notify)


# --- a tree of prompt files that are already done ---------------------------------------------


def prompt_text(i: int, tag: str = "") -> str:
    return f'prompt = "benchmark image {tag}{i}: a lighthouse at dusk, watercolour"\n'


def small_png() -> bytes:
    """A 64x64 PNG: the images of the done tree, and the shared reference."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 140, 200)).save(buf, "PNG")
    return buf.getvalue()


def build_done_tree(root: Path, state: Path, files: int, folders: int) -> float:
    """Write `files` prompt files in `folders` folders under `root`, each with its image, and a
    ledger in `state` that records each as done, as the daemon would have; the seconds it took.

    The ledger is written through the daemon's own Ledger and spec code (same request hashes,
    same transitions, same output records); only fsync is off while building it, which changes
    nothing the daemon reads later. The benchmarks check that the daemon then submits nothing.
    """
    started = time.monotonic()
    png = small_png()
    ledger = Ledger.open(state)
    ledger.db.execute("PRAGMA synchronous=OFF")
    try:
        per_folder = -(-files // folders)
        for i in range(files):
            folder = root / f"folder-{i // per_folder:04d}"
            if i % per_folder == 0:
                folder.mkdir(parents=True, exist_ok=True)
            source = folder / f"image-{i:05d}.prompt.toml"
            data = prompt_text(i).encode()
            source.write_bytes(data)
            request = read_prompt_file(source, root, None)
            h = request.request_hash
            ledger.put_source(
                source,
                rule="bench",
                status="active",
                content_sha256=hashlib.sha256(data).hexdigest(),
                request_hash=h,
                image_count=request.count,
            )
            job = ledger.ensure_job(h, 1, request.canonical(), "bench")
            now = time.time()
            task = f"task_img_bench{i:08d}"
            S = JobState
            job = ledger.transition(
                job.id,
                S.PENDING,
                S.SUBMITTING,
                detail="submitting",
                count_attempt=True,
                intent_at=now,
            )
            job = ledger.transition(
                job.id,
                S.SUBMITTING,
                S.RUNNING,
                detail=f"task {task}",
                task_id=task,
                submitted_at=now,
            )
            job = ledger.transition(
                job.id,
                S.RUNNING,
                S.DOWNLOADING,
                detail="completed",
                result_url=f"http://127.0.0.1:9/generated/{task}.jpg",
                expires_at=now + 86400,
            )
            image = outputs.with_provenance(
                png,
                "png",
                {
                    "promptdrop:request": h,
                    "promptdrop:task_id": task,
                    "promptdrop:source": source.name,
                    "promptdrop:index": "1",
                },
            )
            sha = hashlib.sha256(image).hexdigest()
            job = ledger.transition(
                job.id,
                S.DOWNLOADING,
                S.DONE,
                detail="image written",
                image_sha256=sha,
                image_format="png",
                finished_at=now,
            )
            out = outputs.output_path(source, 1, 1, "png")
            out.write_bytes(image)
            ledger.record_output(out, job=job, source_path=source, sha256=sha, fmt="png")
    finally:
        ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ledger.close()
    return time.monotonic() - started


# --- the machine ----------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(tmp: Path | None = None) -> dict[str, str]:
    """What the figures were measured on."""
    folder = tmp or Path(tempfile.gettempdir())
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": f"{platform.system()} {platform.release()}",
        "tmp filesystem": f"{fstypes.filesystem_type(folder) or 'unknown'} ({folder})",
        "load average at start": load,
    }
