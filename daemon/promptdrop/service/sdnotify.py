"""Telling systemd how the daemon is doing: the sd_notify datagram protocol, without libsystemd.

systemd passes a socket address in $NOTIFY_SOCKET (a path, or an abstract name written with a
leading "@"); each notification is one datagram of newline-separated VAR=value lines, such as
READY=1, STATUS=…, WATCHDOG=1, RELOADING=1, STOPPING=1. When $NOTIFY_SOCKET is unset (a terminal,
a test, another supervisor) every call here does nothing.

The watchdog: with WatchdogSec= set, systemd passes $WATCHDOG_USEC (and maybe $WATCHDOG_PID) and
restarts the service when no WATCHDOG=1 arrives within that time. The pings must come from the
loop that does the work, so that a stuck loop stops them; this module only says how often.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("promptdrop.sdnotify")


def socket_address(value: str) -> str | bytes | None:
    """The address to send to, from the text of $NOTIFY_SOCKET; None if unusable.

    "@name" is an abstract socket (Linux): its address starts with a NUL byte instead.
    Other forms (such as "vsock:…") are not supported and give None.
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between two WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when systemd
    expects none from this process (unset, invalid, zero, or $WATCHDOG_PID names another)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2_000_000


class Notifier:
    """Sends notifications to the service manager; every method is a no-op without one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_every = watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self._next_ping = 0.0

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram made of `lines` ("READY=1", "STATUS=…"); True if it was sent.

        A failure is logged once and otherwise ignored: the daemon's work never depends on it.
        The socket never blocks: when the manager stops reading and its queue is full, the
        message is dropped rather than the daemon's loop frozen.
        """
        if self.address is None or not lines:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager", error=exc.strerror or str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Start-up (or a reload) is complete."""
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, started_ns: int | None = None) -> None:
        """A reload begins (at `started_ns` on CLOCK_MONOTONIC, default now); MONOTONIC_USEC
        lets systemd 253 and later match it to its reload request."""
        ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if started_ns is None else started_ns
        usec = ns // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading the rules file")

    def stopping(self, status: str | None = None) -> None:
        """Shutdown begins."""
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        """A one-line status shown by `systemctl status`."""
        self.send(f"STATUS={text}")

    def watchdog(self, now: float | None = None) -> None:
        """Ping the watchdog if one is due; call this often from the working loop."""
        if self.watchdog_every is None or self.address is None:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_every
            self.send("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
