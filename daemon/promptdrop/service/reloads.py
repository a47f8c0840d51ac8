"""A reload that can be waited for: `promptdrop reload --wait` and the daemon's answer.

SIGHUP alone says nothing back, so `systemctl reload` (ExecReload=/bin/kill -HUP) returned
before the new rules were read. Here the asker notes the monotonic clock, signals the daemon
found by the state folder's lock, and waits for the daemon's acknowledgement: a small JSON
file in the state folder (`reload.json`, replaced atomically) that says when the reload began
on the same clock, and whether the new rules were applied or refused (and why). An answer whose
reload began after the signal was sent is the answer to this request; two requests close
together may share one reload, which read the rules file after both were sent.

This is the same rule as systemd's own Type=notify-reload (253 and later): RELOADING=1 with
MONOTONIC_USEC, then READY=1; but unlike READY=1, the file can also say "refused".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ACK_NAME = "reload.json"
LOCK_NAME = "daemon.lock"  # the one-daemon lock (service.lifecycle), holding its pid
DEFAULT_TIMEOUT = 90.0


class ReloadError(RuntimeError):
    """The reload did not happen, or was refused: a one-line message for the user."""


@dataclass(frozen=True)
class ReloadOutcome:
    """One reload as the daemon reports it."""

    started_ns: int  # CLOCK_MONOTONIC when the daemon began it, in nanoseconds
    applied: bool  # False: refused, the rules in use stay
    message: str  # one line: what is watched now, or why the new rules were refused
    pid: int  # the daemon's


def monotonic_ns() -> int:
    """The clock both sides use: CLOCK_MONOTONIC, shared by every process of the machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def write_ack(state_dir: Path, outcome: ReloadOutcome) -> None:
    """Publish `outcome` for whoever waits (replaced atomically: a reader never sees half)."""
    path = state_dir / ACK_NAME
    tmp = path.with_name(f".{ACK_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(asdict(outcome)).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_ack(state_dir: Path) -> ReloadOutcome | None:
    """The last reload's outcome, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((state_dir / ACK_NAME).read_bytes())
        return ReloadOutcome(
            started_ns=int(data["started_ns"]),
            applied=bool(data["applied"]),
            message=str(data["message"]),
            pid=int(data["pid"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding `state_dir`'s lock, or None when no daemon holds it."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)  # we got it: nobody holds it
        return None
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_reload(
    state_dir: Path,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    poll: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], int] = monotonic_ns,
) -> ReloadOutcome | None:
    """Signal the daemon of `state_dir` to reload; with `wait`, return its outcome once it has
    applied the new rules (None without `wait`). Raises ReloadError when no daemon runs, it
    stops or does not answer within `timeout` seconds, or it refused the new rules."""
    pid = daemon_pid(state_dir)
    if pid is None:
        raise ReloadError(f"no promptdrop daemon is running with the state folder {state_dir}")
    asked = clock()
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ReloadError(f"cannot signal the daemon (pid {pid}): {exc.strerror or exc}") from None
    if not wait:
        return None
    deadline = asked + int(timeout * 1e9)
    while True:
        outcome = read_ack(state_dir)
        if outcome is not None and outcome.pid == pid and outcome.started_ns >= asked:
            if not outcome.applied:
                raise ReloadError(
                    f"the new rules were refused; the daemon keeps the rules it had: "
                    f"{outcome.message}"
                )
            return outcome
        if not _alive(pid):
            raise ReloadError(f"the daemon (pid {pid}) stopped before it reloaded")
        if clock() >= deadline:
            raise ReloadError(f"the daemon (pid {pid}) did not answer within {timeout:g} s")
        sleep(poll)


def acknowledge(state_dir: Path, outcome: ReloadOutcome) -> str | None:
    """`write_ack`, or why it could not be written (the reload itself stands either way)."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / ACK_NAME).with_name(f".{ACK_NAME}.{os.getpid()}.tmp").unlink()
    try:
        write_ack(state_dir, outcome)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
