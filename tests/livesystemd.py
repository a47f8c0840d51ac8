"""A real systemd as PID 1 of a throwaway container, for tests/test_live_systemd.py.

The container: new mount, PID, UTS, IPC and cgroup namespaces (the network is the host's, so
the daemon inside reaches the emulator on 127.0.0.1); its root an overlay of the host's `/`
with an in-memory upper layer, so nothing it writes (users, units, the ledger) reaches the
host; fresh /proc, /run, /tmp and /dev, a read-only /sys and a cgroup2 mount rooted at a
cgroup of its own. It boots basic.target (well under a second) and is killed, with all its
processes, when the test ends. The host reaches its files through /proc/PID/root, and runs
commands inside with nsenter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")
CGROUP2_CANDIDATES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))

_BOOT = r"""
set -eu
T=$1
mount -t tmpfs -o mode=0755 promptdrop-live "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
R=$T/root
mount -t proc proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$R/dev"
for n in null zero full random urandom tty; do
  touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
mount -t mqueue mqueue "$R/dev/mqueue"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
shift
for keep in "$@"; do  # host folders the container needs as they are (the checkout, Python)
  mkdir -p "$R$keep"
  mount --rbind "$keep" "$R$keep"
done
mkdir -p "$R/.oldroot"
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
# As nspawn does: systemd makes / shared itself only outside a container, and without it the
# credentials it mounts for a service (LoadCredential=) never reach the service.
mount --make-rshared /
exec env -i container=promptdrop-live \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit=basic.target
"""

_ENTER = r"""
set -eu
echo $$ > "$1/cgroup.procs"
shift
boot=$1
shift
exec unshare --mount --pid --fork --uts --ipc --cgroup --propagation private \
  /bin/sh -c "$boot" boot "$@"
"""


def cannot_boot() -> str | None:
    """Why this machine cannot boot systemd in a container, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts and a cgroup of its own)"
    if not SYSTEMD.exists():
        return f"no systemd at {SYSTEMD} (apt-get install systemd)"
    for tool in ("unshare", "nsenter", "runuser"):
        if shutil.which(tool) is None:
            return f"no {tool} (util-linux)"
    if cgroup2_root() is None:
        return "no writable cgroup2 hierarchy (neither /sys/fs/cgroup/unified nor /sys/fs/cgroup)"
    if not Path("/proc/filesystems").read_text().count("overlay"):
        return "the kernel has no overlay file system"
    return None


def cgroup2_root() -> Path | None:
    """A mounted cgroup2 hierarchy we may make a cgroup in."""
    for path in CGROUP2_CANDIDATES:
        controls = (path / "cgroup.procs", path / "cgroup.subtree_control")
        if all(p.exists() for p in controls) and os.access(path, os.W_OK):
            return path
    return None


@dataclass
class Container:
    pid: int  # the host's pid of the container's PID 1 (systemd)
    proc: subprocess.Popen[bytes]
    cgroup: Path
    console: Path

    @property
    def root(self) -> Path:
        """The container's / as the host sees it."""
        return Path(f"/proc/{self.pid}/root")

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(
        self, *argv: str, user: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside (as `user`, with its user manager's runtime directory, if given)."""
        cmd = ["nsenter", "-t", str(self.pid), "-a"]
        if user is not None:
            uid = self.uid(user)
            cmd += ["runuser", "-u", user, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}"]
        done = subprocess.run(
            [*cmd, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def uid(self, user: str) -> int:
        for line in self.path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2])
        raise KeyError(user)

    def write(self, inside: str, text: str, *, mode: int = 0o644, owner: str | None = None) -> Path:
        """Write a file inside the container (parent folders made as needed)."""
        path = self.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        if owner is not None:
            uid = self.uid(owner)
            os.chown(path, uid, uid_group(self, owner))
        return path

    def wait_running(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"systemd did not finish booting ({state}):\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.console.read_text(errors="replace")[-4000:]


def uid_group(box: Container, user: str) -> int:
    for line in box.path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[3])
    raise KeyError(user)


def _pid1(unshare_pid: int, timeout: float = 10) -> int:
    """The container's PID 1: the child of `unshare --fork`, once it is systemd."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text()
            for child in children.split():
                if os.readlink(f"/proc/{child}/exe").endswith("/systemd"):
                    return int(child)
        time.sleep(0.05)
    raise AssertionError("systemd did not start as the container's PID 1")


def _remove_cgroup(path: Path) -> None:
    for folder, dirs, _files in os.walk(path, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(Path(folder) / d)
    with contextlib.suppress(OSError):
        os.rmdir(path)


@contextlib.contextmanager
def booted(workdir: Path, keep: Sequence[Path] = ()) -> Iterator[Container]:
    """A container with systemd booted to basic.target, the host folders `keep` bound in at
    the same place (they may lie under /tmp, which the container has anew); killed, with
    everything in it, after."""
    top = cgroup2_root()
    assert top is not None
    cgroup = top / f"promptdrop-live-{os.getpid()}-{time.monotonic_ns()}"
    cgroup.mkdir()
    mnt = workdir / "container"
    mnt.mkdir()
    console = workdir / "console.log"
    with console.open("wb") as out:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _ENTER, "enter", str(cgroup), _BOOT, str(mnt), *map(str, keep)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        box = Container(_pid1(proc.pid), proc, cgroup, console)
        box.wait_running()
        yield box
    finally:
        # SIGKILL to a PID namespace's init kills every process in it.
        with contextlib.suppress(ProcessLookupError, AssertionError):
            os.kill(_pid1(proc.pid, timeout=0.1), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while (cgroup / "cgroup.procs").exists() and time.monotonic() < deadline:
            _remove_cgroup(cgroup)
            if cgroup.exists():
                time.sleep(0.1)
