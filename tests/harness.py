"""What the end-to-end suites share: the real daemon as a subprocess, waiting for what it does,
and the one canary API key the whole suite runs with.

Every output the harness captures (daemon logs are files under the test's tmp_path; the output
of other promptdrop commands is registered in CAPTURED) is scanned for the canary when the test
session ends (see conftest.py). A file that must hold the key (an --api-key-file) is written
with `key_file`, which registers exactly that file as allowed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from bench.procs import terminate
from promptdrop.outputs import note_path

CANARY = "sk-canary-q7Zx4Lm2Vt9Rb3Kp"
IMAGE_SUFFIXES = (".png", ".jpg", ".webp")
# Inherited settings that would point a daemon at the wrong state or make it crash on purpose.
_SCRUBBED = (
    "PROMPTDROP_STATE_DIR",
    "STATE_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "PROMPTDROP_CRASH_AT",
    "PROMPTDROP_CRASH_AFTER",
    "TOAPIS_API_KEY",
    "TOAPIS_BASE_URL",
)
T = TypeVar("T")

CAPTURED: list[tuple[str, str]] = []  # (what, text) of command output kept only in memory
KEY_FILES: set[Path] = set()  # files that hold the key on purpose (--api-key-file)


def _encoded_forms(secret: str) -> tuple[bytes, ...]:
    """The key as bytes, as its distinctive tail, URL-encoded, and base64-encoded at each of
    the three alignments it can have inside a longer encoded text."""
    raw = secret.encode()
    forms = {
        raw,
        secret.removeprefix("sk-canary-").encode(),
        urllib.parse.quote(secret, safe="").encode(),
    }
    for offset in range(3):
        tail = raw[offset:]
        whole = 4 * (len(tail) // 3)  # the last partial group depends on what follows
        forms.add(base64.b64encode(tail)[:whole])
        forms.add(base64.urlsafe_b64encode(tail)[:whole])
    return tuple(sorted(forms))


SECRET_FORMS = _encoded_forms(CANARY)


def leaked_in(data: bytes) -> bool:
    """Whether `data` holds the canary key in any form SECRET_FORMS knows."""
    return any(form in data for form in SECRET_FORMS)


@dataclass
class Scan:
    leaks: list[str]  # where the key was found
    files: int  # files read
    outputs: int  # captured outputs read


def scan_for_key(base: Path) -> Scan:
    """Read every regular file under `base` (links not followed) and every captured output,
    and list those that hold the canary key, except the registered key files."""
    found = [what for what, text in CAPTURED if leaked_in(text.encode(errors="replace"))]
    allowed = {p.resolve() for p in KEY_FILES}
    files = 0
    for folder, _dirs, names in os.walk(base):
        for name in names:
            path = Path(folder) / name
            try:
                if not stat.S_ISREG(path.lstat().st_mode) or path.resolve() in allowed:
                    continue
                files += 1
                if leaked_in(path.read_bytes()):
                    found.append(str(path))
            except OSError:
                continue  # gone meanwhile, or unreadable on purpose by a test
    return Scan(found, files, len(CAPTURED))


def key_file(path: Path, key: str = CANARY) -> Path:
    """Write the key to `path` for --api-key-file, and allow exactly this file to hold it."""
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(0o600)
    KEY_FILES.add(path)
    return path


def daemon_env(
    base_url: str, key: str | None = CANARY, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without promptdrop's own settings, plus the emulator's
    address, the key (None: no key at all) and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["TOAPIS_BASE_URL"] = base_url
    if key is not None:
        env["TOAPIS_API_KEY"] = key
    env.update(extra or {})
    return env


def rules_file(
    path: Path,
    folder: Path,
    *,
    settle: float,
    max_in_flight: int | None = None,
    account_group: str | None = None,
) -> Path:
    """Write a rules file with one rule "drop" for `folder`."""
    text = f'[api]\naccount_group = "{account_group}"\n' if account_group else ""
    text += f'[[rules]]\nname = "drop"\npath = {json.dumps(str(folder))}\nsettle = {settle}\n'
    if max_in_flight is not None:
        text += f"max_in_flight = {max_in_flight}\n"
    path.write_text(text, encoding="utf-8")
    return path


def write_prompt(path: Path, prompt: str, size: str | None = None) -> Path:
    """Write a prompt file with this prompt (and size); return its path."""
    text = f"prompt = {json.dumps(prompt)}\n"
    if size is not None:
        text += f"size = {json.dumps(size)}\n"
    path.write_text(text, encoding="utf-8")
    return path


def image_for(source: Path) -> Path | None:
    """The single image written for a prompt file, whatever its format."""
    stem = source.name.removesuffix(".prompt.toml")
    for ext in IMAGE_SUFFIXES:
        candidate = source.with_name(stem + ext)
        if candidate.exists():
            return candidate
    return None


def note_for(source: Path) -> Path:
    """Where the error note of a prompt file goes."""
    return note_path(source)


def decodes(path: Path) -> bool:
    """Whether the whole image decodes (a truncated file does not)."""
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError):
        return False
    return True


@dataclass
class Daemon:
    """A `promptdrop watch` subprocess whose stdout and stderr go to files."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def log(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines, parsed."""
        found = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                found.append(obj)
        return found

    def opened(self) -> bool:
        """It has opened (and recovered) its ledger."""
        return '"ledger opened"' in self.stderr.read_text(errors="replace")

    def watching(self) -> bool:
        """It has installed its signal handlers and watches its folders."""
        return '"watching"' in self.stderr.read_text(errors="replace")

    def wait_watching(self, timeout: float = 30.0) -> Daemon:
        wait_for(self.watching, "the daemon to start watching", timeout=timeout, daemon=self)
        return self

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`; return the exit code."""
        return terminate(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL (a no-op when it already exited)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def spawn(
    rules: Path,
    state: Path,
    env: dict[str, str],
    *,
    cwd: Path,
    name: str = "daemon",
    args: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
) -> Daemon:
    """Start `promptdrop watch --rules RULES --state-dir STATE` with JSON logs, its output in
    CWD/NAME.out and CWD/NAME.err. `prefix` goes before the command (a wrapper that execs it).
    It does not wait: see Daemon.wait_watching."""
    out, err = cwd / f"{name}.out", cwd / f"{name}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "promptdrop",
                "watch",
                "--rules",
                str(rules),
                "--state-dir",
                str(state),
                "--poll-interval",
                "0.1",
                "--log-format",
                "json",
                *args,
            ],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
    return Daemon(proc, out, err)


def cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 40.0
) -> subprocess.CompletedProcess[str]:
    """Run a promptdrop command to completion; its output is registered for the canary scan."""
    done = subprocess.run(
        [sys.executable, "-m", "promptdrop", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    CAPTURED.append((f"promptdrop {' '.join(args)}", done.stdout + done.stderr))
    return done


def wait_for(
    cond: Callable[[], T], what: str, timeout: float = 30.0, daemon: Daemon | None = None
) -> T:
    """Poll `cond` until it returns something truthy; fail after `timeout` seconds, or at once
    when `daemon` exited meanwhile (with its log in the message)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None:
            raise AssertionError(
                f"the daemon exited ({daemon.proc.returncode}) while waiting "
                f"for {what}:\n{daemon.log()[-8000:]}"
            )
        if time.monotonic() > deadline:
            extra = f"\ndaemon log:\n{daemon.log()[-8000:]}" if daemon is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(0.05)


def stop_all(daemons: Iterator[Daemon] | list[Daemon], *, kill: bool = False) -> None:
    """Teardown: SIGKILL (kill) or SIGTERM every daemon still running."""
    for daemon in daemons:
        if kill:
            daemon.kill()
        else:
            daemon.terminate()


@contextlib.contextmanager
def small_tmpfs(mnt: Path, size: str = "1m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `mnt` (we run as root here and in CI)."""
    mnt.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"cannot mount a tmpfs for a disk-full test: {proc.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem is full; return it (delete it to free
    the space again)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler
